"""The project's weights format, and what travels with a set of weights.

One `.safetensors` file whose header metadata holds, under the key "vggnet", a JSON document:
the ModelConfig, class names, preprocessing, source, parameter count, whether the classifier
is present and the sha256 of the tensors; under "vggnet_sha256", the sha256 of that JSON text.
Reading checks both unless told not to, so a damaged file is refused instead of giving wrong
weights; files written before the hashes load unchecked. Nothing here ever unpickles arbitrary
objects. A file without the classifier ("notop") gives a features-only model: its `classifier`
is a `NoClassifier`, its metadata says `include_top: false`, and it serves features and losses.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..configs import ModelConfig
from ..io import atomic_write, report_once
from ..model import VGG, count_parameters
from .compression import dequantize_state, low_rank_ranks, make_low_rank, quantize_state
from .integrity import check, digest, text_sha256
from .schema import parse_meta

# ImageNet statistics used by torchvision's weights (RGB, 0-1 scale).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The original Caffe release and Keras: BGR order, 0-255 scale, per-channel means (B, G, R).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

FORMAT_KEY = "vggnet"
HASH_KEY = "vggnet_sha256"  # beside FORMAT_KEY in the header: the sha256 of its JSON text


@dataclass
class Preprocessing:
    """How a network expects its input: channel order, pixel scale, mean and std.

    Applied to a float batch in RGB order and 0-1 range: reorder, multiply by `scale`,
    subtract `mean`, divide by `std` (mean and std are in the network's order and scale).
    """

    color: str = "RGB"  # "RGB" or "BGR"
    scale: float = 1.0  # 1.0 for 0-1 input, 255.0 for 0-255 input
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.color not in ("RGB", "BGR"):
            raise ValueError(f"preprocessing color must be RGB or BGR, got {self.color!r}")
        self.mean, self.std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> the network's input."""
        if self.color == "BGR":
            x = x.flip(-3)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x * self.scale - mean) / std

    @classmethod
    def torchvision(cls) -> Preprocessing:
        """torchvision's and timm's: RGB, 0-1, ImageNet mean and std."""
        return cls("RGB", 1.0, IMAGENET_MEAN, IMAGENET_STD)

    @classmethod
    def caffe(cls) -> Preprocessing:
        """The original Caffe release's and Keras': BGR, 0-255, the mean pixel subtracted."""
        return cls("BGR", 255.0, CAFFE_MEAN_BGR, (1.0, 1.0, 1.0))


@dataclass
class WeightsMeta:
    """What travels with a set of weights, so nobody has to repeat it."""

    model: ModelConfig
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    class_names: list[str] | None = None
    source: str = "vggnet"
    params: int = 0
    include_top: bool = True  # False: features only (a Keras "notop" file); no classifier
    extra: dict[str, Any] = field(default_factory=dict)
    tensors_sha256: str = ""  # integrity.digest of the tensors, set by save_weights; "" in older files

    @classmethod
    def for_model(
        cls,
        model: VGG,
        *,
        preprocessing: Preprocessing,
        class_names: list[str] | None,
        source: str,
        extra: dict[str, Any] | None,
    ) -> WeightsMeta:
        """The metadata of `model`: its configuration and parameter count, and whether it has a classifier."""
        return cls(
            model=model.cfg,
            preprocessing=preprocessing,
            class_names=list(class_names) if class_names is not None else None,
            source=source,
            params=count_parameters(model),
            include_top=has_classifier(model),
            extra=extra or {},
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WeightsMeta:
        """The metadata of a JSON text, checked against the schema (`schema.py`) first."""
        raw = parse_meta(text)
        return cls(
            model=ModelConfig(**raw["model"]),
            preprocessing=Preprocessing(**raw.get("preprocessing", {})),
            class_names=raw.get("class_names"),
            source=raw.get("source", "vggnet"),
            params=raw.get("params", 0),
            include_top=raw.get("include_top", True),
            extra=raw.get("extra", {}),
            tensors_sha256=raw.get("tensors_sha256", ""),
        )


class NoClassifier(nn.Module):
    """Stands in for the classifier of features-only weights; calling it is a clear error."""

    def _refuse(self) -> ValueError:
        return ValueError(
            "these weights hold no classifier (imported without the top layers); use them for "
            "features (features_at, PerceptualLoss) or fine-tune a new head"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self._refuse()

    def __iter__(self) -> Iterator[nn.Module]:  # VGG.score_map walks the classifier
        raise self._refuse()


def has_classifier(model: VGG) -> bool:
    """False for a features-only model (imported from a file without the top layers)."""
    return not isinstance(model.classifier, NoClassifier)


# -- writing and reading the project format ----------------------------------------------------


def save_weights(
    model: VGG,
    path: str | os.PathLike[str],
    *,
    preprocessing: Preprocessing | None = None,
    class_names: list[str] | None = None,
    source: str = "vggnet",
    extra: dict[str, Any] | None = None,
    int8: bool = False,
) -> WeightsMeta:
    """Write `model` in the project format (safetensors + JSON metadata with content hashes), atomically.

    `int8`: conv and FC weights stored as int8 with per-channel scales (`compression.py`), float32 again on load.
    """
    if class_names is not None and len(class_names) != model.cfg.num_classes:
        raise ValueError(f"{len(class_names)} class names given for a model with {model.cfg.num_classes} classes")
    meta = WeightsMeta.for_model(
        model, preprocessing=preprocessing or Preprocessing(), class_names=class_names, source=source, extra=extra
    )
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if int8:
        tensors = quantize_state(tensors)
    meta.tensors_sha256 = digest(tensors)  # of the tensors as stored
    text = meta.to_json()
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={FORMAT_KEY: text, HASH_KEY: text_sha256(text)}))
    return meta


