"""Reading built models as the report draws them: Table 1 columns, units (a layer with its BN/ReLU/dropout) and blocks.

Everything here works on models built on the meta device (shapes only) and needs no plotting library.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from ..analysis import LayerInfo, layer_table, totals
from ..configs import TABLE1, weight_layers
from ..model import VGG, build

INPUT = 224  # the paper's training crop (section 3.1)
FEATURED = ("D", "E")  # the paper's best nets, VGG16 and VGG19
STACK_DEPTHS = (2, 3, 4)  # n stacked 3x3 convs: receptive fields 5, 7, 9
CHANNELS = (64, 128, 256, 512)  # the widths VGG uses
HEADS_COMPARED = ("fc", "conv", "gap")
SHALLOW_PAIRS = (("B", "B-5x5"), ("D", "D-7x7"))  # section 4.1: stacked 3x3 convs against one large kernel


def meta_model(name: str, head: str = "fc") -> VGG:
    """A VGG holding shapes only (meta device): analysis without memory or init cost."""
    with torch.device("meta"):
        return build(name, head=head)


def modules_by_name(model: VGG) -> dict[str, nn.Module]:
    """Each layer_table row name -> its module."""
    named = dict(zip(model.feature_names, model.features, strict=True))
    named.update(zip(model.classifier_names, model.classifier, strict=True))
    if hasattr(model, "avgpool"):
        named["avgpool"] = named["gap"] = model.avgpool
    return named


@dataclass
class Net:
    """A model with its layer_table rows and what each row is."""

    name: str
    model: VGG
    rows: list[LayerInfo]
    kinds: dict[str, str | None] = field(default_factory=dict)  # row name -> drawing kind

    def __post_init__(self) -> None:
        self.kinds = {n: module_kind(m, n) for n, m in modules_by_name(self.model).items()}

    @classmethod
    def build(cls, name: str, head: str = "fc") -> Net:
        """Build `name` on the meta device and tabulate it at the paper's input size."""
        model = meta_model(name, head)
        return cls(model.cfg.display_name(), model, layer_table(model, INPUT))

    def kind(self, r: LayerInfo) -> str | None:
        """Drawing kind of a row (None for ReLU, BN, dropout)."""
        return self.kinds[r.name]

    def feature_rows(self) -> list[LayerInfo]:
        """Convs, LRN and pools of the conv stack, in order."""
        names = set(self.model.feature_names)
        return [r for r in self.rows if r.name in names and self.kind(r) is not None]

    def weight_rows(self) -> list[LayerInfo]:
        """Layers with weights (convs and FC)."""
        return [r for r in self.rows if r.kind in ("Conv2d", "Linear")]

    def memory_rows(self) -> list[LayerInfo]:
        """Layers whose output is a new tensor (ReLU works in place; BN and dropout keep the shape)."""
        return [r for r in self.rows if self.kind(r) is not None]

    def split_head(self) -> tuple[dict[str, int], dict[str, int]]:
        """Totals of the conv stack and of everything after it (pooling and classifier)."""
        names = set(self.model.feature_names)
        return totals([r for r in self.rows if r.name in names]), totals([r for r in self.rows if r.name not in names])


def module_kind(m: nn.Module, name: str = "") -> str | None:
    """Drawing kind of a main layer; None for layers folded into the one before (ReLU, BN, dropout)."""
    if name.startswith("fc") and isinstance(m, (nn.Linear, nn.Conv2d)):
        return "fc"  # the conv head's FC layers are convolutions
    if isinstance(m, nn.Conv2d):
        return "conv1x1" if m.kernel_size[0] == 1 else "conv"
    if isinstance(m, (nn.MaxPool2d, nn.AdaptiveAvgPool2d)):
        return "pool"
    if isinstance(m, nn.LocalResponseNorm):
        return "lrn"
    if isinstance(m, nn.Linear):
        return "fc"
    return None


