"""matplotlib is an optional extra (vggnet[plots]): the core works without it, and whatever draws says so in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

# Runs before anything else in the child: every import of matplotlib fails as if it were not installed.
BLOCK = """
import sys
class NoMatplotlib:
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, NoMatplotlib())
"""

TRAIN_AND_EVALUATE = """
import json, sys
import vggnet
from vggnet.configs import EvalConfig, TrainConfig
from vggnet.evaluate import evaluate, write_report
from vggnet.train import train

model = vggnet.build("vgg16")
out = sys.argv[1]
run = train(TrainConfig(
    data="digits", out=out + "/run", width=1 / 16, crop=32, scale=[32, 40], batch=64, epochs=2, init="kaiming",
    dropout=0.0, workers=0, threads=1, quiet=True, stats_samples=100,
))
result = evaluate([run], "digits", EvalConfig(limit=20, method="center", flip=False), progress=False)
written = write_report(result, out + "/eval")
print(json.dumps({
    "params": vggnet.count_parameters(model),
    "written": sorted(p.name for p in written),
    "matplotlib": any(m.split(".")[0] == "matplotlib" for m in sys.modules),
}))
"""


def run_without_matplotlib(code: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC)
    cmd = [sys.executable, "-c", BLOCK + code, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_build_train_and_evaluate_without_matplotlib(tmp_path):
    done = run_without_matplotlib(TRAIN_AND_EVALUATE, str(tmp_path))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["params"] == 138_357_544 and not out["matplotlib"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "config.json", "last.pt", "metrics.jsonl", "model.safetensors", "previous.pt", "stats.json",
    ]  # fmt: skip
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2  # two epochs, one notice
    assert [p.suffix for p in map(Path, out["written"])] == [".json", ".md"]
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == out["written"]
    # each drawing skipped is said once, in one line, with what to install (beside the one line per epoch)
    assert [line for line in done.stderr.splitlines() if "matplotlib" in line] == [
        "metrics.png not drawn: matplotlib is not installed (pip install 'vggnet[plots]')",
        "confusion matrix PNG not drawn: matplotlib is not installed (pip install 'vggnet[plots]')",
    ]


@pytest.mark.slow
def test_explain_without_matplotlib_exits_2_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "report"
    done = run_without_matplotlib(
        "from vggnet.cli import main; sys.exit(main(sys.argv[1:]))", "explain", "--out", str(out)
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "vggnet explain: error: the explain report needs matplotlib, which is not installed: "
        "pip install 'vggnet[plots]'\n"
    )
    assert not out.exists()
