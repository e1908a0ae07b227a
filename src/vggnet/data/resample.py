"""Pillow's antialiased bilinear resize of 8-bit images, batched in torch on any device, bit for bit.

`Image.resize(size, Image.BILINEAR, box=...)` is two separable passes (rows and columns), each
a triangle filter stretched by the downscale factor, its coefficients rounded to 22-bit fixed point and
every pass rounded to 8 bits. Doing the same in int32 arithmetic gives exactly Pillow's pixels, so
the batched input path crops, rescales and mirrors the way the per-image path does, on a GPU too.
torch's `F.interpolate(antialias=True)` computes the same filter in floats, but takes no fractional
source box (the crop's preimage) and rounds once, so it would differ from Pillow by a unit here and there.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed point: 8-bit pixels times coefficients fit an int32


def coefficients(
    in_size: np.ndarray, in0: np.ndarray, in1: np.ndarray, out: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's bilinear taps along one axis of B images: (first source pixel, window length, weights).

    `in_size` (B,): source lengths; `in0`, `in1` (B,): the box along this axis, which Pillow holds as float32.
    Returns first (B, out), length (B, out) and the 22-bit fixed-point weights (B, out, K) of K taps.
    """
    in0, in1 = np.asarray(in0, np.float32), np.asarray(in1, np.float32)
    scale = (in1 - in0).astype(np.float64) / out  # float32 difference, as Pillow computes it
    filterscale = np.maximum(scale, 1.0)  # downscaling stretches the triangle (antialiasing)
    support = filterscale  # the bilinear filter's support is 1
    taps = int(np.ceil(support).max()) * 2 + 1
    center = in0.astype(np.float64)[:, None] + (np.arange(out) + 0.5)[None] * scale[:, None]  # (B, out)
    first = np.maximum(np.trunc(center - support[:, None] + 0.5), 0).astype(np.int64)
    length = np.minimum(np.trunc(center + support[:, None] + 0.5), np.asarray(in_size)[:, None]).astype(np.int64)
    length -= first
    weights = np.zeros((*center.shape, taps))
    total = np.zeros(center.shape)
    for k in range(taps):  # summed in tap order, as Pillow does, so the normalisation rounds alike
        x = np.abs((first + k - center + 0.5) * (1.0 / filterscale)[:, None])  # Pillow multiplies by 1/scale
        weights[..., k] = np.where((k < length) & (x < 1.0), 1.0 - x, 0.0)
        total = total + weights[..., k]
    weights /= np.where(total == 0.0, 1.0, total)[..., None]
    fixed = np.trunc(0.5 + weights * (1 << PRECISION_BITS)).astype(np.int32)
    return first, length, fixed


def resample_pass(x: torch.Tensor, first: np.ndarray, weights: np.ndarray) -> torch.Tensor:
    """One Pillow pass along axis 1: uint8 (B, L, R) -> uint8 (B, out, R), in Pillow's int32 arithmetic (exact).

    `first` (B, out) indexes axis 1, so each tap reads whole contiguous rows of R values (all channels and
    the other axis): the pass is K row gathers and multiply-adds. Taps past the end carry zero weight.
    """
    b, length, rest = x.shape
    out, taps = weights.shape[1:]
    device = x.device
    rows = np.minimum(first[..., None] + np.arange(taps), length - 1) + (np.arange(b) * length)[:, None, None]
    rows = torch.from_numpy(rows.reshape(b * out, taps)).to(device)  # into x viewed as (B * L, R)
    fixed = torch.from_numpy(weights.reshape(b * out, taps)).to(device)
    flat = x.reshape(b * length, rest)
    acc = torch.full((b * out, rest), 1 << (PRECISION_BITS - 1), dtype=torch.int32, device=device)  # rounding
    taken = torch.empty(b * out, rest, dtype=torch.uint8, device=device)  # reused: fresh pages cost more here
    wide = torch.empty(b * out, rest, dtype=torch.int32, device=device)
    for k in range(taps):
        torch.index_select(flat, 0, rows[:, k], out=taken)
        acc.addcmul_(wide.copy_(taken), fixed[:, k, None])
    return acc.bitwise_right_shift_(PRECISION_BITS).clamp_(0, 255).to(torch.uint8).view(b, out, rest)


def horizontal_first(in_size: tuple[int, int], out_size: tuple[int, int]) -> bool:
    """Whether Pillow resizes rows before columns for these (width, height) sizes; the order changes the rounding.

    Pillow 13 (its pull request 9549) runs the columns first when the height shrinks by more than twice as many
    pixels as the width; earlier versions always ran the rows first. `pillow_order` tells which is installed.
    """
    (w, h), (ow, oh) = in_size, out_size
    return pillow_order() == "rows" or not (h > oh and h - oh > (w - ow) * 2)


