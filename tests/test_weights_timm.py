"""timm checkpoints: FC6/FC7 as convolutions import as the dense net, and give timm's own outputs."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import randomize_bn
from vggnet import build
from vggnet.weights import detect_source, import_weights
from weights_files import W, logits, to_timm


def timm_forward(state: dict[str, torch.Tensor], features: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's VGG forward: features, ConvMlp (7x7 conv, ReLU, 1x1 conv, ReLU), global average pool, head.fc."""
    f = features(x)
    f = F.relu(F.conv2d(f, state["pre_logits.fc1.weight"], state["pre_logits.fc1.bias"]))
    f = F.relu(F.conv2d(f, state["pre_logits.fc2.weight"], state["pre_logits.fc2.bias"]))
    return F.linear(f.mean(dim=(2, 3)), state["head.fc.weight"], state["head.fc.bias"])


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_checkpoint_imports_as_the_dense_net(tmp_path, suffix):
    from safetensors.torch import save_file

    source = randomize_bn(build("D_bn", width=W, num_classes=7)).eval()
    state = to_timm(source)
    path = tmp_path / f"timm_vgg16_bn{suffix}"
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    assert detect_source(path) == "timm"
    model, meta = import_weights(path)
    assert meta.source == "timm" and model.cfg.head == "conv" and model.cfg.num_classes == 7
    x = torch.rand(1, 3, 256, 288)  # larger than 224: a 2x3 map of FC8 scores, averaged
    with torch.no_grad():
        torch.testing.assert_close(model(x), timm_forward(state, source.features, x), rtol=1e-5, atol=1e-6)
    fc_model, _ = import_weights(path, head="fc")
    assert fc_model.cfg.head == "fc" and torch.equal(logits(fc_model), logits(source))
