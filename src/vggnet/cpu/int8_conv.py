"""int8 VGG convolutions as Winograd F(2x2, 3x3) with the GEMMs in int8 (Winograd-domain quantisation).

A 3x3 conv is V = B^T d B per 4x4 input tile, M[p] = V[p] U[p] per tile position p (16 of them), then
Y = A^T M A. Here the 16 GEMMs run in int8 (vpdpbusd: AVX-512 VNNI or AVX-VNNI; csrc/winograd_int8.cpp):
2.25x fewer multiplications than a direct int8 conv, each a quarter of an fp32 multiply's cost. V is rounded to u8
with a zero point per position and a scale per (position, input channel); U = G g G^T, each input
channel's row multiplied by that channel's scale (so V U is unchanged), to int8 with a scale per
(position, output channel). The channel scales are SmoothQuant's (Xiao et al., 2023), max|V|^alpha /
max|U|^(1 - alpha): they share the rounding between activations and weights. F(2x2)'s transforms only
add and subtract; F(4x4)'s (entries up to 5, outputs scaled by up to 8) amplify the rounding: in a
simulation on a trained Imagenette net it agreed with fp32 far less often than a direct int8 conv, so it
is not offered. Activations between layers stay fp32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from . import compiled, first_conv
from .winograd import transforms

POSITIONS = 16  # (2 + 2)^2 tile positions of F(2x2, 3x3)
ALPHA = 0.5  # SmoothQuant's migration strength for the channel scales (see int8_features)


def kernel_available() -> bool:
    """Whether the compiled int8 kernel runs here: built, and the CPU has its VNNI (`compiled.int8_why_not`)."""
    return compiled.int8_why_not() is None


def input_tiles(x: torch.Tensor) -> torch.Tensor:
    """V = B^T d B of every 4x4 input tile of F(2x2, 3x3): (N, C, th, tw, 4, 4) for x (N, C, H, W), float64."""
    n, c, h, w = x.shape
    th, tw = math.ceil(h / 2), math.ceil(w / 2)
    d = F.pad(x.double(), (1, 2 * tw + 1 - w, 1, 2 * th + 1 - h)).unfold(2, 4, 2).unfold(3, 4, 2)
    bt = transforms(2)[0]
    return torch.einsum("ai,nchwij,bj->nchwab", bt, d, bt)


def tile_range(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest and largest V per (tile position, input channel) over a batch: two (16, C), image by image."""
    lows, highs = [], []
    for xi in x:
        v = input_tiles(xi[None]).flatten(4)  # (1, C, th, tw, 16)
        lows.append(v.amin(dim=(0, 2, 3)).T)
        highs.append(v.amax(dim=(0, 2, 3)).T)
    return torch.stack(lows).amin(0), torch.stack(highs).amax(0)


