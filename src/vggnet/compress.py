"""Smaller VGG files: FC6/FC7 by truncated SVD, int8-stored weights (and the gap head, by fine-tuning).

Most of a VGG's weights sit in FC6 (25088 x 4096 in VGG16, 74% of its 138M parameters). A truncated
SVD keeps the r largest singular values of an FC layer: W ~ (U_r S_r) V_r^T, two layers of
r (in + out) weights instead of in x out (Fast R-CNN, section 3.1). The rank comes from `rank`, from
the fraction of the squared singular values to keep (`energy`), or from a target file size; the factors
come from the Gram matrix of the layer's smaller side (`low_rank`), not from an SVD of W itself. int8
storage quarters every conv and FC weight (one scale per output channel; float32 again on load). The
third way, the gap head (no FC6/FC7 at all), needs training: `vggnet train DATA --init-from W --head gap`.
"""

from __future__ import annotations

import copy
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .model import VGG, count_parameters
from .tables import human_bytes
from .weights import (
    LowRankLinear,
    has_classifier,
    has_low_rank,
    load_weights,
    resolve_weights,
    save_weights,
    stored_bytes,
)

FACTORISABLE = ("fc6", "fc7")  # FC8 holds one row per class: small, and it decides the top-1
# The factors come from the eigenvectors of the Gram matrix of W's smaller side (FC6: W W^T, 4096 x 4096),
# not from an SVD of W itself; the large ones from block subspace iteration (Halko, Martinsson & Tropp 2011,
# algorithm 4.4, on the Gram matrix). Flat spectra such as random weights' converge slowest; these settings
# keep the factors' Frobenius error within 1% of the exact truncated SVD's there (tests/test_compress.py).
POWER_ITERATIONS = 4  # products with the Gram matrix (eight with W)
OVERSAMPLING = 0.5  # extra directions iterated per direction kept
EXACT_SIDE = 1024  # a Gram matrix this small is decomposed whole: exact, and no slower than iterating
INITIAL_ENERGY_RANK = 256  # --energy starts from this many directions and doubles them until the energy is kept
GRAM_BLOCK = 1024  # rows and columns per block product when forming the Gram matrix


@dataclass
class LowRank:
    """W (out, in) ~ second @ first, its rank-r truncated SVD; `energy`: the share of ||W||_F^2 the product keeps."""

    first: torch.Tensor  # (r, in)
    second: torch.Tensor  # (out, r)
    energy: float

    @property
    def rank(self) -> int:
        return self.first.shape[0]


@dataclass
class CompressReport:
    """What `compress` did: ranks per layer, the squared singular values they keep, sizes before and after."""

    src: str
    dst: str
    ranks: dict[str, int]  # factorised layers and their ranks
    energy: dict[str, float]  # fraction of the squared singular values kept, per factorised layer
    kept_whole: list[str]  # layers whose rank would not have made them smaller
    int8: bool
    params_before: int
    params_after: int
    file_bytes_before: int
    file_bytes_after: int
    notes: list[str] = field(default_factory=list)


def gram(w: torch.Tensor) -> torch.Tensor:
    """W W^T, or W^T W when W has fewer columns than rows: the Gram matrix of the smaller side, in float64.

    Column blocks of float32 products summed in float64: no float64 copy of W (FC6's would be 822 MB), and
    only the blocks on and below the diagonal are multiplied (the matrix is symmetric).
    """
    rows = w.detach() if w.shape[0] <= w.shape[1] else w.detach().T  # (n, m), n <= m: a view
    n, m = rows.shape
    g = torch.zeros(n, n, dtype=torch.float64, device=w.device)
    for j in range(0, m, GRAM_BLOCK):
        chunk = rows[:, j : j + GRAM_BLOCK].float()
        for i in range(0, n, GRAM_BLOCK):
            for k in range(0, i + 1, GRAM_BLOCK):
                g[i : i + GRAM_BLOCK, k : k + GRAM_BLOCK] += chunk[i : i + GRAM_BLOCK] @ chunk[k : k + GRAM_BLOCK].T
    for i in range(0, n, GRAM_BLOCK):  # exactly symmetric: the blocks above the diagonal mirror those below
        diagonal = g[i : i + GRAM_BLOCK, i : i + GRAM_BLOCK]
        diagonal.copy_((diagonal + diagonal.T) / 2)
        for k in range(i + GRAM_BLOCK, n, GRAM_BLOCK):
            g[i : i + GRAM_BLOCK, k : k + GRAM_BLOCK] = g[k : k + GRAM_BLOCK, i : i + GRAM_BLOCK].T
    return g


