"""timm's VGG layout: torchvision's features, FC6/FC7 held as 7x7 / 1x1 convs, FC8 as `head.fc`.

timm builds the classifier as `pre_logits` (ConvMlp: fc1 a 7x7 conv, fc2 a 1x1 conv) and
`head.fc`; renamed to torchvision's keys, those tensors give a model with a conv head.
"""

from __future__ import annotations

import torch


def timm_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's VGG keys -> torchvision's: pre_logits.fc1/fc2 (7x7 / 1x1 convs) and head.fc are FC6-8.

    FC6/FC7 keep their conv shapes here; `infer_config` sees a conv head.
    """
    rename = {"pre_logits.fc1.": "classifier.0.", "pre_logits.fc2.": "classifier.3.", "head.fc.": "classifier.6."}
    out = {}
    for key, value in state.items():
        for old, new in rename.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                if new == "classifier.6." and key.endswith("weight") and value.dim() == 2:
                    value = value[:, :, None, None]  # (classes, 4096) -> a 1x1 conv, like fc1/fc2
                break
        out[key] = value
    return out
