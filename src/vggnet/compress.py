"""Smaller VGG files: FC6/FC7 by truncated SVD, int8-stored weights (and the gap head, by fine-tuning).

Most of a VGG's weights sit in FC6 (25088 x 4096 in VGG16, 74% of its 138M parameters). A truncated
SVD keeps the r largest singular values of an FC layer: W ~ (U_r S_r) V_r^T, two layers of
r (in + out) weights instead of in x out (Fast R-CNN, section 3.1). The rank comes from `rank`, from
the fraction of the squared singular values to keep (`energy`), or from a target file size. int8
storage quarters every conv and FC weight (one scale per output channel; float32 again on load). The
third way, the gap head (no FC6/FC7 at all), needs training: `vggnet train DATA --init-from W --head gap`.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .model import VGG, count_parameters
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
    """Singular values, largest first, of the named FC layers' weight matrices."""
    return {name: torch.linalg.svdvals(_linear(model, name).weight.detach().float()) for name in layers}


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
        layer = _linear(model, name)
        u, s, vh = torch.linalg.svd(layer.weight.detach().double(), full_matrices=False)
        pair = LowRankLinear(layer.in_features, rank, layer.out_features).to(layer.weight.device)
        with torch.no_grad():
            pair[0].weight.copy_(vh[:rank])  # (r, in)
            pair[1].weight.copy_(u[:, :rank] * s[:rank])  # (out, r)
            pair[1].bias.copy_(layer.bias)
        out.classifier[model.classifier_names.index(name)] = pair
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
        return {n: rank_for_energy(s, energy) for n, s in singular_values(model, layers).items()}
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
) -> CompressReport:
    """Write a smaller copy of any weights `load_weights` reads: FC layers by truncated SVD and/or int8 storage.

    With none of rank, energy and target_size, only `int8` applies. The result loads with `load_weights`.
    """
    path = resolve_weights(src)
    if Path(dst).resolve() == path.resolve():
        raise ValueError(f"{dst}: the output would overwrite the input")
    model, meta = load_weights(path)
    if not has_classifier(model):
        raise ValueError(f"{path}: features-only weights have no FC6/FC7 to factorise")
    if has_low_rank(model):
        raise ValueError(f"{path}: these weights are already factorised")
    params_before = count_parameters(model)
    unknown = [n for n in layers if n not in FACTORISABLE]
    if unknown:
        raise ValueError(f"--layers {','.join(layers)}: {', '.join(unknown)} cannot be factorised; accepted: fc6, fc7")
    factorising = any(v is not None for v in (rank, energy, target_size))
    if not factorising and not int8:
        raise ValueError("nothing to do: give --rank, --energy or --target-size, and/or --int8")
    if factorising and model.cfg.head == "gap":
        raise ValueError(f"{path}: the gap head has no FC6/FC7 to factorise (--int8 still applies)")
    if model.cfg.head == "conv":
        model = model.to_head("fc").eval()  # the same numbers as matrices
    ranks, energies, whole, notes = {}, {}, [], []
    if factorising:
        chosen = choose_ranks(model, rank=rank, energy=energy, target_bytes=target_size, int8=int8, layers=layers)
        values = singular_values(model, tuple(chosen))
        for name, r in chosen.items():
            if r >= break_even(_linear(model, name)):
                whole.append(name)
                notes.append(
                    f"{name} kept whole: rank {r} is not below its break-even rank {break_even(_linear(model, name))}"
                )
                continue
            ranks[name] = r
            s2 = values[name].double() ** 2
            energies[name] = float(s2[:r].sum() / s2.sum())
        model = factorise(model, ranks) if ranks else model
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