def read_meta(path: str | os.PathLike[str], verify: bool = True) -> WeightsMeta:
    """The metadata of a project-format weights file, without loading the tensors (its hash checked with `verify`)."""
    path = existing_file(path)
    header = safetensors_header(path)
    if FORMAT_KEY not in header:
        raise ValueError(f"{path}: safetensors file without vggnet metadata; import it with `vggnet convert`")
    text = header[FORMAT_KEY]
    if verify and HASH_KEY in header:
        check(text_sha256(text), header[HASH_KEY], path, "its metadata")
    try:
        return WeightsMeta.from_json(text)
    except ValueError as e:  # the schema names the field
        raise ValueError(f"{path}: damaged or foreign vggnet metadata: {e}") from None


def load_project_weights(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", verify: bool = True
) -> tuple[VGG, WeightsMeta]:
    """Rebuild the model stored in a project-format file; returns (model in eval mode, metadata).

    With `verify` (the default), the metadata and the tensors must match the hashes recorded when
    the file was written, else an IntegrityError names the file.
    """
    path = existing_file(path)
    meta = read_meta(path, verify)
    try:
        tensors = read_tensors(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable safetensors weights ({e})") from None
    if verify and meta.tensors_sha256:
        check(digest(tensors), meta.tensors_sha256, path, "its tensors")
    elif verify:
        report_once(
            f"note: {path} was written before content hashes and is loaded unchecked (re-save it with `vggnet convert` to add them)"
        )
    return assemble(meta.model, meta.include_top, dequantize_state(tensors), str(path), device), meta


_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
    "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, read with plain file reads straight into their own memory.

    safetensors' `load_file` copies them out of a memory map of the whole file, so every byte is resident twice
    until it returns (VGG16: 1.1 GB for 553 MB). `safe_open` checks the header first: offsets inside the file,
    each tensor's bytes matching its dtype and shape.
    """
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    with open(path, "rb") as file:
        size = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(size))
        out = {}
        for key in keys:
            entry = header[key]
            if entry["dtype"] not in _DTYPES:
                return load_file(str(path))  # a dtype without a plain torch twin: the library's own reader
            tensor = torch.empty(entry["shape"], dtype=_DTYPES[entry["dtype"]])
            begin, end = entry["data_offsets"]
            raw = tensor.reshape(-1).view(torch.uint8).numpy()
            file.seek(8 + size + begin)
            if end - begin != raw.nbytes or file.readinto(memoryview(raw)) != raw.nbytes:
                raise ValueError(f"{key}: {end - begin} bytes stored for {raw.nbytes}")
            out[key] = tensor
    return out


def existing_file(path: str | os.PathLike[str]) -> Path:
    """`path` as a Path, or a one-line error when it is missing or a folder."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise ValueError(f"{p}: is a folder, expected a weights file")
    return p


def safetensors_header(path: Path) -> dict[str, str]:
    """The string metadata in a safetensors file's header; a one-line error for any other file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a safetensors weights file ({e})") from None


# -- from tensors to a model -------------------------------------------------------------------


def load_state_checked(
    model: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "weights", assign: bool = False
) -> None:
    """load_state_dict(strict=True) with errors that name the layer and both shapes.

    With `assign`, the module takes the given tensors (cast to its dtypes) instead of copying
    them: a model built on the meta device loads without allocating its weights twice.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(f"{source}: missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"{source}: layer {key} has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}"
            )
    if assign:
        state = {k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=assign)


def assemble(
    cfg: ModelConfig,
    include_top: bool,
    state: dict[str, torch.Tensor],
    where: str,
    device: str | torch.device = "cpu",
) -> VGG:
    """Build a VGG on the meta device and give it the tensors (no second copy, no init); factorised FC layers kept."""
    state = dict(state)
    for key in [k for k in state if k.endswith(".running_mean")]:  # torchvision's _bn files predate this buffer
        state.setdefault(key.replace("running_mean", "num_batches_tracked"), torch.tensor(0, dtype=torch.long))
    with torch.device("meta"):
        model = VGG(cfg)
        make_low_rank(model, low_rank_ranks(state))  # FC layers stored factorised (compression.py)
    if not include_top:
        model.classifier = NoClassifier()
    for key in state:
        state[key] = aligned(state[key].to(device))
    load_state_checked(model, state, source=where, assign=True)
    return model.eval()


def aligned(t: torch.Tensor, alignment: int = 64) -> torch.Tensor:
    """`t`, or an aligned copy where its memory does not start on a cache line.

    safetensors hands out tensors at their offsets in the file; on a misaligned weight the CPU
    convolution library takes other code paths, so a loaded model's outputs would differ from the
    saved model's in the last bits.
    """
    return t if t.device.type != "cpu" or t.data_ptr() % alignment == 0 else t.clone()
