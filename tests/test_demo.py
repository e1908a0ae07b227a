"""The demo: its two runs follow the chosen geometry, its table is the paper's protocol, and it ends in the viewer.

Nothing here checks an error rate: those move with the CPU's rounding (docs/training.md gives measured ones).
"""

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from vggnet import build
from vggnet.configs import EvalConfig
from vggnet.demo import DEMO_GEOMETRY, STRIDE, Geometry, demo_configs, dense_note, train_digits
from vggnet.evaluate import evaluate
from vggnet.weights import save_weights


def test_configs_follow_the_geometry():
    fixed, jittered = demo_configs(False, Path("out"), Geometry(32, 32, (32, 36)), seed=3)
    assert (fixed.crop, fixed.scale, fixed.digits_size, fixed.lr, fixed.seed) == (32, [32], 32, 1e-2, 3)
    assert (jittered.scale, jittered.digits_size, jittered.lr, jittered.init_from) == ([32, 36], 36, 1e-3, fixed.out)
    assert fixed.out == "out/fixed-S32" and jittered.out == "out/jittered-S32-36"
    assert fixed.width == jittered.width == 1 / 8 and not fixed.flip and not jittered.flip
    quick, _ = demo_configs(True, Path("out"))
    assert quick.width == DEMO_GEOMETRY.width / 2 and quick.epochs == 2


def test_the_demo_geometry_keeps_its_dense_window_within_two_pixels_of_the_centre():
    """Below Q = crop + 32 dense evaluation is one window at the top-left corner; the jitter keeps Q close."""
    g = DEMO_GEOMETRY
    assert g.fixed == g.crop  # at Q = S the one window is the whole image: the centre crop itself
    for q in range(g.jitter[0], g.jitter[1] + 1):
        assert q - g.crop < STRIDE and q - g.crop <= 4


def test_dense_note_names_the_windows():
    assert "At Q=34 that is 1x1 window from the top-left corner: the pools drop the last 2 px, where the centre crop drops 1 px" in dense_note(32, 34)  # fmt: skip
    assert "At Q=384 that is 6x6 windows from the top-left corner: the pools drop the last 0 px" in dense_note(224, 384)


def test_dense_at_q_equal_to_the_crop_is_the_centre_crop(tmp_path):
    """Why the demo's fixed-S rows agree: at Q = S = crop both methods see the same pixels (any weights)."""
    torch.manual_seed(0)
    model = build("A", width=1 / 16, num_classes=10, input_size=32).eval()
    weights = tmp_path / "a.safetensors"
    save_weights(model, weights, class_names=[str(d) for d in range(10)], extra={"scale": [32, 32], "crop": 32})
    cfg = EvalConfig(flip=False, limit=60, device="cpu", scales="32")
    centre = evaluate([weights], "digits", dataclasses.replace(cfg, method="center"), progress=False)
    dense = evaluate([weights], "digits", dataclasses.replace(cfg, method="dense"), progress=False)
    assert centre.images == dense.images == 60 and torch.allclose(centre.probs, dense.probs, atol=1e-6)


@pytest.mark.slow
def test_quick_demo_prints_the_protocol_table_and_writes_the_viewer(tmp_path, capsys):
    results = train_digits(True, tmp_path)
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| A (width 1/16)")]
    cells = [[c.strip() for c in r] for r in rows]
    assert [(r[1], r[2], r[3]) for r in cells] == [
        ("32", "32", "centre crop"),
        ("32", "32", "dense"),
        ("[32, 36]", "34", "centre crop"),
        ("[32, 36]", "34", "dense"),
        ("[32, 36]", "32,34,36", "dense"),
    ]
    assert [r.images for r in results] == [40] * 5
    assert "At Q=34 that is 1x1 window from the top-left corner" in out
    page = tmp_path / "view.html"
    assert f"open {page.resolve().as_uri()} in a browser" in out
    data = json.loads(re.search(r'id="vggnet-data">(.*?)</script>', page.read_text(encoding="utf-8"), re.S).group(1))
    assert [p["name"] for p in data["photos"]] == sorted(p.name for p in (tmp_path / "digits").iterdir())
    assert len(data["photos"]) == 3 and all(len(p["top"]) == 5 for p in data["photos"])
    assert data["network"]["input"] == [3, 32, 32] and data["weights"]["file"] == "model.safetensors"
