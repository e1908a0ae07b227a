"""vggnet: the whole VGG paper (Simonyan & Zisserman, ICLR 2015) in PyTorch."""

from .analysis import layer_table, table2
from .configs import ALIASES, CONFIGS, ModelConfig, resolve
from .export import export_onnx, export_program
from .model import VGG, build, count_parameters
from .optimize import fold_batchnorm, optimize_for_inference, quantize_int8

__all__ = [
    "ALIASES",
    "CONFIGS",
    "ModelConfig",
    "VGG",
    "build",
    "count_parameters",
    "export_onnx",
    "export_program",
    "fold_batchnorm",
    "layer_table",
    "optimize_for_inference",
    "quantize_int8",
    "resolve",
    "table2",
]
__version__ = "0.1.0"
