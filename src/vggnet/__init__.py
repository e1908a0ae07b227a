"""vggnet: the whole VGG paper (Simonyan & Zisserman, ICLR 2015) in PyTorch."""

from importlib import metadata as _metadata

from .analysis import layer_table, table2
from .configs import ALIASES, CONFIGS, ModelConfig, TrainConfig, resolve
from .export import export_onnx, export_program
from .features import PerceptualLoss, features_at
from .model import VGG, build, count_parameters
from .optimize import fold_batchnorm, optimize_for_inference, quantize_int8
from .weights import convert, import_weights, load_weights, save_weights

__all__ = [
    "ALIASES",
    "CONFIGS",
    "ModelConfig",
    "PerceptualLoss",
    "TrainConfig",
    "VGG",
    "build",
    "convert",
    "count_parameters",
    "export_onnx",
    "export_program",
    "features_at",
    "fold_batchnorm",
    "import_weights",
    "layer_table",
    "load_weights",
    "optimize_for_inference",
    "quantize_int8",
    "resolve",
    "save_weights",
    "table2",
]
try:  # one place holds the version: pyproject.toml, through the installed package's metadata
    __version__ = _metadata.version("vggnet")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
