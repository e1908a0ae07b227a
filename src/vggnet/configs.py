"""The paper's Table 1 as data, the names people use for it, and typed job defaults.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015 (arXiv 1409.1556).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# One entry of a convolution stack: an int is a 3x3 conv (stride 1, pad 1) with that many output
# channels; ("KxK", c) is a KxK conv with padding K//2 (configuration C's 1x1, the shallow variants'
# 5x5 and 7x7); "M" is a 2x2 max-pool with stride 2; "LRN" is AlexNet's local response normalisation.
Layer = int | tuple[str, int] | str

# Table 1 of the paper, column by column.
CONFIGS: dict[str, list[Layer]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        ("1x1", 256),
        "M",
        512,
        512,
        ("1x1", 512),
        "M",
        512,
        512,
        ("1x1", 512),
        "M",
    ],  # fmt: skip
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],  # fmt: skip
}

# Section 4.1 tests the small kernels on B: "a shallow net with five 5x5 conv. layers", each pair of
# 3x3 convs replaced by one 5x5 conv of the same width (the same receptive field), same pools and FC layers.
CONFIGS["B-5x5"] = [("5x5", 64), "M", ("5x5", 128), "M", ("5x5", 256), "M", ("5x5", 512), "M", ("5x5", 512), "M"]
# The same test for three stacked 3x3 convs (27C^2 weights against 49C^2): D with each pair of 3x3 convs
# as one 5x5 conv and each triple as one 7x7 conv.
CONFIGS["D-7x7"] = [("5x5", 64), "M", ("5x5", 128), "M", ("7x7", 256), "M", ("7x7", 512), "M", ("7x7", 512), "M"]

# The columns of the paper's Table 1; CONFIGS also holds the shallow variants above.
TABLE1 = ("A", "A-LRN", "B", "C", "D", "E")


def kernel_size(item: Layer) -> int:
    """Kernel side of a conv entry of CONFIGS: 3 for an int, K for ("KxK", c)."""
    if isinstance(item, tuple):
        return int(item[0].lower().split("x")[0])
    return 3


# Names in common use (torchvision's for A, B, D, E) -> the paper's letter.
ALIASES: dict[str, str] = {
    "vgg11": "A",
    "vgg11_lrn": "A-LRN",
    "vgg13": "B",
    "vgg16_c": "C",
    "vgg16": "D",
    "vgg19": "E",
}

# Table 2 of the paper: parameters in millions, as printed (the shallow variants are not in it).
PAPER_PARAMS_M: dict[str, int] = {"A": 133, "A-LRN": 133, "B": 133, "C": 134, "D": 138, "E": 144}

# AlexNet's LRN as used by A-LRN (section 2.3): size 5, alpha 1e-4, beta 0.75, k 2.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0

HEADS = ("fc", "conv", "gap")
INITS = ("paper", "glorot", "kaiming")


def config_names() -> list[str]:
    """Every accepted configuration name: letters, aliases and their `_bn` forms."""
    base = list(CONFIGS) + list(ALIASES)
    return base + [f"{n}_bn" for n in base]


def resolve(name: str) -> tuple[str, bool]:
    """Map a configuration name to (paper letter, batch_norm); `_bn` / `-bn` selects BN."""
    key = name.strip()
    bn = False
    for suffix in ("_bn", "-bn", "_BN", "-BN"):
        if key.endswith(suffix):
            key, bn = key[: -len(suffix)], True
            break
    letters = {letter.upper(): letter for letter in CONFIGS}
    upper = key.upper().replace("_", "-")
    if upper in letters:
        return letters[upper], bn
    lower = key.lower()
    if lower in ALIASES:
        return ALIASES[lower], bn
    accepted = ", ".join(list(CONFIGS) + list(ALIASES))
    raise ValueError(f"unknown VGG configuration {name!r}; accepted: {accepted} (each also with _bn)")


def weight_layers(letter: str) -> int:
    """Number of weight layers (convs + the three FC layers), the paper's depth."""
    return sum(1 for v in CONFIGS[letter] if v not in ("M", "LRN")) + 3


