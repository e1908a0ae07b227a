"""The classifier of the int8 net: FC6 and FC7 in int8, FC8 in fp32, on the compiled kernels' own workers.

`int8_net` puts it together with the int8 features (vggnet.cpu.int8_conv) into one module, `Int8Net`, whose
forward pass runs no torch kernel that wakes the OpenMP pool: the flatten reads the last feature map in
its channels-last memory as it is (FC6's weights are permuted to match), and the average pool, which
VGG's 224x224 input makes an identity, is skipped when it is one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import compiled
from .int8_conv import kernel_available


def kernels_run(x: torch.Tensor, int8: bool = True) -> bool:
    """Whether x goes to the compiled kernels: fp32 on the CPU, the kernels built (and for `int8`, with VNNI)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and (kernel_available() if int8 else bool(compiled.kernels()))
    )


class Int8Linear(nn.Module):
    """A Linear (+ ReLU) in int8 (FC6 and FC7 of the int8 net); fp32 in and out.

    The weights are int8 with a scale per output (max |w| / 127); each input row is rounded to u8 over its
    own range, [min(x, 0), max(x, 0)], with a zero point, as the layer runs (dynamic quantisation), and
    the products are summed in int32 (csrc/linear.cpp, AVX-512 VNNI or AVX-VNNI). Elsewhere a float64
    reference of the same integer arithmetic runs.
    """

    def __init__(self, linear: nn.Linear, relu: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features, self.relu = linear.in_features, linear.out_features, relu
        w = linear.weight.detach().cpu().double()
        scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127
        q = torch.round(w / scale[:, None]).clamp(-127, 127)
        kin4, kout_p = -(-self.in_features // 4) * 4, -(-self.out_features // 64) * 64
        padded = F.pad(q, (0, kin4 - self.in_features, 0, kout_p - self.out_features)).to(torch.int8)
        self.register_buffer("weight_q", q.to(torch.int8))  # (Kout, Kin), for the reference path
        # (Kout_p / 16, Kin4 / 4, 16, 4): 4 consecutive inputs of 16 outputs side by side (vpdpbusd's operand)
        self.register_buffer("packed", padded.view(kout_p // 16, 16, kin4 // 4, 4).permute(0, 2, 1, 3).contiguous())
        self.register_buffer("wsum", F.pad(q.sum(dim=1), (0, kout_p - self.out_features)).int())
        self.register_buffer("wscale", F.pad(scale, (0, kout_p - self.out_features)).float())
        self.register_buffer("bias", _bias(linear))

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, int8, relu={self.relu}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check(self, x)
        if kernels_run(x):
            return compiled.kernels().linear_int8(x, self.packed, self.wsum, self.wscale, self.bias, self.relu)
        return self.reference(x)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The kernel's arithmetic: each row to u8 in fp32 (rounded half to even), integer products in float64."""
        x = x.float()
        lo, hi = x.amin(dim=1).clamp_max(0), x.amax(dim=1).clamp_min(0)
        s = torch.where(hi > lo, (hi - lo) / 255, torch.ones_like(hi))
        z = torch.round(-lo / s)
        q = (torch.round(x * (1 / s)[:, None]) + z[:, None]).clamp(0, 255) - z[:, None]
        acc = (q.double() @ self.weight_q.double().T).float()  # exact integers, then fp32 as the kernel
        y = acc * (s[:, None] * self.wscale[: self.out_features]) + self.bias
        return y.relu() if self.relu else y


class Float32Linear(nn.Module):
    """A Linear (+ ReLU) in fp32 on the compiled kernels' workers (the fast fp32 path's FC layers, the int8 net's FC8).

    The weights are kept only as the kernel reads them (FC6 of VGG16 alone is 411 MB); torch's Linear on
    the unpacked weights runs where the kernel cannot.
    """

    def __init__(self, linear: nn.Linear, relu: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features, self.relu = linear.in_features, linear.out_features, relu
        self.register_buffer("bias", _bias(linear))
        kout_p = -(-self.out_features // 64) * 64
        w = F.pad(linear.weight.detach().cpu().float(), (0, 0, 0, kout_p - self.out_features))  # (Kout_p, Kin)
        self.register_buffer("packed", w.view(kout_p // 16, 16, self.in_features).transpose(1, 2).contiguous())

    @property
    def weight(self) -> torch.Tensor:
        """(Kout, Kin), unpacked (a copy)."""
        return self.packed.transpose(1, 2).reshape(-1, self.in_features)[: self.out_features]

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, fp32, relu={self.relu}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check(self, x)
        if kernels_run(x, int8=False):
            return compiled.kernels().linear_f32(x, self.packed, self.bias, self.relu)
        y = F.linear(x, self.weight.to(x), self.bias.to(x))
        return y.relu() if self.relu else y


def _bias(linear: nn.Linear) -> torch.Tensor:
    bias = linear.bias.detach() if linear.bias is not None else torch.zeros(linear.out_features)
    return bias.cpu().float().clone()


def _check(layer: Int8Linear | Float32Linear, x: torch.Tensor) -> None:
    if x.dim() != 2 or x.shape[1] != layer.in_features:
        raise ValueError(f"{type(layer).__name__} expects (N, {layer.in_features}) inputs, got {tuple(x.shape)}")


def float32_classifier(classifier: nn.Sequential) -> nn.Sequential:
    """A copy of a VGG classifier whose Linears (and the ReLU after each) are Float32Linears; the indices line up."""
    mods, layers, i = list(classifier), [], 0
    while i < len(mods):
        if isinstance(mods[i], nn.Linear):
            relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
            layers += [Float32Linear(mods[i], relu=relu)] + [nn.Identity()] * relu
            i += relu
        else:
            layers.append(mods[i])
        i += 1
    return nn.Sequential(*layers)


def int8_classifier(
    classifier: nn.Sequential, keep_last: bool = True, channels_last: tuple[int, int, int] | None = None
) -> nn.Sequential:
    """A copy of a VGG classifier: each Linear (and the ReLU after it) as an Int8Linear, FC8 as a Float32Linear
    with `keep_last`.

    `channels_last` = (C, H, W): the first Linear reads the feature map flattened in channels-last order
    (h, w, c) rather than torch.flatten's (c, h, w); its weights' columns are permuted to match. An
    `nn.Identity` takes the place of each fused ReLU, so the indices line up with the original.
    """
    mods = list(classifier)
    linears = [i for i, m in enumerate(mods) if isinstance(m, nn.Linear)]
    layers: list[nn.Module] = []
    i = 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, nn.Linear):
            if i == linears[0] and channels_last is not None:  # linears is not empty here
                m = _reads_channels_last(m, *channels_last)
            relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
            kind = Float32Linear if keep_last and i == linears[-1] else Int8Linear
            layers += [kind(m, relu=relu)] + [nn.Identity()] * relu
            i += relu
        else:
            layers.append(m)
        i += 1
    return nn.Sequential(*layers)


def _reads_channels_last(linear: nn.Linear, c: int, h: int, w: int) -> nn.Linear:
    """A copy of `linear` whose input is a (C, H, W) map flattened as (H, W, C)."""
    if linear.in_features != c * h * w:
        raise ValueError(f"the first FC layer takes {linear.in_features} inputs, not the {c}x{h}x{w} feature map")
    out = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        out.weight.copy_(linear.weight.view(-1, c, h, w).permute(0, 2, 3, 1).reshape(linear.out_features, -1))
        if linear.bias is not None:
            out.bias.copy_(linear.bias)
    return out


def pooled_size(avgpool: nn.AdaptiveAvgPool2d) -> tuple[int, int]:
    """The (height, width) the average pool gives."""
    size = avgpool.output_size
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)  # type: ignore[return-value]


class Int8Net(nn.Module):
    """The int8 VGG (fc or gap head): int8 features, then the classifier above on the channels-last map."""

    def __init__(self, features: nn.Sequential, avgpool: nn.AdaptiveAvgPool2d, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features, self.avgpool, self.classifier = features, avgpool, classifier
        self.pooled = pooled_size(avgpool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if tuple(f.shape[-2:]) != self.pooled:  # at VGG's own input size the map already has the pooled size
            f = self.avgpool(f)
        return self.classifier(f.permute(0, 2, 3, 1).reshape(f.shape[0], -1))  # a view of channels-last memory


def int8_net(
    features: nn.Sequential,
    avgpool: nn.AdaptiveAvgPool2d,
    classifier: nn.Sequential,
    channels: int,
    keep_last: bool = True,
) -> Int8Net:
    """Int8Net from int8 features (`channels` maps out) and a fp32 VGG classifier (quantised here)."""
    h, w = pooled_size(avgpool)
    return Int8Net(features, avgpool, int8_classifier(classifier, keep_last, channels_last=(channels, h, w)))
