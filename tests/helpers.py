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


# `vggnet ARGS` in a child process whose address space is capped, so a regression that allocates from a
# declared size fails fast instead of eating the machine; the child reports its peak resident memory.
CAPPED_CLI = """
import resource, sys
cap = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
from vggnet.cli import main
status = main(sys.argv[2:])
# VmHWM: this program's own peak. ru_maxrss would also count the parent's pages the child held before exec.
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print(f"peak-rss-kib {hwm[0]}")
sys.exit(status)
"""
ADDRESS_SPACE = 6 << 30  # bytes: importing torch maps about 3.3 GB of address space, little of it resident


def run_capped(
    args: list[str], env: dict[str, str] | None = None, cap: int = ADDRESS_SPACE
) -> tuple[int, str, str, int]:
    """(exit status, stdout, stderr, peak resident bytes or -1) of `vggnet ARGS` with its address space capped."""
    import os
    import subprocess

    src = str(Path(__file__).resolve().parents[1] / "src")
    child_env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", CAPPED_CLI, str(cap), *args], capture_output=True, text=True, env=child_env, timeout=300
    )
    lines = proc.stdout.splitlines()
    peak = int(lines.pop().split()[1]) * 1024 if lines and lines[-1].startswith("peak-rss-kib ") else -1
    return proc.returncode, "\n".join(lines), proc.stderr, peak


def one_line_refusal(status: int, err: str, command: str, *needles: str) -> str:
    """Assert a refusal as the CLI must give it: exit 2 and one stderr line naming what it should; returns it."""
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1, (status, err[-3000:])
    assert lines[0].startswith(f"vggnet {command}: error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
