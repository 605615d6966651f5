"""Where stderr is a log, not a terminal, progress is whole lines with the ETA, not redraws."""

from __future__ import annotations

import shutil

from conftest import tiny_config
from gliomaseg.batch import run_batch
from gliomaseg.progress import progress
from gliomaseg.training.trainer import train


def _lines(capfd) -> list[str]:
    err = capfd.readouterr().err
    assert "\r" not in err
    return [line for line in err.splitlines() if line]


def test_a_log_gets_one_line_per_update_and_no_repeats(capfd):
    for _ in progress(range(3), desc="cases", unit="case", every_s=0):
        pass
    lines = _lines(capfd)
    assert [line.split(" (")[0] for line in lines] == ["cases: 0/3", "cases: 1/3", "cases: 2/3", "cases: 3/3"]
    assert lines[-1].startswith("cases: 3/3 (100%) elapsed 00:00, ETA 00:00")


def test_a_log_gets_a_start_and_an_end_line_within_the_interval(capfd):
    report = run_batch(list(range(50)), name=str, work=lambda i: i * 2, desc="cases")
    assert len(report.results) == 50
    lines = _lines(capfd)
    assert len(lines) == 2 and lines[0].startswith("cases: 0/50") and lines[1].startswith("cases: 50/50 (100%)")


def test_nested_and_quiet_bars_write_nothing_to_a_log(capfd):
    for quiet, nested in ((True, False), (False, True)):
        with progress(total=4, desc="epoch 1", unit="batch", quiet=quiet, nested=nested) as bar:
            bar.update(4)
    assert _lines(capfd) == []


def test_training_logs_one_line_per_epoch_with_loss_and_eta(trained_run, tmp_path, capfd):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    train(run / "cache", run, tiny_config(epochs=4), device="cpu", resume=True)
    epochs = [line for line in _lines(capfd) if line.startswith("epochs:")]
    assert [line.split(" (")[0] for line in epochs] == ["epochs: 2/4", "epochs: 3/4", "epochs: 4/4"]
    assert all("ETA" in line for line in epochs) and "loss=" in epochs[-1] and "val=" in epochs[-1]
