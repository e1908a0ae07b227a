"""Helpers shared by several test modules."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from torch import nn

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def experiment_module(experiment: str, name: str) -> ModuleType:
    """experiments/<experiment>/<name>.py imported as <experiment>_<name> (scripts, not a package)."""
    folder = EXPERIMENTS / experiment
    spec = importlib.util.spec_from_file_location(f"{experiment}_{name}", folder / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))  # a script may import its neighbour by name
    spec.loader.exec_module(mod)
    return mod


def randomize_bn(model: nn.Module, shift: float = 0.2, var: tuple[float, float] = (0.5, 1.5)) -> nn.Module:
    """Non-trivial BN running statistics and affine parameters, so BN is not the identity and a lost BN
    tensor changes the output: means and biases U(-shift, shift), variances U(*var), scales U(0.5, 1.5)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-shift, shift)
            m.running_var.uniform_(*var)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-shift, shift)
    return model