@functools.cache
def pillow_order() -> str:
    """ "horizontal" (rows first, always) or "size" (Pillow 13: by the shrink factors), from one small resize."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (56, 40, 3), dtype=np.uint8))
    box = (0.0, 2.5, 40.0, 42.3)  # 40x56 -> 32x32: the two rules disagree here
    want = torch.from_numpy(np.array(image.resize((32, 32), Image.BILINEAR, box=box))).permute(2, 0, 1)
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    rows_first = _resize_group([tensor], [box], (32, 32), [False], rows_first=True)[0]
    return "rows" if torch.equal(rows_first, want) else "size"


def resize_boxes(
    images: Sequence[torch.Tensor],
    boxes: Sequence[tuple[float, float, float, float]],
    size: tuple[int, int],
    flips: Sequence[bool] | None = None,
) -> torch.Tensor:
    """`Image.resize(size, BILINEAR, box)` of each uint8 (3, H, W) image: one uint8 (B, 3, height, width) batch.

    `size` is (width, height), as Pillow writes it. `flips`: mirror those outputs (FLIP_LEFT_RIGHT), done by
    reversing their column taps, at no cost. Only the rows and columns the filters reach are copied into the
    batch, so a small crop of a large photo costs the crop, not the photo.
    """
    flips = list(flips) if flips is not None else [False] * len(images)
    order = [horizontal_first((im.shape[2], im.shape[1]), size) for im in images]
    if all(order) or not any(order):
        return _resize_group(images, boxes, size, flips, rows_first=order[0])
    out = torch.empty(len(images), 3, size[1], size[0], dtype=torch.uint8, device=images[0].device)
    for first in (True, False):
        group = [i for i, o in enumerate(order) if o == first]
        out[group] = _resize_group(
            [images[i] for i in group], [boxes[i] for i in group], size, [flips[i] for i in group], rows_first=first
        )
    return out


def _resize_group(
    images: Sequence[torch.Tensor],
    boxes: Sequence[tuple[float, float, float, float]],
    size: tuple[int, int],
    flips: Sequence[bool],
    rows_first: bool,
) -> torch.Tensor:
    """resize_boxes for images that Pillow resizes in the same pass order."""
    width, height = size
    device = images[0].device
    hs = np.array([im.shape[1] for im in images])
    ws = np.array([im.shape[2] for im in images])
    box = np.asarray(boxes, dtype=np.float64)  # (B, 4): left, top, right, bottom
    x_first, x_len, x_w = coefficients(ws, box[:, 0], box[:, 2], width)
    y_first, y_len, y_w = coefficients(hs, box[:, 1], box[:, 3], height)
    # The source region each image needs: rows and columns from the first to the last tap.
    x0, x1 = x_first.min(1), (x_first + x_len).max(1)
    y0, y1 = y_first.min(1), (y_first + y_len).max(1)
    region = torch.zeros(len(images), 3, int((y1 - y0).max()), int((x1 - x0).max()), dtype=torch.uint8, device=device)
    for i, im in enumerate(images):
        region[i, :, : y1[i] - y0[i], : x1[i] - x0[i]] = im[:, y0[i] : y1[i], x0[i] : x1[i]]
    x_first, y_first = x_first - x0[:, None], y_first - y0[:, None]
    mirrored = np.asarray(flips, dtype=bool)
    x_first[mirrored], x_w[mirrored] = x_first[mirrored, ::-1], x_w[mirrored, ::-1]  # output column j <- width-1-j
    b = len(images)
    # Each pass resamples axis 1 of (B, L, R) with R = channels x the other axis: permute between passes.
    if rows_first:
        t = region.permute(0, 3, 1, 2).reshape(b, region.shape[3], -1)  # (B, W, 3 * H)
        t = resample_pass(t, x_first, x_w).view(b, width, 3, -1)  # (B, width, 3, H)
        t = t.permute(0, 3, 2, 1).reshape(b, t.shape[3], -1)  # (B, H, 3 * width)
        return resample_pass(t, y_first, y_w).view(b, height, 3, width).permute(0, 2, 1, 3).contiguous()
    t = region.permute(0, 2, 1, 3).reshape(b, region.shape[2], -1)  # (B, H, 3 * W)
    t = resample_pass(t, y_first, y_w).view(b, height, 3, -1)  # (B, height, 3, W)
    t = t.permute(0, 3, 2, 1).reshape(b, t.shape[3], -1)  # (B, W, 3 * height)
    return resample_pass(t, x_first, x_w).view(b, width, 3, height).permute(0, 2, 3, 1).contiguous()


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`Image.resize(size, BILINEAR)` of one uint8 (3, H, W) image: uint8 (3, height, width)."""
    h, w = image.shape[1:]
    if (w, h) == tuple(size):
        return image
    return resize_boxes([image], [(0.0, 0.0, float(w), float(h))], size)[0]