def module_label(m: nn.Module, in_classifier: bool = False) -> str:
    """The paper's notation: conv3-64, conv1-512, maxpool, LRN, FC-4096."""
    if isinstance(m, nn.Linear):
        return f"FC-{m.out_features}"
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0]
        return f"FC-{m.out_channels} as conv{k}" if in_classifier else f"conv{k}-{m.out_channels}"
    if isinstance(m, nn.MaxPool2d):
        return "maxpool"
    if isinstance(m, nn.AdaptiveAvgPool2d):
        size = m.output_size if isinstance(m.output_size, int) else m.output_size[0]
        return "global avgpool" if size == 1 else f"avgpool to {size}×{size}"
    if isinstance(m, nn.LocalResponseNorm):
        return "LRN"
    return {nn.ReLU: "ReLU", nn.BatchNorm2d: "BN", nn.Dropout: "dropout"}.get(type(m), type(m).__name__)


@dataclass
class Column:
    """One column of Table 1, read off a built model."""

    name: str
    weight_layers: int
    blocks: list[list[str]]  # conv-stack labels between max-pools
    head: list[str]  # FC-4096, FC-4096, FC-1000
    added: list[list[bool]] = field(default_factory=list)  # per label: new relative to the column on the left


def table1_columns() -> list[Column]:
    """Every configuration as a Table 1 column; `added` marks the paper's bold layers."""
    columns: list[Column] = []
    for letter in TABLE1:
        model = meta_model(letter)
        blocks: list[list[str]] = [[]]
        for m in model.features:
            if isinstance(m, nn.MaxPool2d):
                blocks.append([])
            elif module_kind(m) is not None:
                blocks[-1].append(module_label(m))
        head = [module_label(m) for m in model.classifier if isinstance(m, nn.Linear)]
        columns.append(Column(letter, weight_layers(letter), blocks[:-1], head))
    for prev, col in zip([None, *columns], columns, strict=False):
        col.added = [added_layers(prev.blocks[b] if prev else block, block) for b, block in enumerate(col.blocks)]
    return columns


def added_layers(before: list[str], after: list[str]) -> list[bool]:
    """Mark the labels of `after` beyond those already in `before` (a multiset difference)."""
    left, flags = Counter(before), []
    for label in after:
        flags.append(left[label] <= 0)
        left[label] -= 1
    return flags


@dataclass
class Unit:
    """One drawn layer: a conv, pool, LRN or FC with the BN, ReLU and dropout after it folded in."""

    name: str  # paper name of the main layer: conv1_1, pool1, fc6
    label: str  # conv3-64, maxpool, FC-4096
    kind: str  # a PALETTE key
    channels: int
    shape: tuple[int, int, int]  # output (C, H, W) after the folded layers
    params: int
    macs: int
    extras: list[str] = field(default_factory=list)  # ["BN", "ReLU"], ["ReLU", "dropout"]

    @property
    def text(self) -> str:
        return " · ".join([self.label, *self.extras])


@dataclass
class Group:
    """A block between max-pools (numbered from 1), or the classifier (block None)."""

    block: int | None
    units: list[Unit]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.units[-1].shape

    @property
    def params(self) -> int:
        return sum(u.params for u in self.units)

    @property
    def macs(self) -> int:
        return sum(u.macs for u in self.units)


def layer_groups(model: VGG, rows: list[LayerInfo]) -> list[Group]:
    """Blocks of the conv stack (split after each max-pool) and the classifier, from layer_table rows."""
    named = modules_by_name(model)
    features = set(model.feature_names)
    groups = [Group(1, [])]
    for row in rows:
        m = named[row.name]
        if row.name not in features and groups[-1].block is not None:
            groups.append(Group(None, []))
        kind = module_kind(m, row.name)
        if kind is None:  # fold into the layer before: same shape, its params (BN) added
            unit = groups[-1].units[-1]
            unit.extras.append(module_label(m))
            unit.params += row.params
            unit.macs += row.macs
            unit.shape = row.shape
            continue
        classifier = row.name not in features
        groups[-1].units.append(
            Unit(row.name, module_label(m, classifier), kind, row.shape[0], row.shape, row.params, row.macs)
        )
        if isinstance(m, nn.MaxPool2d) and row.name != model.feature_names[-1]:
            groups.append(Group(len(groups) + 1, []))
    return groups
