"""The testing protocol of section 3.2 as a ladder of small functions, each giving softmax posteriors.

For images already rescaled to one test scale Q, as (3, H, W) uint8 tensors:

- `center`:    one centred crop of the input size (torchvision's single-crop baseline)
- `dense`:     the whole image through the fully convolutional net, class score map averaged
- `multicrop`: crops of the input size on a grid x grid regular grid, corners included

each optionally averaged with its mirror image; `method_posteriors` picks one by name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from ..configs import EVAL_METHODS, EvalConfig
from ..model import VGG
from ..weights import Preprocessing


def method_text(method: str, grid: int, flip: bool) -> str:
    """The evaluation method in words: "dense, flip", "multi-crop 5x5 (50/scale), flip", "centre crop"."""
    crops_per_scale = grid**2 * (2 if flip else 1)
    names = {
        "center": "centre crop",
        "dense": "dense",
        "multicrop": f"multi-crop {grid}x{grid} ({crops_per_scale}/scale)",
        "dense+multicrop": f"multi-crop {grid}x{grid} & dense",
    }
    return names[method] + (", flip" if flip else "")


def protocol_text(cfg: EvalConfig, scales: Sequence[int], crop: int) -> str:
    """What produced a posterior, in words: "dense, Q=256, flip", "224x224 centre crop, Q=256", ...

    `scales`: the test scales Q (shorter image side) averaged over; `crop`: the network's input size.
    """
    method = method_text(cfg.method, cfg.grid, cfg.flip).removesuffix(", flip")  # the flip goes last
    if cfg.method == "center":
        method = f"{crop}x{crop} {method}"
    return f"{method}, Q={','.join(map(str, scales))}" + (", flip" if cfg.flip else "")


def crop_offset(length: int, size: int, fraction: float) -> int:
    """Offset of a crop of `size` at `fraction` (0: first, 0.5: centre, 1: last) along `length`."""
    return int((length - size) * fraction + 0.5)


def grid_positions(height: int, width: int, size: int, n: int = 5) -> list[tuple[int, int]]:
    """(top, left) of n x n crops of side `size` on a regular grid, corners included, row by row.

    n = 1 is the centre crop.
    """
    if n < 1:
        raise ValueError(f"crop grid must be at least 1x1, got {n}")
    if min(height, width) < size:
        raise ValueError(f"image {height}x{width} is smaller than the {size}x{size} crop")
    fractions = [i / (n - 1) for i in range(n)] if n > 1 else [0.5]
    return [(crop_offset(height, size, fy), crop_offset(width, size, fx)) for fy in fractions for fx in fractions]


# -- the ladder: posteriors (N, classes) of images at one scale ----------------------------------


def softmax_posteriors(
    model: VGG, pre: Preprocessing, x: torch.Tensor, flip: bool = False, dense: bool = False
) -> torch.Tensor:
    """Posteriors of a uint8 batch (N, 3, H, W); the mirror's averaged in with `flip`; dense: score map mean."""
    device = next(model.parameters()).device
    x = pre(x.to(device).float() / 255.0)
    n = x.shape[0]
    if flip:
        x = torch.cat([x, x.flip(-1)])
    x = x.contiguous(memory_format=torch.channels_last)
    # Dense: the class score map (N, classes, h, w) is averaged spatially before the softmax (section 3.2).
    logits = model.score_map(x).mean(dim=(2, 3)) if dense else model(x)
    p = logits.float().softmax(dim=1)
    if flip:
        p = (p[:n] + p[n:]) / 2
    return p.cpu()


def crops(
    model: VGG, images: Sequence[torch.Tensor], pre: Preprocessing, grid: int, flip: bool = False, batch_size: int = 32
) -> torch.Tensor:
    """Mean posterior over grid x grid crops of the network's input size per image; batched across images."""
    size = model.cfg.input_size
    jobs = [
        (i, t, lft) for i, im in enumerate(images) for t, lft in grid_positions(im.shape[1], im.shape[2], size, grid)
    ]
    per = max(1, batch_size // 2 if flip else batch_size)
    total: torch.Tensor | None = None
    for start in range(0, len(jobs), per):
        part = jobs[start : start + per]
        x = torch.stack([images[i][:, t : t + size, lft : lft + size] for i, t, lft in part])
        p = softmax_posteriors(model, pre, x, flip)
        total = torch.zeros(len(images), p.shape[1]) if total is None else total
        total.index_add_(0, torch.tensor([i for i, _, _ in part]), p)
    assert total is not None
    return total / (grid * grid)


def center(
    model: VGG, images: Sequence[torch.Tensor], pre: Preprocessing, flip: bool = False, batch_size: int = 32
) -> torch.Tensor:
    """One centre crop of the input size per image (resize + centre crop, torchvision's baseline)."""
    return crops(model, images, pre, 1, flip, batch_size)


def multicrop(
    model: VGG,
    images: Sequence[torch.Tensor],
    pre: Preprocessing,
    flip: bool = False,
    batch_size: int = 32,
    grid: int = 5,
) -> torch.Tensor:
    """Crops on a 5x5 regular grid, with flips 50 per scale (section 3.2); posteriors averaged."""
    return crops(model, images, pre, grid, flip, batch_size)


def dense(
    model: VGG, images: Sequence[torch.Tensor], pre: Preprocessing, flip: bool = False, batch_size: int = 32
) -> torch.Tensor:
    """The uncropped images through the fully convolutional net, score maps averaged (section 3.2).

    Images of equal size share a forward pass; each holds as many pixels as `batch_size` crops.
    """
    size = model.cfg.input_size
    budget = batch_size * size * size // (2 if flip else 1)
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, im in enumerate(images):
        groups[tuple(im.shape)].append(i)
    out: torch.Tensor | None = None
    for shape, members in groups.items():
        per = max(1, budget // (shape[1] * shape[2]))
        for start in range(0, len(members), per):
            idx = members[start : start + per]
            p = softmax_posteriors(model, pre, torch.stack([images[i] for i in idx]), flip, dense=True)
            out = torch.zeros(len(images), p.shape[1]) if out is None else out
            out[idx] = p
    assert out is not None
    return out


def method_posteriors(model: VGG, images: Sequence[torch.Tensor], pre: Preprocessing, cfg: EvalConfig) -> torch.Tensor:
    """Posteriors of cfg.method at one scale; dense+multicrop averages the two (section 3.2, Table 5)."""
    if cfg.method == "center":
        return center(model, images, pre, cfg.flip, cfg.batch_size)
    if cfg.method == "dense":
        return dense(model, images, pre, cfg.flip, cfg.batch_size)
    if cfg.method == "multicrop":
        return multicrop(model, images, pre, cfg.flip, cfg.batch_size, cfg.grid)
    if cfg.method == "dense+multicrop":
        d = dense(model, images, pre, cfg.flip, cfg.batch_size)
        return (d + multicrop(model, images, pre, cfg.flip, cfg.batch_size, cfg.grid)) / 2
    raise ValueError(f"unknown method {cfg.method!r}; accepted: {', '.join(EVAL_METHODS)}")
