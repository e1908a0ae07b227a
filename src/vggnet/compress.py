"""Smaller VGG files: FC6/FC7 by truncated SVD, int8-stored weights (and the gap head, by fine-tuning).

Most of a VGG's weights sit in FC6 (25088 x 4096 in VGG16, 74% of its 138M parameters). A truncated
SVD keeps the r largest singular values of an FC layer: W ~ (U_r S_r) V_r^T, two layers of
r (in + out) weights instead of in x out (Fast R-CNN, section 3.1). The rank comes from `rank`, from
the fraction of the squared singular values to keep (`energy`), or from a target file size; the factors
come from the Gram matrix of the layer's smaller side (`low_rank.py`), not from an SVD of W itself. int8
storage quarters every conv and FC weight (one scale per output channel; float32 again on load). The
third way, the gap head (no FC6/FC7 at all), needs training: `vggnet train DATA --init-from W --head gap`.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .low_rank import LowRank, eigenvalues, factors, gram, low_rank, plan_cut
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


def singular_values(model: VGG, layers: tuple[str, ...] = FACTORISABLE) -> dict[str, torch.Tensor]:
    """All singular values, largest first (float64), of the named FC layers' weight matrices (from their Gram matrices)."""
    out = {}
    for name in layers:
        out[name] = eigenvalues(gram(_linear(model, name).weight)).sqrt()
    return out


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
        return {n: plan_cut(_linear(model, n).weight, energy=energy).rank for n in layers}  # no factors made
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
        limit, shape = break_even(layer), f"{name} {layer.out_features}x{layer.in_features}"
        if name in chosen and chosen[name] >= limit:
            whole.append(name)
            notes.append(f"{name} kept whole: rank {chosen[name]} is not below its break-even rank {limit}")
            continue
        cut = plan_cut(layer.weight, rank=chosen.get(name), energy=energy)  # the exact spectrum for --energy
        _release_freed_memory()
        if cut.rank >= limit:  # decided before any factor is made
            whole.append(name)
            notes.append(f"{name} kept whole: rank {cut.rank} is not below its break-even rank {limit}")
            _say(progress, f"{shape}: kept whole (rank {cut.rank} for {energy:.1%} of the energy)", start)
            continue
        pair = factors(layer.weight, cut, in_place=True)  # the model is ours: no second FC6-sized tensor
        del cut
        ranks[name], energies[name] = pair.rank, pair.energy
        _replace(model, name, pair)
        del layer, pair  # the layer's own weights go now, before the next layer's Gram matrix
        _release_freed_memory()
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


def _replace(model: VGG, name: str, low: LowRank) -> None:
    """Put a LowRankLinear holding the factors `low` (and the layer's bias) in place of the named Linear layer."""
    layer = _linear(model, name)
    with torch.device("meta"):  # no random init of weights that are replaced at once
        pair = LowRankLinear(layer.in_features, low.rank, layer.out_features)
    device = layer.weight.device
    pair[0].weight = nn.Parameter(low.first.to(device), requires_grad=layer.weight.requires_grad)  # (r, in)
    pair[1].weight = nn.Parameter(low.second.to(device), requires_grad=layer.weight.requires_grad)  # (out, r)
    pair[1].bias = nn.Parameter(layer.bias.detach().clone(), requires_grad=layer.bias.requires_grad)
    model.classifier[model.classifier_names.index(name)] = pair


def _release_freed_memory() -> None:
    """Give freed heap memory back to the system: glibc keeps freed blocks of up to 32 MB (the Gram matrix's
    block products, the iteration's temporaries) for reuse, and they would count again on top of the next layer."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL(None).malloc_trim(0)


def _say(progress: bool, text: str, since: float) -> None:
    if progress:
        print(f"{text} {time.perf_counter() - since:.1f} s", file=sys.stderr, flush=True)
