"""The one VGG module: features from Table 1, three heads, fc <-> conv conversion, init.

Module names follow torchvision (`features.N`, `avgpool`, `classifier.0/3/6`), so
its checkpoints load with strict=True. The three heads:

- fc:   AdaptiveAvgPool2d(g) -> Linear(512*g*g, 4096) -> ReLU -> Dropout -> Linear -> ... (g = 7 at 224)
- conv: FC6 as a g x g conv, FC7/FC8 as 1x1 convs: the fully convolutional net of section 3.2
- gap:  global average pooling + one Linear: no FC6/FC7, ~90% fewer parameters for VGG16
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .configs import CONFIGS, HEADS, INITS, LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE, ModelConfig, kernel_size, resolve


def scaled(channels: int, width: float) -> int:
    """Channel count after the width multiplier (at least 1)."""
    return max(1, int(round(channels * width)))


def make_features(letter: str, batch_norm: bool, width: float, in_channels: int) -> tuple[nn.Sequential, list[str]]:
    """Build the conv stack of one Table 1 column and the paper's name of each module."""
    layers: list[nn.Module] = []
    names: list[str] = []
    block, index, channels = 1, 0, in_channels
    for item in CONFIGS[letter]:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            names.append(f"pool{block}")
            block, index = block + 1, 0
        elif item == "LRN":
            layers.append(nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K))
            names.append(f"norm{block}")
        else:
            kernel = kernel_size(item)
            out = scaled(item[1] if isinstance(item, tuple) else item, width)
            index += 1
            layers.append(nn.Conv2d(channels, out, kernel_size=kernel, padding=kernel // 2))
            names.append(f"conv{block}_{index}")
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
                names.append(f"bn{block}_{index}")
            layers.append(nn.ReLU(inplace=True))
            names.append(f"relu{block}_{index}")
            channels = out
    return nn.Sequential(*layers), names


class VGG(nn.Module):
    """VGG network of any Table 1 configuration, with an fc, conv (dense) or gap head."""

    def __init__(self, cfg: ModelConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = dataclasses.replace(cfg or ModelConfig(), **overrides)
        letter, bn_from_name = resolve(cfg.arch)
        cfg = dataclasses.replace(cfg, arch=letter, batch_norm=cfg.batch_norm or bn_from_name)
        if cfg.head not in HEADS:
            raise ValueError(f"unknown head {cfg.head!r}; accepted: {', '.join(HEADS)}")
        if cfg.init not in INITS:
            raise ValueError(f"unknown init {cfg.init!r}; accepted: {', '.join(INITS)}")
        if cfg.input_size < 32:
            raise ValueError(f"input_size {cfg.input_size} is below 32, the smallest a VGG accepts (5 pools)")
        if cfg.num_classes < 1 or cfg.in_channels < 1 or cfg.width <= 0:
            raise ValueError("num_classes, in_channels and width must be positive")
        self.cfg = cfg
        self.features, self.feature_names = make_features(letter, cfg.batch_norm, cfg.width, cfg.in_channels)
        self.grid = cfg.input_size // 32  # FC6's spatial extent: 7 at 224 (section 3.2)
        self.feature_channels = scaled(512, cfg.width)
        hidden = scaled(4096, cfg.width)
        c, g = self.feature_channels, self.grid
        if cfg.head == "fc":
            self.avgpool = nn.AdaptiveAvgPool2d((g, g))
            self.classifier = nn.Sequential(
                nn.Linear(c * g * g, hidden), nn.ReLU(True), nn.Dropout(cfg.dropout),
                nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(cfg.dropout),
                nn.Linear(hidden, cfg.num_classes),
            )  # fmt: skip
        elif cfg.head == "conv":
            self.classifier = nn.Sequential(
                nn.Conv2d(c, hidden, g), nn.ReLU(True), nn.Dropout(cfg.dropout),
                nn.Conv2d(hidden, hidden, 1), nn.ReLU(True), nn.Dropout(cfg.dropout),
                nn.Conv2d(hidden, cfg.num_classes, 1),
            )  # fmt: skip
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Linear(c, cfg.num_classes))
        self.reset_parameters()

    # -- names -----------------------------------------------------------------
    @property
    def classifier_names(self) -> list[str]:
        """The paper's names of the classifier modules, index for index."""
        if self.cfg.head == "gap":
            return ["fc"]
        return ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]

    @property
    def min_input(self) -> int:
        """Smallest input side the head accepts: fc/gap pool adaptively, conv needs 32*grid."""
        return 32 * self.grid if self.cfg.head == "conv" else 32

    # -- init (section 3.1) --------------------------------------------------------
    def reset_parameters(self) -> None:
        """Initialise every weight with the configured scheme; biases to zero."""
        if any(p.is_meta for p in self.parameters()):
            return  # shapes only: nothing to fill, and meta-device init imports torch._dynamo (seconds)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if self.cfg.init == "paper":
                    nn.init.normal_(m.weight, 0.0, self.cfg.init_std)
                elif self.cfg.init == "glorot":
                    nn.init.xavier_uniform_(m.weight)
                elif isinstance(m, nn.Conv2d) and m not in self.classifier:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                else:  # torchvision: N(0, 0.01) for the classifier
                    nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # -- forward -----------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise a one-line error for a wrong rank, channel count or too small an input."""
        if x.dim() != 4:
            raise ValueError(f"expected a (N, C, H, W) batch, got a tensor of shape {tuple(x.shape)}")
        if x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"input has {x.shape[1]} channels; this VGG accepts {self.cfg.in_channels}")
        if min(x.shape[-2:]) < self.min_input:
            raise ValueError(
                f"input {x.shape[-2]}x{x.shape[-1]} is smaller than {self.min_input}x{self.min_input}, "
                f"the smallest this VGG ({self.cfg.head} head) accepts"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, classes); the conv head averages its score map spatially."""
        self.check_input(x)
        f = self.features(x)  # (N, 512w, H/32, W/32)
        if self.cfg.head == "conv":
            return self.dense_head(f).mean(dim=(2, 3))
        return self.classifier(torch.flatten(self.avgpool(f), 1))

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """Dense class score map (N, classes, h, w) of the fully convolutional net (section 3.2).

        h = H/32 - grid + 1 for the fc and conv heads (1 at 224, 2 at 256, 6 at 384); the fc
        head's weights are viewed as convolutions, not copied. The gap head gives the class
        activation map (h = H/32).
        """
        if self.cfg.head == "fc" and min(x.shape[-2:]) < 32 * self.grid:
            raise ValueError(
                f"input {x.shape[-2]}x{x.shape[-1]} is smaller than {32 * self.grid}, the dense net's minimum"
            )
        self.check_input(x)
        return self.dense_head(self.features(x))

    def dense_head(self, f: torch.Tensor) -> torch.Tensor:
        """Classifier over every FC6 window of a feature map (N, C, H, W) -> (N, classes, h, w).

        FC6 (a grid x grid conv) runs as one GEMM over the unfolded windows, then FC7/FC8 as GEMMs
        on the (N, L, channels) rows: the same arithmetic as the conv head, and faster on CPU than
        a 7x7 convolution over a small map. The weights of every head are viewed, never copied.
        """
        n, c, h, w = f.shape
        k = 1 if self.cfg.head == "gap" else self.grid
        first = next(layer for layer in self.classifier if isinstance(layer, (nn.Linear, nn.Conv2d)))
        nhwc = first.weight.dim() == 4 and not first.weight.is_contiguous()  # a channels-last conv head
        if nhwc:  # windows in the (kh, kw, C) order the weights are stored in, so they stay a view
            x = f.permute(0, 2, 3, 1).unfold(1, k, 1).unfold(2, k, 1)  # (N, h', w', C, kh, kw)
            x = x.permute(0, 1, 2, 4, 5, 3).reshape(n, -1, k * k * c)
        else:
            x = F.unfold(f, k).transpose(1, 2)  # (N, L, C*k*k), in the (C, kh, kw) order of FC6's weights
        for layer in self.classifier:
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                weight = layer.weight
                if weight.dim() == 4 and nhwc:
                    weight = weight.permute(0, 2, 3, 1)
                x = F.linear(x, weight.reshape(weight.shape[0], -1), layer.bias)
            else:
                x = layer(x)
        return x.transpose(1, 2).reshape(n, -1, h - k + 1, w - k + 1)

    # -- conversion --------------------------------------------------------------
    def to_head(self, head: str) -> VGG:
        """A copy with the fc head as convolutions or back (same weights, reshaped)."""
        if {head, self.cfg.head} != {"fc", "conv"} and head != self.cfg.head:
            raise ValueError(f"cannot convert a {self.cfg.head} head to {head}; only fc <-> conv is exact")
        other = VGG(dataclasses.replace(self.cfg, head=head))
        state = {}
        for key, value in self.state_dict().items():
            target = other.state_dict()[key]
            state[key] = value.reshape(target.shape)
        other.load_state_dict(state)
        return other.train(self.training)


def build(name: str = "vgg16", **options: Any) -> VGG:
    """Construct a VGG from a configuration name (`D`, `vgg16`, `vgg16_bn`, ...) and options."""
    return VGG(ModelConfig(arch=name), **options)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not), the figure of the paper's Table 2."""
    return sum(p.numel() for p in model.parameters())
