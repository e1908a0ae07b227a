"""Configuration inference: the published torchvision and timm layouts, names and shapes only (meta device)."""

import pytest
import torch
import torchvision.models.vgg as tvvgg

from vggnet import build
from vggnet.weights import infer_config, timm_state
from weights_files import TV_NAMES, to_timm


@pytest.mark.parametrize("name", [n + bn for n in TV_NAMES for bn in ("", "_bn")])
def test_published_torchvision_layouts_infer_their_configuration(name):
    # The real torchvision constructors at full size, on the meta device: names and shapes only.
    with torch.device("meta"):
        state = getattr(tvvgg, name)(weights=None).state_dict()
    cfg, top = infer_config(state)
    assert (cfg.arch, cfg.batch_norm, cfg.width, cfg.num_classes) == (
        TV_NAMES[name[:5]],
        name.endswith("_bn"),
        1,
        1000,
    )
    assert (cfg.head, cfg.input_size, top) == ("fc", 224, True)


def test_published_timm_layout_infers_the_conv_head():
    with torch.device("meta"):
        state = timm_state(to_timm(build("vgg19")))
    cfg, top = infer_config(state)
    assert (cfg.arch, cfg.head, cfg.input_size, cfg.num_classes, cfg.width, top) == ("E", "conv", 224, 1000, 1, True)