def option(default: Any = None, help: str = "", factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its command-line help declared beside it (`vggnet <cmd> --help` shows it)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


def renamed(renames: dict[str, str]) -> Callable[[type], type]:
    """Accept old field names as keywords and attributes (`ModelConfig(config="D")`, `cfg.config`)."""

    def wrap(cls: type) -> type:
        init = cls.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            for old, new in renames.items():
                if old in kwargs:  # with both, the old name wins: dataclasses.replace(cfg, config=...) passes both
                    kwargs[new] = kwargs.pop(old)
            init(self, *args, **kwargs)

        __init__.__doc__ = init.__doc__
        cls.__init__ = __init__
        for old, new in renames.items():
            setattr(
                cls, old, property(lambda self, n=new: getattr(self, n), lambda self, v, n=new: setattr(self, n, v))
            )
        cls.renamed_fields = dict(renames)
        return cls

    return wrap


@renamed({"config": "arch"})
@dataclass
class ModelConfig:
    """Everything needed to rebuild a VGG; stored beside every set of weights."""

    arch: str = option("D", "a column of Table 1 (A, A-LRN, B, C, D, E) or an alias (vgg11 ... vgg19, _bn)")
    num_classes: int = 1000
    batch_norm: bool = option(False, "conv -> BN -> ReLU (not in the paper; torchvision's _bn)")
    head: str = option("fc", "fc (torchvision layout) | conv (dense, section 3.2) | gap")
    width: float = option(1.0, "multiplier on every conv and FC width, for small experiments")
    dropout: float = option(0.5, "after FC6 and FC7 (section 3.1)")
    in_channels: int = 3
    input_size: int = option(224, "training crop; FC6 sees input_size/32 squared cells")
    init: str = option("kaiming", "paper: N(0, init_std) | glorot: Xavier uniform | kaiming")
    init_std: float = option(0.01, "std of the paper's normal init (section 3.1)")

    def display_name(self, with_width: bool = False) -> str:
        """The paper's letter with `_bn` for batch norm ("D_bn"); `with_width` adds "(width 1/8)"."""
        letter, bn = resolve(self.arch)
        name = letter + ("_bn" if bn or self.batch_norm else "")
        if with_width and self.width != 1:
            name += f" (width {fraction(self.width)})"
        return name


def fraction(width: float) -> str:
    """A width multiplier as people write it: 1/8 for 0.125, else the number itself."""
    inverse = 1 / width
    return f"1/{round(inverse)}" if abs(inverse - round(inverse)) < 1e-6 else f"{width:g}"


AMP_MODES = ("none", "bf16", "fp16")
AUGMENTS = ("paper", "center")  # training input: section 3.1's random augmentation, or the fixed centre crop
# Where input images are decoded and transformed: PIL per image, or JPEG batches with torch (vggnet.data.batched).
DECODERS = ("pil", "cpu", "gpu")
DECODE_HELP = (
    "pil: PIL per image in the loader processes | cpu: JPEGs decoded and transformed in batches with torch "
    "(the same pixels) | gpu: the same on the job's CUDA GPU (nvJPEG)"
)


@renamed({"model": "arch"})
@dataclass
class TrainConfig:
    """One training job; the defaults are the paper's protocol (section 3.1).

    `vggnet train` generates one option per field; `--config FILE` (JSON or TOML) sets them too.
    """

    # data
    data: str = option(
        "digits", '"digits" (built in), an image folder (ROOT[/train|/val]/<class>/...), cifar10:PATH, cifar100:PATH'
    )
    digits_size: int = option(32, "side in pixels of the built-in digits (8x8 upscaled)")
    stats: str = option("", "JSON from `vggnet stats`; empty: computed from the training set at the start")
    stats_samples: int = option(10000, "training images sampled for the mean RGB and RGB covariance")
    # model (section 2, Table 1)
    arch: str = option("A", "a Table 1 configuration: A, A-LRN, B, C, D, E or an alias (vgg11 ... vgg19, _bn)")
    width: float = option(1.0, "multiplier on every conv and FC width (narrow nets for small experiments)")
    head: str = option("fc", "fc | conv | gap")
    dropout: float = option(0.5, "on FC6 and FC7 (section 3.1)")
    init: str = option("paper", "paper: N(0, init_std), zero biases | glorot | kaiming (section 3.1)")
    init_std: float = option(
        0.01, "std of the paper's init at width 1; divided by sqrt(width) so a narrow net keeps the per-layer gain"
    )
    init_from: str = option(
        "",
        "a run or any weights file (vggnet, torchvision, timm, Keras, Caffe): net A -> first four convs + three FCs "
        "of a deeper --arch (section 3.1); otherwise the weights' own configuration, every conv layer and the "
        "FC layers that fit (FC8 is new when the classes differ; --head gap replaces the FC stack); "
        "training then uses the weights' input preprocessing",
    )
    freeze: str = option(
        "none", "layers kept fixed (BN statistics too): none | features | classifier | conv1_1-conv4_3 | fc6,fc7 ..."
    )
    backbone_lr_scale: float = option(
        1.0, "with --init-from: the copied layers learn at --lr times this, the new ones at --lr"
    )
    # optimisation (section 3.1)
    batch: int = option(256, "images per SGD step, over all processes and accumulation steps")
    accum: int = option(
        1, "micro-batches accumulated into one step (per-process micro-batch = batch / (accum x processes))"
    )
    lr: float = option(1e-2, "learning rate (section 3.1)")
    momentum: float = 0.9
    weight_decay: float = option(5e-4, "L2 penalty multiplier")
    lr_factor: float = option(0.1, "the LR is multiplied by this ...")
    patience: int = option(5, "... after this many epochs without a better validation top-1 error ...")
    max_decreases: int = option(3, "... at most this many times; a further plateau stops training")
    epochs: int = option(74, "at most this many epochs (the paper: 370K iterations of 256 images on ImageNet)")
    # augmentation (section 3.1)
    scale: list[int] = option(help="S: one value (fixed) or Smin,Smax (jittered per image)", factory=lambda: [256])
    crop: int = option(224, "side of the random crop = the network's input size")
    flip: bool = option(True, "random horizontal flip")
    color_shift: float = option(0.1, "std of AlexNet's PCA colour-shift coefficients (0 disables)")
    val_scale: int = option(0, "shorter side for the per-epoch validation (centre crop); 0: Smin")
    augment: str = option(
        "paper",
        "paper: the random crop, flip and colour shift above | center: each training image rescaled to Smin "
        "and centre-cropped, nothing random, so the outputs of layers frozen from conv1_1 (--freeze "
        "conv1_1-fc7) are computed once and cached (head-only fine-tuning; docs/finetuning.md)",
    )
    frozen_cache: bool = option(
        True,
        "with --augment center: keep the frozen layers' outputs on disk ($VGGNET_CACHE/frozen, or $VGGNET_FROZEN_CACHE), reused by later runs",
    )
    # run
    out: str = option("", "run directory; empty: runs/<arch>-<date>-<time>")
    resume: str = option("", "a run directory to continue exactly where it stopped")
    checkpoint_every: int = option(0, "also write the resume checkpoint every N steps (0: at epoch ends only)")
    verify: bool = option(True, "check the content hashes of the checkpoint resumed from and of --init-from weights")
    seed: int = 0
    workers: int = option(2, "data-loading processes per training process")
    decode: str = option("pil", DECODE_HELP)
    device: str = option("auto", "auto | cpu | cuda | cuda:N")
    amp: str = option("none", "none | bf16 | fp16 autocast (fp16 with a gradient scaler)")
    channels_last: bool = option(True, "NHWC activations and weights (faster convolutions on CPUs and GPUs)")
    compile: bool = option(False, "torch.compile the model")
    deterministic: bool = option(False, "torch.use_deterministic_algorithms (bit-exact resume on CPU)")
    threads: int = option(0, "torch intra-op threads (0: torch's default)")
    quiet: bool = option(False, "no progress bar; one line per epoch")

    def check(self, world: int = 1) -> None:
        """Raise a one-line error for any inconsistent option, before anything is loaded."""
        if len(self.scale) not in (1, 2) or min(self.scale) < 1:
            raise ValueError(f"--scale takes S or Smin,Smax (positive), got {self.scale}")
        smin = min(self.scale)
        if self.crop < 32:
            raise ValueError(f"--crop {self.crop} is below 32, the smallest input a VGG accepts (5 pools)")
        if smin < self.crop:
            raise ValueError(
                f"--crop {self.crop} is larger than the rescaled image (shorter side S={smin}); use S >= crop"
            )
        if self.val_scale and self.val_scale < self.crop:
            raise ValueError(f"--crop {self.crop} is larger than the validation image (--val-scale {self.val_scale})")
        if self.batch < 1 or self.accum < 1 or self.batch % (self.accum * world):
            raise ValueError(f"--batch {self.batch} must split evenly into --accum {self.accum} x {world} process(es)")
        if self.amp not in AMP_MODES:
            raise ValueError(f"--amp {self.amp!r}: accepted {', '.join(AMP_MODES)}")
        if self.decode not in DECODERS:
            raise ValueError(f"--decode {self.decode!r}: accepted {', '.join(DECODERS)}")
        if self.init not in INITS:
            raise ValueError(f"--init {self.init!r}: accepted {', '.join(INITS)}")
        if self.augment not in AUGMENTS:
            raise ValueError(f"--augment {self.augment!r}: accepted {', '.join(AUGMENTS)}")
        if self.head not in HEADS:
            raise ValueError(f"--head {self.head!r}: accepted {', '.join(HEADS)}")
        resolve(self.arch)
        for name in ("lr", "epochs", "width", "stats_samples"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.backbone_lr_scale < 0:
            raise ValueError(f"--backbone-lr-scale must be 0 or more, got {self.backbone_lr_scale}")
        if self.patience < 0 or self.max_decreases < 0 or self.checkpoint_every < 0 or self.workers < 0:
            raise ValueError("--patience, --max-decreases, --checkpoint-every and --workers cannot be negative")


# Test-time evaluation methods (section 3.2); "center" is torchvision's single-crop baseline.
EVAL_METHODS = ("center", "dense", "multicrop", "dense+multicrop")
BACKENDS = ("torch", "onnxruntime", "openvino")  # where evaluate and predict run the networks (vggnet.backends)


@dataclass
class EvalConfig:
    """How to test a network: the protocol of section 3.2 by default."""

    method: str = option(
        "dense", "center | dense (fully convolutional) | multicrop (5x5 grid) | dense+multicrop (fused)"
    )
    scales: str = option(
        "paper",
        'test scales Q (shorter image side), posteriors averaged across them: "paper": Q = S for fixed S, '
        "Q in {Smin, (Smin+Smax)/2, Smax} for jittered S (Tables 3 and 4); "
        '"single": Q = S, or (Smin+Smax)/2 for jittered S (Table 3); '
        '"multi": Q in {S-32, S, S+32} for fixed S (32 scaled by input_size/224), as "paper" for jittered S; '
        'or explicit values such as "256,384,512"',
    )
    flip: bool = option(True, "average the softmax posteriors of the image and its mirror (section 3.2)")
    grid: int = option(5, "multi-crop: grid x grid crops per scale (x2 with flips: 50, section 3.2)")
    split: str = option("val", 'ROOT/<split> of an image folder when it exists; digits: "train" or "val"')
    batch_size: int = option(32, "crops of the input size per forward; dense batches hold the same pixel count")
    limit: int = option(0, "evaluate this many images, evenly spaced over the dataset (0: all)")
    workers: int = option(0, "image decoding processes (0: in the main process)")
    decode: str = option("pil", DECODE_HELP)
    device: str = option("auto", "auto (cuda when available) | cpu | cuda | cuda:N | mps")
    fast: bool = option(
        False,
        "on a CPU: BatchNorm folded into the convs and the wide 3x3 convs run as Winograd F(4x4, 3x3) "
        "(fp32; posteriors within about 1e-5 of the direct convs'; docs/performance.md has the figures)",
    )
    backend: str = option(
        "torch",
        "torch | onnxruntime | openvino: where the networks run; the latter two (pip install 'vggnet[runtimes]') "
        "run the dense net exported to ONNX (any image size), in fp32, on the CPU",
    )
    verify: bool = option(True, "check the weights' content hashes on load (docs/weights.md)")

    def check(self) -> None:
        """Raise a one-line error for an unknown method or a non-positive grid, batch size or limit."""
        if self.method not in EVAL_METHODS:
            raise ValueError(f"unknown method {self.method!r}; accepted: {', '.join(EVAL_METHODS)}")
        if self.grid < 1 or self.batch_size < 1 or self.limit < 0 or self.workers < 0:
            raise ValueError("grid and batch_size must be at least 1; limit and workers at least 0")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; accepted: {', '.join(BACKENDS)}")
        if self.backend != "torch" and (self.fast or self.device not in ("auto", "cpu")):
            raise ValueError(
                f"--backend {self.backend} runs on the CPU and optimises the graph itself; drop --fast and --device"
            )
        if self.decode not in DECODERS:
            raise ValueError(f"--decode {self.decode!r}: accepted {', '.join(DECODERS)}")