def top_eigenpairs(g: torch.Tensor, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest eigenvalues (descending, float64) of a symmetric PSD matrix and their eigenvectors (n, k).

    Exact (a full decomposition) for small matrices and for k of half the side or more; otherwise block
    subspace iteration from a seeded random start, then Rayleigh-Ritz, so the values are Ritz values: each at
    most its eigenvalue, and the vectors span the directions a rank-(k / (1 + OVERSAMPLING)) cut keeps.
    """
    n = len(g)
    if not 1 <= k <= n:
        raise ValueError(f"top_eigenpairs: k={k} must be between 1 and the side {n}")
    if n <= EXACT_SIDE or 2 * k >= n:
        values, vectors = torch.linalg.eigh(g.double())
        return values.flip(0)[:k], vectors.flip(1)[:, :k]
    g32 = g.float()  # the iteration only has to find the subspace; float32 halves its cost
    x = torch.randn(n, k, generator=torch.Generator().manual_seed(seed)).to(g.device)
    for _ in range(POWER_ITERATIONS):
        x = torch.linalg.qr(g32 @ x).Q  # (n, k), orthonormal columns
    small = (x.T @ (g32 @ x)).double()  # (k, k): G restricted to the subspace
    values, rotation = torch.linalg.eigh((small + small.T) / 2)
    return values.flip(0), x.double() @ rotation.flip(1)


def low_rank(w: torch.Tensor, rank: int | None = None, energy: float | None = None) -> LowRank:
    """W (out, in) ~ second @ first through the r directions of its largest singular values (its truncated SVD).

    The rank is `rank`, or the smallest whose factors keep `energy` of W's sum of squared singular values.
    """
    if (rank is None) == (energy is None):
        raise ValueError("low_rank: give exactly one of rank and energy")
    if energy is not None and not 0 < energy <= 1:
        raise ValueError(f"--energy {energy}: a fraction in (0, 1]")
    left = w.shape[0] <= w.shape[1]  # the Gram matrix W W^T (eigenvectors U) or W^T W (eigenvectors V)
    g = gram(w)
    n, total = len(g), float(g.trace())
    if rank is not None:
        if not 1 <= rank <= n:
            raise ValueError(f"--rank {rank}: must be between 1 and {n} for a {w.shape[0]}x{w.shape[1]} layer")
        values, vectors = top_eigenpairs(g, _with_oversampling(rank, n))
    else:
        assert energy is not None
        k = n if n <= EXACT_SIDE else _with_oversampling(INITIAL_ENERGY_RANK, n)
        while True:  # twice the directions until those kept reach the energy (exact once k is the side)
            k = n if 2 * k >= n else k
            values, vectors = top_eigenpairs(g, k)
            usable = k if k == n else int(k / (1 + OVERSAMPLING))  # the last directions iterated converge least
            kept = torch.cumsum(values[:usable].clamp(min=0), 0) / max(total, 1e-300)
            reached = torch.nonzero(kept >= energy - 1e-12)
            if len(reached) or k == n:
                rank = int(reached[0]) + 1 if len(reached) else n
                break
            k *= 2
    del g
    basis = vectors[:, :rank].float()  # (n, r), orthonormal columns
    w = w.detach().float()
    if left:
        first, second = basis.T @ w, basis.contiguous()  # (r, in) = S_r V_r^T, (out, r) = U_r
        kept_part = first
    else:
        first, second = basis.T.contiguous(), w @ basis  # (r, in) = V_r^T, (out, r) = U_r S_r
        kept_part = second
    # the factors span an orthonormal basis, so the energy they keep is the squared norm of the projection
    # (summed in float64 a block of rows at a time: a float64 copy of FC6's first factor would be 206 MB)
    kept = sum(float(rows.double().square().sum()) for rows in kept_part.split(GRAM_BLOCK))
    kept_energy = kept / total if total > 0 else 1.0
    return LowRank(first=first, second=second, energy=kept_energy)


def singular_values(model: VGG, layers: tuple[str, ...] = FACTORISABLE) -> dict[str, torch.Tensor]:
    """All singular values, largest first (float64), of the named FC layers' weight matrices (from their Gram matrices)."""
    out = {}
    for name in layers:
        values = torch.linalg.eigvalsh(gram(_linear(model, name).weight))
        out[name] = values.flip(0).clamp(min=0).sqrt()
    return out


def rank_for_energy(s: torch.Tensor, energy: float) -> int:
    """The smallest r whose r largest singular values hold `energy` of the sum of squares."""
    if not 0 < energy <= 1:
        raise ValueError(f"--energy {energy}: a fraction in (0, 1]")
    kept = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum()
    return int(torch.searchsorted(kept, torch.tensor(energy, dtype=torch.float64) - 1e-12)) + 1


def break_even(layer: nn.Linear) -> int:
    """The rank at which two factors hold as many weights as the layer: in x out / (in + out)."""
    return layer.in_features * layer.out_features // (layer.in_features + layer.out_features)


def factorise(model: VGG, ranks: dict[str, int]) -> VGG:
    """A copy of `model` with the named FC layers replaced by their rank-r truncated SVD (fc head only)."""
    if model.cfg.head != "fc":
        raise ValueError(f"factorising needs the fc head; this VGG has the {model.cfg.head} head")
    out = copy.deepcopy(model)
    for name, rank in ranks.items():
        _replace(out, name, low_rank(_linear(out, name).weight, rank=rank))
    return out.eval()


def choose_ranks(
    model: VGG,
    *,
    rank: int | None = None,
    energy: float | None = None,
    target_bytes: int | None = None,
    int8: bool = False,
    layers: tuple[str, ...] = FACTORISABLE,
) -> dict[str, int]:
    """The rank of each layer from exactly one of: a rank, an energy fraction, a target size of the stored tensors.

    A target size gives every layer the same rank, the largest that fits.
    """
    if sum(v is not None for v in (rank, energy, target_bytes)) != 1:
        raise ValueError("give exactly one of --rank, --energy or --target-size")
    if rank is not None:
        if rank < 1:
            raise ValueError(f"--rank {rank}: must be at least 1")
        return dict.fromkeys(layers, rank)
    if energy is not None:
        return {n: low_rank(_linear(model, n).weight, energy=energy).rank for n in layers}
    assert target_bytes is not None
    fixed = stored_bytes(_state_without(model, layers), int8)
    per_rank = sum(_bytes_per_rank(_linear(model, n), int8) for n in layers)
    biases = sum(
        _linear(model, n).out_features * 4 + (_linear(model, n).out_features * 4 if int8 else 0) for n in layers
    )
    r = (target_bytes - fixed - biases) // per_rank
    if r < 1:
        smallest = fixed + biases + per_rank
        raise ValueError(
            f"--target-size {target_bytes:,} bytes is below the smallest this VGG can be ({smallest:,} bytes at rank 1)"
        )
    return dict.fromkeys(layers, int(r))


def compress(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    rank: int | None = None,
    energy: float | None = None,
    target_size: int | None = None,
    int8: bool = False,
    layers: tuple[str, ...] = FACTORISABLE,
    progress: bool = False,
) -> CompressReport:
    """Write a smaller copy of any weights `load_weights` reads: FC layers by truncated SVD and/or int8 storage.

    With none of rank, energy and target_size, only `int8` applies. The result loads with `load_weights`.
    `progress`: one line on stderr per step (reading, each layer, writing) with its seconds.
    """
    unknown = [n for n in layers if n not in FACTORISABLE]
    if unknown:
        raise ValueError(f"--layers {','.join(layers)}: {', '.join(unknown)} cannot be factorised; accepted: fc6, fc7")
    factorising = any(v is not None for v in (rank, energy, target_size))
    if not factorising and not int8:
        raise ValueError("nothing to do: give --rank, --energy or --target-size, and/or --int8")
    if rank is not None and rank < 1:
        raise ValueError(f"--rank {rank}: must be at least 1")
    if energy is not None and not 0 < energy <= 1:
        raise ValueError(f"--energy {energy}: a fraction in (0, 1]")
    path = resolve_weights(src)
    if Path(dst).resolve() == path.resolve():
        raise ValueError(f"{dst}: the output would overwrite the input")
    start = time.perf_counter()
    model, meta = load_weights(path)
    if not has_classifier(model):
        raise ValueError(f"{path}: features-only weights have no FC6/FC7 to factorise")
    if has_low_rank(model):
        raise ValueError(f"{path}: these weights are already factorised")
    if factorising and model.cfg.head == "gap":
        raise ValueError(f"{path}: the gap head has no FC6/FC7 to factorise (--int8 still applies)")
    if model.cfg.head == "conv":
        model = model.to_head("fc").eval()  # the same numbers as matrices
    chosen = {}
    if rank is not None or target_size is not None:
        chosen = choose_ranks(model, rank=rank, target_bytes=target_size, int8=int8, layers=layers)
    params_before = count_parameters(model)
    _say(progress, f"read {path} ({human_bytes(path.stat().st_size)})", start)
    ranks, energies, whole, notes = {}, {}, [], []
    for name in layers if factorising else ():
        start, layer = time.perf_counter(), _linear(model, name)
        limit = break_even(layer)
        if name in chosen and chosen[name] >= limit:
            whole.append(name)
            notes.append(f"{name} kept whole: rank {chosen[name]} is not below its break-even rank {limit}")
            continue
        factors = low_rank(layer.weight, rank=chosen.get(name), energy=energy)
        shape = f"{name} {layer.out_features}x{layer.in_features}"
        if factors.rank >= limit:
            whole.append(name)
            notes.append(f"{name} kept whole: rank {factors.rank} is not below its break-even rank {limit}")
            _say(progress, f"{shape}: kept whole (rank {factors.rank} for {energy:.1%} of the energy)", start)
            del factors
            continue
        ranks[name], energies[name] = factors.rank, factors.energy
        _replace(model, name, factors)
        del layer, factors  # the layer's own weights go now, before the next layer's Gram matrix
        _say(progress, f"{shape}: rank {ranks[name]} ({energies[name]:.1%} energy)", start)
    start = time.perf_counter()
    extra = {**meta.extra, "compression": {"low_rank": ranks, "energy": energies, "int8": int8, "from": str(path)}}
    save_weights(
        model,
        dst,
        preprocessing=meta.preprocessing,
        class_names=meta.class_names,
        source=meta.source,
        extra=extra,
        int8=int8,
    )
    _say(progress, f"wrote {dst} ({human_bytes(Path(dst).stat().st_size)}{', int8' if int8 else ''})", start)
    return CompressReport(
        src=str(path),
        dst=str(dst),
        ranks=ranks,
        energy=energies,
        kept_whole=whole,
        int8=int8,
        params_before=params_before,
        params_after=count_parameters(model),
        file_bytes_before=path.stat().st_size,
        file_bytes_after=Path(dst).stat().st_size,
        notes=notes,
    )


def parse_size(text: str) -> int:
    """Bytes from "100MB", "1.5 GB", "500k", "2000000" (decimal units; MiB/GiB binary)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?)b?\s*", text.lower())
    if not m:
        raise ValueError(f"--target-size {text!r}: expected a size such as 100MB, 1.5GB or 250MiB")
    units = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
    return int(float(m.group(1)) * units[m.group(2)])


def _linear(model: VGG, name: str) -> nn.Linear:
    layer = model.classifier[model.classifier_names.index(name)]
    if not isinstance(layer, nn.Linear):
        raise ValueError(f"{name} is a {type(layer).__name__}, not a Linear layer")
    return layer


def _state_without(model: VGG, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
    prefixes = tuple(f"classifier.{model.classifier_names.index(n)}." for n in layers)
    return {k: v for k, v in model.state_dict().items() if not k.startswith(prefixes)}


def _bytes_per_rank(layer: nn.Linear, int8: bool) -> int:
    """Stored bytes one unit of rank adds to a factorised layer: a row of V^T and a column of U S (and a scale)."""
    if int8:
        return layer.in_features + layer.out_features + 4  # the first factor gains one output channel: one scale
    return 4 * (layer.in_features + layer.out_features)


def _replace(model: VGG, name: str, factors: LowRank) -> None:
    """Put a LowRankLinear holding `factors` (and the layer's bias) in place of the named Linear layer."""
    layer = _linear(model, name)
    with torch.device("meta"):  # no random init of weights that are replaced at once
        pair = LowRankLinear(layer.in_features, factors.rank, layer.out_features)
    device = layer.weight.device
    pair[0].weight = nn.Parameter(factors.first.to(device), requires_grad=layer.weight.requires_grad)  # (r, in)
    pair[1].weight = nn.Parameter(factors.second.to(device), requires_grad=layer.weight.requires_grad)  # (out, r)
    pair[1].bias = nn.Parameter(layer.bias.detach().clone(), requires_grad=layer.bias.requires_grad)
    model.classifier[model.classifier_names.index(name)] = pair


def _with_oversampling(rank: int, side: int) -> int:
    return min(side, math.ceil(rank * (1 + OVERSAMPLING)))


def _say(progress: bool, text: str, since: float) -> None:
    if progress:
        print(f"{text} {time.perf_counter() - since:.1f} s", file=sys.stderr, flush=True)
