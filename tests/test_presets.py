"""Presets: named starting points for `train`; explicit options win, and the run records the preset."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gliomaseg.cli import app
from gliomaseg.config import PRESETS, ExperimentConfig, TrainConfig, train_config_for


def test_recipe_preset_is_the_dataclass_defaults():
    assert train_config_for("recipe") == TrainConfig()
    assert train_config_for("recipe", epochs=None, lr=None) == TrainConfig()


def test_explicit_settings_win_over_the_preset():
    cpu = train_config_for("cpu")
    assert (cpu.epochs, cpu.batch_size) == (PRESETS["cpu"]["epochs"], PRESETS["cpu"]["batch_size"]) != (300, 4)
    assert train_config_for("cpu", epochs=3, lr=None).epochs == 3
    assert train_config_for("cpu", epochs=3).batch_size == PRESETS["cpu"]["batch_size"]
    with pytest.raises(ValueError, match="unknown preset 'gpu'"):
        train_config_for("gpu")


def test_cpu_preset_run_records_its_settings(tmp_path, synthetic_dir):
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["-q", "train", str(synthetic_dir), "--out", str(run), "--preset", "cpu", "--epochs", "1",
                                      "--repeats", "1", "--steps-per-epoch", "2", "--device", "cpu", "-j", "1", "--augment", "basic"])
    assert result.exit_code == 0, result.output
    saved = ExperimentConfig.load(run / "config.json")
    assert saved.train.augment == "basic"
    assert saved.preset == "cpu"
    assert saved.preprocess.size == (PRESETS["cpu"]["size"],) * 3
    assert (saved.train.epochs, saved.train.repeats) == (1, 1)  # given
    assert saved.train.batch_size == PRESETS["cpu"]["batch_size"]  # from the preset
    assert json.loads((run / "config.json").read_text())["preset"] == "cpu"


def test_a_cache_keeps_its_own_size_under_a_preset(trained_run, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["-q", "train", str(trained_run / "cache"), "--out", str(run), "--preset", "cpu",
                                      "--epochs", "1", "--repeats", "1", "--steps-per-epoch", "2", "-j", "1"])
    assert result.exit_code == 0, result.output
    assert ExperimentConfig.load(run / "config.json").preprocess.size == (32, 32, 32)


def test_unknown_preset_is_a_usage_error(synthetic_dir, tmp_path):
    result = CliRunner().invoke(app, ["-q", "train", str(synthetic_dir), "--out", str(tmp_path / "run"), "--preset", "gpu"])
    assert result.exit_code == 2
    assert "'gpu' is not one of 'recipe'" in " ".join(result.output.replace("│", " ").split())  # --help lists the choices
    assert not (tmp_path / "run").exists()


def test_unknown_augmentation_is_a_usage_error(synthetic_dir, tmp_path):
    result = CliRunner().invoke(app, ["-q", "train", str(synthetic_dir), "--out", str(tmp_path / "run"), "--augment", "strong"])
    assert result.exit_code == 2
    assert "'strong' is not one of 'none', 'basic', 'multisite'" in " ".join(result.output.replace("│", " ").split())
    assert not (tmp_path / "run").exists()
