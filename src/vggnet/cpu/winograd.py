"""Winograd convolution for VGG's 3x3 layers: the same outputs from fewer multiplications.

Every VGG conv is 3x3, stride 1, padding 1. Winograd's minimal filtering algorithm F(m x m, 3 x 3)
(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016) computes an m x m tile of
outputs from an (m + 2) x (m + 2) tile of inputs with (m + 2)^2 multiplications per input/output
channel pair instead of 9 m^2: 2.25x fewer for m = 2, 4x fewer for m = 4. Per layer:

    V = B^T d B   for every input tile d           (input transform)
    U = G g G^T   for every 3x3 filter g            (weight transform, done once)
    M[p] = V[p] @ U[p]   for each of the (m+2)^2 tile positions p (a batched GEMM over channels)
    Y = A^T M A                                     (output transform)

On a CPU with AVX-512 or AVX2 the layer runs as one compiled kernel (csrc/winograd_f32.cpp, `vggnet.cpu.compiled`):
the three steps fused per chunk of tiles, the transforms as a few vector additions, the GEMMs by a register-
blocked micro-kernel. Elsewhere (or when it cannot be built) the Python path below writes both
transforms as one small GEMM each (with the Kronecker product of the 1-D matrices), so the layer is
three GEMMs and two copies in PyTorch's own kernels. Either equals the direct convolution up to fp32
rounding of the transforms (tests bound it); the points 0, +-1, +-2 keep F(4x4) within about 1e-5 of
the output's scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..io import report_once
from . import compiled, first_conv

# The 1-D transforms of F(m, 3), interpolation points 0, 1, -1 (m = 2) and 0, 1, -1, 2, -2, infinity (m = 4).
_MATRICES: dict[int, tuple[list[list[float]], list[list[float]], list[list[float]]]] = {
    2: (
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],  # B^T (4 x 4)
        [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],  # G (4 x 3)
        [[1, 1, 1, 0], [0, 1, -1, -1]],  # A^T (2 x 4)
    ),
    4: (
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    ),
}


def transforms(m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 (B^T, G, A^T) of F(m x m, 3 x 3)."""
    if m not in _MATRICES:
        raise ValueError(f"Winograd tile m={m} is not supported; use one of {sorted(_MATRICES)}")
    return tuple(torch.tensor(a, dtype=torch.float64) for a in _MATRICES[m])  # type: ignore[return-value]


def choose_tile(h: int, w: int) -> int:
    """F(4x4) unless completing its last tiles would add over 15% of padding work; then F(2x2).

    At VGG's 224 input only the 14x14 conv5 layers fall back to F(2x2) (16x16 tiles = 31% more work).
    """
    padded = math.ceil(h / 4) * 4 * math.ceil(w / 4) * 4
    return 4 if padded <= 1.15 * h * w else 2


