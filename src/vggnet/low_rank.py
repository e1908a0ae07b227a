"""The truncated SVD of a large FC layer, W (out, in) ~ second @ first, from the Gram matrix of its smaller side.

An SVD of W itself (FC6: 4096 x 25088) is slow; the Gram matrix (FC6: W W^T, 4096 x 4096) has W's squared
singular values as eigenvalues and its singular vectors on that side as eigenvectors. `plan_cut` forms it and
settles the rank (from the exact eigenvalues when an energy fraction asks for one), so a caller can keep a layer
whole before any factor is made; `factors` then finds the directions kept, once, at that rank:
- a rank under a third of the side: block subspace iteration (Halko, Martinsson & Tropp 2011, algorithm 4.4);
- over two thirds: a Chebyshev filter finds the few directions dropped instead, and its error is checked
  against the exact eigenvalues (the dropped ones' sum is the best rank-r error, Eckart-Young);
- in between, on small matrices, or when that check fails: the whole decomposition.
Flat spectra such as random weights' converge slowest; these settings keep the factors' Frobenius error within
1% of the exact truncated SVD's there (tests/test_compress.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

POWER_ITERATIONS = 4  # products with the Gram matrix (eight with W)
OVERSAMPLING = 0.5  # extra directions iterated per direction kept (or dropped)
FILTER_DEGREE = 24  # Chebyshev degree of the filter that finds the dropped directions
FILTER_SEGMENT = 12  # degrees between two orthonormalisations of the filtered block (float32 keeps its digits)
ERROR_BOUND = 1.01  # the filtered factors' Frobenius error over the exact truncated SVD's, at most
FILTER_GROWTH = 100  # the filter is tried where it lifts the median dropped direction this much over the kept
EXACT_SIDE = 1024  # a Gram matrix this small is decomposed whole: exact, and no slower than iterating
GRAM_BLOCK = 1024  # rows per block product when forming the Gram matrix (columns: four times as many)


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
class Cut:
    """Where a truncated SVD of W cuts: the rank, and what finding its factors needs (the Gram matrix goes then)."""

    rank: int
    gram: torch.Tensor | None  # (n, n) float64, n = W's smaller side
    values: torch.Tensor | None  # every eigenvalue of `gram`, largest first, where they were needed
    total: float  # ||W||_F^2, the trace of `gram`


def gram(w: torch.Tensor) -> torch.Tensor:
    """W W^T, or W^T W when W has fewer columns than rows: the Gram matrix of the smaller side, in float64.

    Column blocks of float32 products summed in float64: no float64 copy of W (FC6's would be 822 MB), and
    only the blocks on and below the diagonal are multiplied (the matrix is symmetric).
    """
    rows = w.detach() if w.shape[0] <= w.shape[1] else w.detach().T  # (n, m), n <= m: a view
    n, m = rows.shape
    g = torch.zeros(n, n, dtype=torch.float64, device=w.device)
    for j in range(0, m, 4 * GRAM_BLOCK):
        chunk = rows[:, j : j + 4 * GRAM_BLOCK].float()  # (n, 4 * GRAM_BLOCK)
        for i in range(0, n, GRAM_BLOCK):  # a band of rows, up to the diagonal
            g[i : i + GRAM_BLOCK, : i + GRAM_BLOCK] += chunk[i : i + GRAM_BLOCK] @ chunk[: i + GRAM_BLOCK].T
    for i in range(0, n, GRAM_BLOCK):  # exactly symmetric: the blocks above the diagonal mirror those below
        diagonal = g[i : i + GRAM_BLOCK, i : i + GRAM_BLOCK]
        diagonal.copy_((diagonal + diagonal.T) / 2)
        g[i : i + GRAM_BLOCK, i + GRAM_BLOCK :] = g[i + GRAM_BLOCK :, i : i + GRAM_BLOCK].T
    return g


def eigenvalues(g: torch.Tensor) -> torch.Tensor:
    """Every eigenvalue of a Gram matrix, largest first (float64; rounding's negatives set to 0): W's s_i^2."""
    return torch.linalg.eigvalsh(g).flip(0).clamp(min=0)


def rank_for_energy(s: torch.Tensor, energy: float) -> int:
    """The smallest r whose r largest singular values hold `energy` of the sum of squares."""
    if not 0 < energy <= 1:
        raise ValueError(f"--energy {energy}: a fraction in (0, 1]")
    kept = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum()
    return min(len(s), int(torch.searchsorted(kept, torch.tensor(energy, dtype=torch.float64) - 1e-12)) + 1)


def plan_cut(w: torch.Tensor, rank: int | None = None, energy: float | None = None) -> Cut:
    """The Gram matrix of W and the rank: `rank`, or the smallest whose exact singular values keep `energy`."""
    if (rank is None) == (energy is None):
        raise ValueError("low_rank: give exactly one of rank and energy")
    if energy is not None and not 0 < energy <= 1:
        raise ValueError(f"--energy {energy}: a fraction in (0, 1]")
    n = min(w.shape)
    if rank is not None and not 1 <= rank <= n:
        raise ValueError(f"--rank {rank}: must be between 1 and {n} for a {w.shape[0]}x{w.shape[1]} layer")
    g = gram(w)
    values = None
    if energy is not None:
        values = eigenvalues(g)
        rank = rank_for_energy(values.sqrt(), energy)
    assert rank is not None
    return Cut(rank=rank, gram=g, values=values, total=float(g.trace()))


def factors(w: torch.Tensor, cut: Cut, in_place: bool = False) -> LowRank:
    """W's rank-`cut.rank` truncated SVD as two factors; `cut.gram` is released before W is projected.

    `in_place` (W float32 with no more rows than columns): the first factor is written over W's first rows, a
    block of columns at a time, and shares W's memory (no second FC6-sized tensor); W is not W any more.
    """
    assert cut.gram is not None, "factors: this cut's Gram matrix was already used"
    basis = kept_basis(cut.gram, cut.rank, cut.values)  # (n, r) float32, orthonormal columns
    cut.gram = None  # FC6's: 128 MB, no longer needed
    w = w.detach().float()
    if w.shape[0] <= w.shape[1]:  # the Gram matrix was W W^T: the basis is U_r
        if in_place and w.dtype == torch.float32 and w.is_contiguous():
            for j in range(0, w.shape[1], GRAM_BLOCK):  # rows :r of W, a contiguous prefix of its memory
                w[: cut.rank, j : j + GRAM_BLOCK] = basis.T @ w[:, j : j + GRAM_BLOCK]
            first = w[: cut.rank]  # (r, in) = S_r V_r^T
            if 2 * cut.rank <= len(w):  # a small rank: its own copy, so that W's memory goes with the layer
                first = first.clone()
        else:
            first = basis.T @ w
        second = basis.contiguous()  # (out, r) = U_r
        kept_part = first
    else:  # W^T W: the basis is V_r
        first, second = basis.T.contiguous(), w @ basis  # (r, in) = V_r^T, (out, r) = U_r S_r
        kept_part = second
    # the factors span an orthonormal basis, so the energy they keep is the squared norm of the projection
    # (summed in float64 a few rows at a time: no float64 copy of a whole factor)
    kept = sum(float(rows.double().square().sum()) for rows in kept_part.split(GRAM_BLOCK // 8))
    return LowRank(first=first, second=second, energy=kept / cut.total if cut.total > 0 else 1.0)


def low_rank(w: torch.Tensor, rank: int | None = None, energy: float | None = None) -> LowRank:
    """W (out, in) ~ second @ first through the r directions of its largest singular values (its truncated SVD).

    The rank is `rank`, or the smallest whose factors keep `energy` of W's sum of squared singular values.
    """
    return factors(w, plan_cut(w, rank=rank, energy=energy))


def kept_basis(g: torch.Tensor, rank: int, values: torch.Tensor | None = None) -> torch.Tensor:
    """Orthonormal columns (n, rank), float32, spanning the eigenvectors of the `rank` largest eigenvalues of g.

    g may be overwritten: the whole decomposition works in its memory.
    """
    n, dropped = len(g), len(g) - rank
    if n > EXACT_SIDE and 2 * _with_oversampling(rank, n) < n:
        return top_eigenpairs(g, _with_oversampling(rank, n))[1][:, :rank].float()
    if n > EXACT_SIDE and 0 < dropped and 2 * _with_oversampling(dropped, n) < n:
        values = eigenvalues(g) if values is None else values
        found = dropped_directions(g, values, rank) if _filter_growth(values, rank) >= FILTER_GROWTH else None
        if found is not None:  # the kept directions: the complement of the dropped ones
            return _complement(found.float(), rank)
    return _eigenvectors_in_place(g)[:, dropped:].flip(1).float()


def _complement(dropped: torch.Tensor, rank: int, seed: int = 0) -> torch.Tensor:
    """Orthonormal columns (n, rank) orthogonal to `dropped`'s: a seeded random block with those directions removed.

    Not the trailing columns of a complete QR: those are near the unit vectors, and int8 storage, one scale per
    row of U, would lose the small entries next to each row's one large entry.
    """
    x = torch.randn(len(dropped), rank, generator=torch.Generator().manual_seed(seed)).to(dropped.device)
    x -= dropped @ (dropped.T @ x)
    return torch.linalg.qr(x).Q


def _eigenvectors_in_place(g: torch.Tensor) -> torch.Tensor:
    """All eigenvectors of a symmetric g (columns, ascending eigenvalues), written over g's own memory.

    torch's eigh copies g beside its workspace; LAPACK's dsyevd through scipy overwrites it (FC6's: 128 MB less).
    """
    if g.device.type != "cpu" or g.dtype != torch.float64 or not g.is_contiguous():
        return torch.linalg.eigh(g).eigenvectors
    from scipy.linalg import lapack  # scikit-learn's dependency; imported here, where it is needed

    # g is symmetric, so its row-major memory read column-major (Fortran order, LAPACK's) is g again
    _, vectors, info = lapack.dsyevd(g.numpy().T, compute_v=1, lower=1, overwrite_a=1)
    if info != 0:
        raise RuntimeError(f"dsyevd failed on a {len(g)}x{len(g)} Gram matrix (info {info})")
    return torch.from_numpy(vectors)


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


def dropped_directions(g: torch.Tensor, values: torch.Tensor, rank: int, seed: int = 0) -> torch.Tensor | None:
    """Orthonormal columns (n, n - rank), float64, spanning what a rank-`rank` cut of g drops; None if too far off.

    A Chebyshev polynomial of g, at most 1 on the kept eigenvalues [values[rank - 1], values[0]] and growing
    below them, filters a seeded random block; Rayleigh-Ritz picks the smallest directions. The cut's squared
    error is the sum of g's Rayleigh quotients on them, the best possible the sum of the dropped eigenvalues:
    the result is returned only when its error is within ERROR_BOUND of the exact truncated SVD's.
    """
    n, dropped = len(g), len(g) - rank
    low, high = float(values[rank - 1]), float(values[0])
    center, half = (high + low) / 2, max((high - low) / 2, 1e-30 * high, 1e-300)
    g32 = g.float()

    def mapped(y: torch.Tensor) -> torch.Tensor:  # (g - center) / half: the kept eigenvalues into [-1, 1]
        return (g32 @ y).sub_(y, alpha=center).div_(half)

    x = torch.randn(n, _with_oversampling(dropped, n), generator=torch.Generator().manual_seed(seed)).to(g.device)
    for _ in range(max(1, FILTER_DEGREE // FILTER_SEGMENT)):
        x = torch.linalg.qr(x).Q
        previous, x = x, mapped(x)  # T_0 and T_1 of the block
        for _ in range(FILTER_SEGMENT - 1):
            previous, x = x, mapped(x).mul_(2).sub_(previous)  # T_{d+1} = 2 t T_d - T_{d-1}
    x = torch.linalg.qr(x).Q
    small = (x.T @ (g32 @ x)).double()  # (k, k): g restricted to the filtered block
    ritz, rotation = torch.linalg.eigh((small + small.T) / 2)  # ascending
    error, best = float(ritz[:dropped].clamp(min=0).sum()), float(values[rank:].sum())
    if error > ERROR_BOUND**2 * best:
        return None
    return x.double() @ rotation[:, :dropped]


def _filter_growth(values: torch.Tensor, rank: int) -> float:
    """|T_d| of `dropped_directions`' filter at the median dropped eigenvalue (1 at most on the kept ones)."""
    low, high = float(values[rank - 1]), float(values[0])
    t = abs(2 * float(values[(rank + len(values)) // 2]) - high - low) / max(high - low, 1e-300)
    return math.cosh(min(700.0, FILTER_DEGREE * math.acosh(max(t, 1.0))))


def _with_oversampling(rank: int, side: int) -> int:
    return min(side, math.ceil(rank * (1 + OVERSAMPLING)))
