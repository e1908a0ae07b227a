"""Helpers shared by several test modules."""

from torch import nn


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
