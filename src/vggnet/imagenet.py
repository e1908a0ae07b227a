"""ImageNet's 1000 classes (ILSVRC-2012) in index order: their names and their WordNet ids.

The index order is the one every public VGG was trained with (Caffe, torchvision, Keras, timm): the
wnids sorted, n01440764 (tench) first, n15075141 (toilet tissue) last. A folder whose class folders
are wnids (the ILSVRC validation layout, or a subset such as Imagenette's ten) is matched to those
indices by id, so 1000-class weights can be tested on it directly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

WNID = re.compile(r"n\d{8}")


@lru_cache(maxsize=1)
def _read(name: str) -> tuple[str, ...]:
    return tuple(resources.files("vggnet").joinpath(f"resources/{name}").read_text(encoding="utf-8").splitlines())


def imagenet_classes() -> list[str]:
    """ImageNet's 1000 class names in index order (shipped with the package)."""
    return list(_read("imagenet_classes.txt"))


def imagenet_wnids() -> list[str]:
    """ImageNet's 1000 WordNet ids in index order (shipped with the package)."""
    return list(_read("imagenet_wnids.txt"))


def wnid_indices(folders: Sequence[str]) -> list[int] | None:
    """The ImageNet index of each class folder named by a wnid; None unless every one is an ImageNet wnid."""
    index = {w: i for i, w in enumerate(_read("imagenet_wnids.txt"))}
    if not folders or any(f not in index for f in folders):
        return None
    return [index[f] for f in folders]


def looks_like_wnids(folders: Sequence[str]) -> bool:
    """Whether every name has the form of a WordNet id (n + 8 digits), known to ImageNet-1k or not."""
    return bool(folders) and all(WNID.fullmatch(f) for f in folders)


def is_imagenet_labelled(num_classes: int, class_names: Sequence[str] | None) -> bool:
    """1000 classes named as ImageNet's (or not named at all, as imported torchvision/Keras/Caffe weights are)."""
    return num_classes == 1000 and (class_names is None or list(class_names) in (imagenet_classes(), imagenet_wnids()))
