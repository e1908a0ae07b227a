import platform
import re
import subprocess
import sys

import pytest
import torch

from vggnet.cli import build_parser, main


def test_summary_all_prints_table2(capsys):
    assert main(["summary", "--all"]) == 0
    out = capsys.readouterr().out
    assert "132,863,336" in out and "143,667,240" in out and "15.470" in out


def test_summary_one_config(capsys):
    assert main(["summary", "vgg16", "--head", "conv", "--input", "256", "--classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "fc8" in out and "10x2x2" in out and "pool5" in out


def test_unknown_config_exits_2_one_line(capsys):
    assert main(["summary", "vgg17"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown VGG configuration 'vgg17'" in err


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["summary"])
    assert e.value.code == 2
    assert "summary needs a CONFIG" in capsys.readouterr().err


@pytest.mark.slow
def test_python_m_entry_point():
    r = subprocess.run(
        [sys.executable, "-m", "vggnet", "summary", "--input", "100", "--head", "conv", "D"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().endswith("input 100x100 is smaller than 224, the smallest this VGG accepts")


def test_generated_options_carry_the_declared_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps help to the terminal
    assert "--color-shift COLOR_SHIFT std of AlexNet's PCA colour-shift coefficients (0 disables) (default: 0.1)" in out
    assert "--scale SCALE comma-separated; S: one value (fixed) or Smin,Smax" in out
    assert "--seed SEED (default: 0)" in out  # no help declared: the default alone
    assert "--arch ARCH, --model ARCH a Table 1 configuration" in out  # the old flag still answers
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "multicrop (5x5 grid)" in " ".join(capsys.readouterr().out.split())


def test_old_option_name_sets_the_renamed_field():
    from vggnet.cli import build_parser, dataclass_from_args
    from vggnet.configs import TrainConfig

    args = build_parser().parse_args(["train", "--model", "D"])
    assert dataclass_from_args(TrainConfig, args).arch == "D"


MEASURED = re.compile(r"\d(\.\d+)?x (faster|slower|ONNX|torchvision|fp32)|images/s|img/s|GFLOP/s|\d+(\.\d+)? ?ms\b")


def test_no_help_text_carries_a_measured_figure(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # every subcommand
    for name in commands:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        assert not MEASURED.search(text), f"vggnet {name} --help: {MEASURED.search(text).group(0)}"


def test_version_comes_from_the_package_metadata(capsys):
    from pathlib import Path

    import vggnet

    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"$', pyproject, re.MULTILINE).group(1)
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert vggnet.__version__ == declared
    assert out == f"vggnet {declared} (torch {torch.__version__}, Python {platform.python_version()})\n"
