"""Write src/vggnet/resources/imagenet_classes.txt: ImageNet's 1000 class names, one a line, in index order.

Run once from the repository root; the file is committed, so nothing reads torchvision's private module at run time.
"""

from pathlib import Path

from torchvision.models._meta import _IMAGENET_CATEGORIES

out = Path(__file__).resolve().parent.parent / "src" / "vggnet" / "resources" / "imagenet_classes.txt"
assert len(_IMAGENET_CATEGORIES) == 1000 and all("\n" not in n for n in _IMAGENET_CATEGORIES)
out.write_text("\n".join(_IMAGENET_CATEGORIES) + "\n", encoding="utf-8")
print(f"wrote {len(_IMAGENET_CATEGORIES)} names to {out}")
