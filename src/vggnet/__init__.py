"""vggnet: the whole VGG paper (Simonyan & Zisserman, ICLR 2015) in PyTorch."""

from .analysis import layer_table, table2
from .configs import ALIASES, CONFIGS, ModelConfig, TrainConfig, resolve
from .model import VGG, build, count_parameters

__all__ = [
    "ALIASES",
    "CONFIGS",
    "ModelConfig",
    "TrainConfig",
    "VGG",
    "build",
    "count_parameters",
    "layer_table",
    "resolve",
    "table2",
]
__version__ = "0.1.0"