class Int8WinogradConv2d(nn.Module):
    """A 3x3, stride-1, padding-1 conv (+ ReLU) (+ 2x2 max pool) as int8 Winograd F(2x2, 3x3); fp32 NCHW in and out.

    `low`, `high` (16, C): the calibrated range of V per tile position and input channel. Runs the compiled
    kernel where it is available and a float64 reference of the same integer arithmetic elsewhere. `pool`
    is VGG's max pool (2x2, stride 2) after the ReLU; the kernel pools each 2x2 output tile as it makes it.
    Channel counts that are not multiples of 16 (the kernel's vector) are padded with zero channels.
    """

    def __init__(
        self,
        conv: nn.Conv2d,
        low: torch.Tensor,
        high: torch.Tensor,
        relu: bool = False,
        pool: bool = False,
        alpha: float = ALPHA,
    ) -> None:
        super().__init__()
        if not quantizable(conv):
            raise ValueError(f"int8 Winograd needs a 3x3 conv, stride 1, padding 1, groups 1: {conv}")
        self.in_channels, self.out_channels, self.relu, self.pool = conv.in_channels, conv.out_channels, relu, pool
        c, k = -(-conv.in_channels // 16) * 16, -(-conv.out_channels // 16) * 16  # zero channels up to the vector
        weight = F.pad(
            conv.weight.detach().cpu().double(), (0, 0, 0, 0, 0, c - conv.in_channels, 0, k - conv.out_channels)
        )
        g = transforms(2)[1]
        u = torch.einsum("ai,kcij,bj->abck", g, weight, g).reshape(POSITIONS, c, k)
        low, high = (F.pad(r.double(), (0, c - conv.in_channels)) for r in (low, high))
        low, high = low.clamp_max(0), high.clamp_min(0)  # zero stays exact (padding)
        reach, wmax = torch.maximum(-low, high), u.abs().amax(dim=2).clamp_min(1e-12)  # (16, C) each
        s = torch.where(reach > 0, reach**alpha / wmax ** (1 - alpha), torch.ones_like(reach))  # V' = V / s, U' = U s
        lo, hi = (low / s).amin(dim=1), (high / s).amax(dim=1)  # (16,): the range of V' per position
        step = ((hi - lo) / 255).clamp_min(1e-12)
        zero = torch.round(-lo / step).clamp(0, 255)
        u = u * s[:, :, None]
        s_u = u.abs().amax(dim=1).clamp_min(1e-12) / 127  # (16, K)
        uq = torch.round(u / s_u[:, None, :]).clamp(-127, 127)
        kp = -(-k // 64) * 64
        self.register_buffer("uq", uq.to(torch.int8))  # (16, C, K), for the reference path
        self.register_buffer("inv_s", (1 / (s * step[:, None])).float().contiguous())  # (16, C)
        self.register_buffer("zero_point", zero.float())  # (16,)
        self.register_buffer("bias", F.pad(conv.bias.detach().cpu().float(), (0, k - conv.out_channels)))
        padded = F.pad(uq, (0, kp - k)).to(torch.int8)  # (16, C, Kp)
        self._packed: dict[int, torch.Tensor] = {}  # U for the compiled kernel by panel width (see packed)
        # the GEMM starts from -z sum_c U, so that the zero point of the u8 inputs cancels
        self.register_buffer("comp", (zero[:, None].long() * padded.long().sum(dim=1)).int().contiguous())  # (16, Kp)
        self.register_buffer("scale", F.pad(step[:, None] * s_u, (0, kp - k)).float().contiguous())  # (16, Kp)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, int8 F(2x2, 3x3), relu={self.relu}, pool={self.pool}"

    def packed(self, panel: int) -> torch.Tensor:
        """U as the kernel reads it: (16, Kp/panel, C/4, panel, 4), 4 consecutive channels of one output channel
        side by side (vpdpbusd's operand); `panel` is the build's (64 for AVX-512, 16 for AVX2), each layout cached.
        """
        if panel not in self._packed:
            c, kp = self.uq.shape[1], self.scale.shape[1]
            padded = F.pad(self.uq, (0, kp - self.uq.shape[2]))  # (16, C, Kp)
            self._packed[panel] = (
                padded.view(POSITIONS, c // 4, 4, kp // panel, panel).permute(0, 3, 1, 4, 2).contiguous()
            )
        return self._packed[panel]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"Int8WinogradConv2d expects {self.in_channels} input channels, got {x.shape[1]}")
        if not (x.device.type == "cpu" and kernel_available()):
            return self.reference(x)
        x = self._padded(x).float().contiguous(memory_format=torch.channels_last)
        fused = self.pool and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0  # odd sizes: the pool as its own step
        kernels = compiled.kernels()
        args = (self.packed(kernels.panel), self.comp, self.scale, self.inv_s, self.zero_point, self.bias, self.relu)
        y = kernels.conv3x3_f2_int8(x, *args, fused, self.bias.numel(), 0, 0)
        if y.shape[1] != self.out_channels:  # zero channels cut off, dense again for the next layer
            y = y[:, : self.out_channels].contiguous(memory_format=torch.channels_last)
        return F.max_pool2d(y, 2) if self.pool and not fused else y

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        """x with zero channels up to the layer's padded input width."""
        missing = self.inv_s.shape[1] - x.shape[1]
        return F.pad(x, (0, 0, 0, 0, 0, missing)) if missing else x

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The kernel's arithmetic in float64: V rounded half to even, integer GEMMs, fp32-scaled outputs."""
        n, _, h, w = x.shape
        v = input_tiles(self._padded(x).float()).flatten(4)  # (N, C, th, tw, 16)
        th, tw = v.shape[2:4]
        zero = self.zero_point.double()
        q = torch.round(v * self.inv_s.double().T[None, :, None, None, :] + zero).clamp(0, 255) - zero
        m = torch.einsum("nchwp,pck->nkhwp", q, self.uq.double())  # exact: integers below 2^53
        m = m[:, : self.out_channels] * self.scale[:, : self.out_channels].double().T[None, :, None, None, :]
        at = transforms(2)[2]
        y = torch.einsum("ai,nkhwij,bj->nkhwab", at, m.unflatten(4, (4, 4)), at)  # (N, K, th, tw, 2, 2)
        y = y.permute(0, 1, 2, 4, 3, 5).reshape(n, -1, 2 * th, 2 * tw)[:, :, :h, :w]
        y = y + self.bias[: self.out_channels].double().view(-1, 1, 1)
        y = y.float().contiguous(memory_format=torch.channels_last)
        y = y.relu_() if self.relu else y
        return F.max_pool2d(y, 2) if self.pool else y


def quantizable(conv: nn.Module) -> bool:
    """A conv the int8 Winograd layer takes: 3x3, stride 1, padding 1, groups 1, dilation 1."""
    return first_conv.vgg_3x3(conv)


def int8_features(
    features: nn.Sequential, calibration: Iterable[torch.Tensor], skip: int = 1, alpha: float = ALPHA
) -> nn.Sequential:
    """A copy of a VGG `features` stack (eval, BN folded), 3x3 convs as Int8WinogradConv2d (ReLU, max pool fused).

    The first `skip` convs stay fp32 (conv1_1 sees the raw image through 3 channels; where the compiled
    kernels run, as `first_conv.SmallConv2d`). Each replaced conv's
    input is observed on the `calibration` batches (preprocessed images) for the range of its V.
    """
    mods = list(features)
    targets = [i for i, m in enumerate(mods) if isinstance(m, nn.Conv2d)][skip:]
    targets = [i for i in targets if quantizable(mods[i])]
    ranges: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def observe(i: int):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            low, high = tile_range(inputs[0])
            if i in ranges:
                low, high = torch.minimum(ranges[i][0], low), torch.maximum(ranges[i][1], high)
            ranges[i] = (low, high)

        return hook

    handles = [mods[i].register_forward_pre_hook(observe(i)) for i in targets]
    try:
        with torch.inference_mode():
            for batch in calibration:
                features(batch)
    finally:
        for h in handles:
            h.remove()
    if targets and not ranges:
        raise ValueError("int8 calibration needs at least one batch")
    layers: list[nn.Module] = []
    i = 0
    while i < len(mods):
        if i in ranges:
            relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
            pool = relu and i + 2 < len(mods) and first_conv.vgg_pool(mods[i + 2])
            layers.append(Int8WinogradConv2d(mods[i], *ranges[i], relu=relu, pool=pool, alpha=alpha))
            # an Identity in place of each fused layer keeps the stack's indices (and feature_names) lined up
            layers += [nn.Identity()] * (relu + pool)
            i += relu + pool
        elif first_conv.takes(mods[i]):  # conv1_1 in fp32, as the compiled direct conv (+ ReLU)
            relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
            layers += [first_conv.SmallConv2d(mods[i], relu=relu)] + [nn.Identity()] * relu
            i += relu
        else:
            layers.append(mods[i])
        i += 1
    return nn.Sequential(*layers)
