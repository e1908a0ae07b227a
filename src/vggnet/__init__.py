"""vggnet: the whole VGG paper (Simonyan & Zisserman, ICLR 2015) in PyTorch."""

from .analysis import layer_table, table2
from .configs import ALIASES, CONFIGS, ModelConfig, TrainConfig, resolve
from .features import PerceptualLoss, features_at
from .model import VGG, build, count_parameters
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
    "features_at",
    "import_weights",
    "layer_table",
    "load_weights",
    "resolve",
    "save_weights",
    "table2",
]
__version__ = "0.1.0"
