"""The demo's code path end to end, on settings small enough for CI (the real demo: `make demo`)."""

from __future__ import annotations

import csv
from dataclasses import replace

from conftest import EXAMPLES, SMALL_SHAPE
from gliomaseg.demo import DemoSettings, run_demo
from gliomaseg.labels import REGIONS


def test_demo_trains_predicts_scores_and_draws(tmp_path):
    settings = replace(DemoSettings(), train_cases=3, test_cases=2, shape=SMALL_SHAPE, size=32, epochs=1)
    scores = run_demo(tmp_path, settings, bundled=EXAMPLES, quiet=True)
    assert set(scores) == set(REGIONS) and all(0.0 <= v <= 1.0 for v in scores.values())
    rows = list(csv.DictReader((tmp_path / "evaluation.csv").open()))
    test_cases = sorted(p.name for p in (tmp_path / "data" / "test").iterdir())
    assert sorted({r["case_id"] for r in rows}) == test_cases and len(rows) == len(test_cases) * len(REGIONS)
    bundled = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir())
    assert sorted(p.name for p in (tmp_path / "predictions").glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in test_cases + bundled)
    assert sorted(p.stem for p in (tmp_path / "figures").glob("*.png")) == sorted(test_cases + bundled + ["training_curves"])
    assert (tmp_path / "report.html").stat().st_size > 50_000
    config = (tmp_path / "run" / "config.json").read_text()
    assert '"model": "vnet3d"' in config and '"lr": 0.001' in config  # the recipe's network and rate
