"""Every committed RESULTS.md is exactly what its report script writes from the committed metrics and posteriors."""

from pathlib import Path

from helpers import experiment_module

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def test_claims_results_regenerate():
    report = experiment_module("claims", "report")
    here = EXPERIMENTS / "claims"
    text = report.results_markdown(report.load(here / "metrics"), here / "probs")
    assert text == (here / "RESULTS.md").read_text()


def test_transfer_results_regenerate(tmp_path):
    report, run = experiment_module("transfer", "report"), experiment_module("transfer", "run")
    here = EXPERIMENTS / "transfer"
    written = report.write_results(here / "metrics", tmp_path, run.SETUP, run.BUDGETS)
    assert written.read_text() == (here / "RESULTS.md").read_text()


def test_imagenette_results_regenerate():
    report, run = experiment_module("imagenette", "report"), experiment_module("imagenette", "run")
    here = EXPERIMENTS / "imagenette"
    runs, ensembles = report.load(here / "metrics")
    assert report.results_markdown(runs, ensembles, run.PREAMBLE, here / "probs") == (here / "RESULTS.md").read_text()
