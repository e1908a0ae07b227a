import subprocess
import sys

import pytest

from vggnet.cli import main


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


def test_python_m_entry_point():
    r = subprocess.run(
        [sys.executable, "-m", "vggnet", "summary", "--input", "100", "--head", "conv", "D"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().endswith("input 100x100 is smaller than 224, the smallest this VGG accepts")


def test_generated_options_carry_the_field_comments(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps help to the terminal
    assert "--color-shift COLOR_SHIFT std of AlexNet's PCA colour-shift coefficients (0 disables) (default: 0.1)" in out
    assert "--scale SCALE comma-separated; S: one value (fixed) or Smin,Smax" in out
    assert "--lr LR (default: 0.01)" in out  # no comment: the default alone
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "multicrop (5x5 grid)" in " ".join(capsys.readouterr().out.split())


def test_field_comments_join_wrapped_lines_and_skip_section_comments():
    import dataclasses

    from vggnet.cli import field_comments
    from vggnet.configs import EvalConfig, TrainConfig

    comments = field_comments(TrainConfig)
    assert comments["data"].startswith('"digits" (built in), an image folder')
    assert comments["init_std"].startswith("std of the paper's init at width 1")  # wrapped by the formatter
    assert "lr" not in comments and not any("-- data" in c for c in comments.values())
    assert set(comments) <= {f.name for f in dataclasses.fields(TrainConfig)}
    # a comment block right above a field is its help too, joined before its trailing comment
    assert comments["channels_last"].startswith("NHWC activations and weights: 1.3x faster training steps")
    evals = field_comments(EvalConfig)
    assert evals["scales"].startswith('Test scales Q (shorter image side), posteriors averaged across them: "paper"')
    assert evals["scales"].endswith('or explicit values such as "256,384,512".')
    assert evals["fast"].startswith("CPU speed: BatchNorm folded") and "Test scales" not in evals["fast"]