class WinogradConv2d(nn.Module):
    """A 3x3, stride-1, padding-1 convolution (optionally + ReLU, + VGG's 2x2 max pool) as Winograd F(m x m, 3 x 3).

    Built from a trained `nn.Conv2d`; inference only (no gradients). The tile size m is chosen per
    input size (`choose_tile`) or fixed by `m`; the transformed weights of each m are computed on
    first use, in float64, and cached. Input and output are NCHW tensors in channels-last memory,
    as the optimised path keeps them. With `pool` the compiled kernel pools each 4x4 output tile as it
    makes it; the Python path pools afterwards.
    """

    def __init__(self, conv: nn.Conv2d, m: int | None = None, relu: bool = False, pool: bool = False) -> None:
        super().__init__()
        if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1) or conv.groups != 1:
            raise ValueError(
                f"Winograd needs a 3x3 conv with stride 1, padding 1, groups 1; got kernel {conv.kernel_size}, "
                f"stride {conv.stride}, padding {conv.padding}, groups {conv.groups}"
            )
        if conv.dilation != (1, 1):
            raise ValueError(f"Winograd needs dilation 1; got {conv.dilation}")
        if m is not None:
            transforms(m)  # rejects an unsupported m now rather than at the first forward
        self.m, self.relu, self.pool = m, relu, pool
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.register_buffer("weight", conv.weight.detach().clone())
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("bias", bias.clone().to(conv.weight.dtype))
        self.chunk_bytes = 8 << 20  # transformed tiles per step (see forward)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._packed: dict[int, torch.Tensor] = {}  # U for the compiled kernel by panel width (see packed)

    def extra_repr(self) -> str:
        tile = f"F({self.m}x{self.m}, 3x3)" if self.m else "F(4x4 or 2x2, 3x3)"
        return f"{self.in_channels}, {self.out_channels}, {tile}, relu={self.relu}, pool={self.pool}"

    def transformed(self, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(U, B^T kron B^T, A^T kron A^T) for tile m, in the weight's dtype and device (cached)."""
        key = (m, self.weight.device, self.weight.dtype)
        if key not in self._cache:
            bt, g, at = transforms(m)
            t = m + 2
            u = torch.einsum("ai,kcij,bj->abck", g, self.weight.cpu().double(), g)  # G g G^T: (t, t, C, K)
            u = u.reshape(t * t, self.in_channels, self.out_channels)
            # V = B^T d B for every tile at once: vec(V) = (B^T kron B^T) vec(d); Y likewise with A^T
            self._cache[key] = tuple(  # type: ignore[assignment]
                a.to(self.weight.device, self.weight.dtype).contiguous()
                for a in (u, torch.kron(bt, bt), torch.kron(at, at))
            )
        return self._cache[key]

    def packed(self, panel: int) -> torch.Tensor:
        """U of F(4x4) laid out for the compiled kernel: (36, K/panel, C, panel), K zero-padded to a multiple of panel.

        `panel` is the build's (`kernels().panel`: 64 for AVX-512, 16 for AVX2); each layout is cached.
        """
        if panel not in self._packed:
            u = self.transformed(4)[0].cpu()  # (36, C, K)
            kp = -(-self.out_channels // panel) * panel
            u = F.pad(u, (0, kp - self.out_channels)).view(36, self.in_channels, kp // panel, panel)
            self._packed[panel] = u.permute(0, 2, 1, 3).contiguous()
        return self._packed[panel]

    def compiled(self, x: torch.Tensor) -> bool:
        """Whether this input goes to the compiled kernel: fp32 on the CPU, F(4x4), channels multiples of 16."""
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and kernel_takes(self.in_channels, self.out_channels, self.m)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"WinogradConv2d expects {self.in_channels} input channels, got {c}")
        if self.compiled(x):
            x = x.contiguous(memory_format=torch.channels_last)
            k = compiled.kernels()
            pool = self.pool and h >= 2 and w >= 2  # smaller: torch's max pool gives its own error below
            y = k.conv3x3_f4(x, self.packed(k.panel), self.bias, self.relu, pool, self.out_channels, 0, 0)
            return y if pool == self.pool else F.max_pool2d(y, 2)
        m = self.m or choose_tile(h, w)
        u, bb, aa = self.transformed(m)
        t, k = m + 2, self.out_channels
        th, tw = math.ceil(h / m), math.ceil(w / m)
        hp, wp = th * m + 2, tw * m + 2
        xh = x.permute(0, 2, 3, 1)  # NHWC, a view of channels-last memory
        out = torch.empty((n, h, w, k), dtype=x.dtype, device=x.device)
        # A few rows of tiles at a time (chunk_bytes of transformed tiles), so the working set stays small
        # between the three GEMMs: whole batches of 8 at once ran 1.1-4x slower than the direct conv here,
        # 8 MB steps 1.3-2.4x faster.
        rows = max(1, min(th, self.chunk_bytes // (tw * t * t * max(c, k) * x.element_size())))
        for i in range(n):
            # one image zero-padded (NHWC): 1 pixel of the conv's padding, plus what completes the last tile
            xp = F.pad(xh[i], (0, 0, 1, wp - w - 1, 1, hp - h - 1)).contiguous()
            for r0 in range(0, th, rows):
                r = min(rows, th - r0)
                # every (t x t) input tile of these rows, overlapping by 2: (t, t, r, tw, C), gathered by one copy
                d = xp[r0 * m :].as_strided((t, t, r, tw, c), (wp * c, c, m * wp * c, m * c, 1))
                v = torch.mm(bb, d.reshape(t * t, r * tw * c)).view(t * t, r * tw, c)
                y = torch.mm(aa, torch.bmm(v, u).view(t * t, r * tw * k))  # a GEMM per tile position, A^T . A
                # (m, m, r, tw, K) -> (r, m, tw, m, K): the output tiles side by side, cut to h x w
                y = y.view(m, m, r, tw, k).permute(2, 0, 3, 1, 4).reshape(r * m, tw * m, k)
                y0, y1 = r0 * m, min(h, (r0 + r) * m)
                torch.add(y[: y1 - y0, :w], self.bias, out=out[i, y0:y1])
        if self.relu:
            out.relu_()
        out = out.permute(0, 3, 1, 2)  # NCHW shape, channels-last memory
        return F.max_pool2d(out, 2) if self.pool else out


def worth_it(conv: nn.Conv2d) -> bool:
    """Whether Winograd beats oneDNN's direct conv on this layer (docs/performance.md has the measurements).

    The compiled kernel gains on every VGG16 layer it takes (channels multiples of 16: all but conv1_1).
    In the Python path the transforms are memory-bound copies whose cost grows with C + K while the GEMM
    work saved grows with C x K, so it pays only from C x K / (C + K) of about 40 (conv2_1, 64 -> 128).
    RGB layers (3 channels) never gain.
    """
    c, k = conv.in_channels, conv.out_channels
    if conv.kernel_size != (3, 3):
        return False
    return kernel_takes(c, k) or c * k / (c + k) >= 40


def kernel_takes(c: int, k: int, m: int | None = None) -> bool:
    """Whether the compiled kernel computes a c -> k layer of tile m: F(4x4), channels multiples of 16, built."""
    return m in (None, 4) and c % 16 == 0 and k % 16 == 0 and compiled.kernels() is not None


def winogradify(features: nn.Sequential, m: int | None = None) -> nn.Sequential:
    """A copy of a VGG `features` stack whose 3x3 convs (and the ReLU after each) run as Winograd layers.

    Only the convs where Winograd is faster (`worth_it`) are replaced; a conv on few input channels
    (conv1_1) becomes the compiled direct conv where the kernels run (`first_conv.SmallConv2d`); the rest stay
    as they are. The ReLU after a replaced conv is fused into it, and where the compiled kernel takes the
    layer so is the max pool after that ReLU; an `nn.Identity` keeps the place of each fused layer, so the
    stack's indices (and `VGG.feature_names`) still line up. Without the compiled kernels it says so, once.
    """
    if compiled.kernels() is None:
        report_once(
            f"vggnet: no compiled CPU kernels ({compiled.why_not()}): the fast path runs its slower PyTorch form"
        )
    layers: list[nn.Module] = []
    mods = list(features)
    i = 0
    while i < len(mods):
        layer = mods[i]
        relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
        if isinstance(layer, nn.Conv2d) and worth_it(layer):
            pool = relu and kernel_takes(layer.in_channels, layer.out_channels, m) and i + 2 < len(mods)
            pool = pool and first_conv.vgg_pool(mods[i + 2])
            layers += [WinogradConv2d(layer, m=m, relu=relu, pool=pool)] + [nn.Identity()] * (relu + pool)
            i += relu + pool
        elif first_conv.takes(layer):  # conv1_1: few input channels, the compiled direct conv
            layers += [first_conv.SmallConv2d(layer, relu=relu)] + [nn.Identity()] * relu
            i += relu
        else:
            layers.append(layer)
        i += 1
    return nn.Sequential(*layers)
