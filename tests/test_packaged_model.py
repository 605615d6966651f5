"""The models shipped inside the package: found by name, installed with the wheel, loaded offline and
without unpickling code, segmenting a real bundled case (the model for incomplete exams when a sequence is
missing), their cards agreeing with the cross-validation."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from gliomaseg.cli import app
from gliomaseg.labels import REGIONS
from gliomaseg.inference.predictor import missing_sequences_path
from gliomaseg.errors import InputError
from gliomaseg.model.loading import load_model
from gliomaseg.model.packaged import (DEFAULT_MODEL, FIRST_STAGE_MODEL, INCOMPLETE_FIRST_STAGE_MODEL, INCOMPLETE_MODEL, INFO_FILE,
                                      first_stage_folder, packaged_models)
from gliomaseg.model.run_folder import RunFolder

REPO = Path(__file__).resolve().parents[1]
CASE = REPO / "examples" / "data" / "TCGA-DU-7294"
WEIGHTS_LIMIT_BYTES = 25 * 2**20

# Loads the packaged model named by argv[1] (else the default) from wherever ``gliomaseg`` is imported, with every socket refused.
LOAD_OFFLINE = """
import socket, sys
def refuse(*args, **kwargs):
    raise OSError("network access is blocked")
for name in ("connect", "connect_ex"):
    setattr(socket.socket, name, refuse)
socket.getaddrinfo = socket.create_connection = refuse
import gliomaseg
from gliomaseg.model.loading import load_model
model = load_model(sys.argv[1] if len(sys.argv) > 1 else None, "cpu")
print(gliomaseg.__file__, model.checkpoint, type(model.network).__name__, model.rules.changes_anything, 1 + (model.stage_one is not None))
"""


def _default_model():
    models = packaged_models()
    assert DEFAULT_MODEL in models, f"the default model {DEFAULT_MODEL} is not packaged (found: {list(models)})"
    return models[DEFAULT_MODEL]


def _incomplete_model():
    models = packaged_models()
    assert INCOMPLETE_MODEL in models, f"the model for incomplete exams {INCOMPLETE_MODEL} is not packaged (found: {list(models)})"
    return models[INCOMPLETE_MODEL]


TRAINING_MACHINE_PATH = re.compile(r"(?<![\w.])/(work|home|tmp|root|Users|scratch)/")


@pytest.mark.parametrize("which", ["default", "incomplete"])
def test_a_packaged_model_is_a_small_float16_run_folder_with_its_card(which):
    model = _default_model() if which == "default" else _incomplete_model()
    run = model.run
    for path in (run.config_file, run.best_checkpoint, run.rules_file, run.model_card, run.path / INFO_FILE):
        assert path.is_file(), path
    assert run.best_checkpoint.stat().st_size <= WEIGHTS_LIMIT_BYTES
    import torch

    weights = torch.load(run.best_checkpoint, map_location="cpu", weights_only=True)["model"]
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float16}
    card = run.model_card.read_text()
    for must in ("research", "BraTS", "synthetic", "Failure modes"):
        assert must in card, must
    pictures = re.findall(r"\]\((failures/[^)]+)\)", card)
    assert pictures and all((run.path / picture).is_file() for picture in pictures), pictures
    for text in (card, (run.path / INFO_FILE).read_text(), run.config_file.read_text()):
        assert not TRAINING_MACHINE_PATH.search(text), TRAINING_MACHINE_PATH.search(text)


def test_models_lists_the_packaged_model_with_its_scores():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert f"{DEFAULT_MODEL} (default)" in result.output
    assert f"{INCOMPLETE_MODEL} (default for exams missing a sequence)" in result.output
    assert f"{FIRST_STAGE_MODEL} (the default's first stage alone)" in result.output
    assert f"{INCOMPLETE_FIRST_STAGE_MODEL} (the first stage alone of the model for exams missing a sequence)" in result.output
    assert "lesion-wise Dice: WT 0." in result.output


def test_predict_without_a_model_segments_the_bundled_real_case(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gliomaseg", "predict", str(CASE), "-o", str(tmp_path / "pred"), "--device", "cpu"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"using the packaged model {DEFAULT_MODEL}" in result.stderr
    predicted = nib.load(str(tmp_path / "pred" / f"{CASE.name}.nii.gz"))
    truth = nib.load(str(CASE / f"{CASE.name}-seg.nii.gz"))
    assert predicted.shape == truth.shape and predicted.get_data_dtype() == np.uint8
    np.testing.assert_allclose(predicted.affine, truth.affine, atol=1e-5)
    whole_predicted = np.isin(np.asarray(predicted.dataobj), (1, 2, 3))
    whole_truth = np.isin(np.asarray(truth.dataobj), (1, 2, 3))
    dice = 2 * (whole_predicted & whole_truth).sum() / (whole_predicted.sum() + whole_truth.sum())
    assert dice >= 0.5, dice


def test_predict_without_a_model_gives_an_exam_missing_a_sequence_to_the_model_for_incomplete_exams(tmp_path):
    exam = tmp_path / "exams" / CASE.name
    shutil.copytree(CASE, exam)
    (exam / f"{CASE.name}-t2w.nii.gz").unlink()
    out = tmp_path / "pred"
    result = subprocess.run([sys.executable, "-m", "gliomaseg", "predict", str(exam.parent), "-o", str(out), "--device", "cpu"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"{CASE.name}: no t2w; zero-filled, predicted by {INCOMPLETE_MODEL}" in result.stderr
    record = json.loads(missing_sequences_path(out, CASE.name).read_text())
    assert record["missing_modalities"] == ["t2w"] and f"/{INCOMPLETE_MODEL}/" in record["models"][0]
    predicted = nib.load(str(out / f"{CASE.name}.nii.gz"))
    truth = nib.load(str(CASE / f"{CASE.name}-seg.nii.gz"))
    assert predicted.shape == truth.shape and predicted.get_data_dtype() == np.uint8
    whole_predicted = np.isin(np.asarray(predicted.dataobj), (1, 2, 3))
    whole_truth = np.isin(np.asarray(truth.dataobj), (1, 2, 3))
    assert 2 * (whole_predicted & whole_truth).sum() / (whole_predicted.sum() + whole_truth.sum()) >= 0.5
    refused = subprocess.run([sys.executable, "-m", "gliomaseg", "-q", "predict", str(exam.parent), "-o", str(tmp_path / "refused"),
                              "--device", "cpu", "--model", DEFAULT_MODEL], capture_output=True, text=True)
    assert refused.returncode == 1
    errors = [line for line in refused.stderr.splitlines() if "missing modality" in line]
    assert len(errors) == 1 and f"{CASE.name}-t2w.nii.gz" in errors[0] and "trained with all four sequences" in errors[0], refused.stderr
    assert not list((tmp_path / "refused").glob("*.nii.gz"))


def test_predict_pre_operative_labels_no_cavity_and_changes_no_other_voxel(tmp_path):
    """A cavity carved into the bundled case: the default model labels part of it RC; told the exam is from before
    surgery, it labels none, and only the voxels it had called cavity change."""
    from gliomaseg.data.carved_cavities import write_carved_cases
    from gliomaseg.inference.predictor import predict

    (tmp_path / "hosts").mkdir()
    (tmp_path / "hosts" / CASE.name).symlink_to(CASE)
    [carved] = write_carved_cases(tmp_path / "hosts", tmp_path / "carved", 1, seed=0)
    predict(carved.parent, tmp_path / "post", postprocess=False, quiet=True, fail_fast=True)
    result = subprocess.run([sys.executable, "-m", "gliomaseg", "predict", str(carved.parent), "-o", str(tmp_path / "pre"),
                             "--device", "cpu", "--no-postprocess", "--pre-operative"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "pre-operative exams: no voxel is labelled resection cavity (RC)" in result.stderr
    post, pre = (np.asarray(nib.load(str(tmp_path / name / f"{carved.name}.nii.gz")).dataobj) for name in ("post", "pre"))
    truth = np.asarray(nib.load(str(carved / f"{carved.name}-seg.nii.gz")).dataobj)
    assert (post[truth == 4] == 4).sum() >= 1000, "the default model no longer finds the carved cavity"
    assert not (pre == 4).any()
    np.testing.assert_array_equal(pre[post != 4], post[post != 4])


@pytest.mark.parametrize("which", ["default", "incomplete"])
def test_a_two_stage_model_names_the_packaged_first_stage_it_was_trained_over_instead_of_a_copy(which):
    model = _default_model() if which == "default" else _incomplete_model()
    first_stage = packaged_models()[model.info["first_stage"]]
    assert model.run.load_config().train.stage_one == first_stage.name
    # the weights ship once: stage_one/ holds only the name of the packaged model
    assert [p.name for p in model.run.stage_one_dir.iterdir()] == [RunFolder.STAGE_ONE_NAMED]
    loaded = load_model(model.name, "cpu")
    assert loaded.stage_one.checkpoint == first_stage.run.best_checkpoint
    assert loaded.stage_one.rules == first_stage.run.rules() and loaded.stage_one.rules.changes_anything


def test_a_first_stage_named_but_not_installed_is_refused_naming_the_file(two_stage_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(two_stage_run, moved, ignore=shutil.ignore_patterns("cache", "stage_one"))
    pointer = RunFolder(moved).stage_one_named
    pointer.parent.mkdir()
    pointer.write_text(json.dumps({"name": "no-such-model"}))
    with pytest.raises(InputError, match="no-such-model.*not installed") as raised:
        load_model(moved, "cpu")
    assert str(pointer) in str(raised.value)
    pointer.write_text(json.dumps({"name": FIRST_STAGE_MODEL}))  # installed: it loads as that model
    assert load_model(moved, "cpu").stage_one.checkpoint == packaged_models()[FIRST_STAGE_MODEL].run.best_checkpoint


def _per_case_dice(source: dict) -> dict[str, dict[str, float]]:
    """Held-out lesion-wise Dice per case and region, from real_cv.json (its chosen setup, nested rules)."""
    return {case: {r: entry["nested"][r][0] for r in REGIONS} for case, entry in source["setups"][source["chosen"]]["per_case"].items()}


def test_the_model_card_and_model_json_carry_the_measured_scores():
    model = _default_model()
    recorded = model.info["cross_validation"]
    source = json.loads((REPO / recorded["source"]).read_text())
    per_case = _per_case_dice(source)
    assert recorded["cases"] == len(per_case) == 28
    card = model.run.model_card.read_text()
    for region, stat in recorded["dice"].items():
        assert abs(stat["mean"] - np.mean([case[region] for case in per_case.values()])) < 1e-4, region
        assert stat["low"] <= stat["mean"] <= stat["high"]
        assert f"{stat['mean']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}]" in card, region
    assert recorded["source"] in card
    cavities = source["setups"][source["chosen"]]["false_cavities"]["nested"]  # predicted on pre-operative tumours
    assert f"{cavities['cases']} of {cavities['of']} pre-operative cases were given a resection cavity" in card
    # its second stage learned cavities carved into the real cases: RC on those carved into the held-out ones
    assert model.info["training"]["carved_per_case"] >= 1
    carved = source["setups"][source["chosen"]]["carved_rc_per_case"]
    rc = recorded["carved_rc_dice"]
    assert len(carved) == 28 and abs(rc["mean"] - np.mean([entry["nested"] for entry in carved.values()])) < 1e-4
    assert f"lesion-wise Dice {rc['mean']:.3f} [{rc['low']:.3f}, {rc['high']:.3f}]" in card


def test_the_incomplete_exam_card_carries_each_input_s_cross_validated_scores():
    model = _incomplete_model()
    assert model.run.load_config().train.modality_dropout > 0
    # two stages, both trained with dropout: the first is the one-stage incomplete-exam model, shipped beside it too
    assert model.info["first_stage"] == INCOMPLETE_FIRST_STAGE_MODEL
    assert RunFolder(first_stage_folder(model.run)).load_config().train.modality_dropout > 0
    recorded = model.info["cross_validation"]
    setup = json.loads((REPO / recorded["source"]).read_text())["setups"][recorded["setup"]]
    assert set(recorded["inputs"]) == {"no-t1n", "no-t1c", "no-t2w", "no-t2f", "t1c+t2f"}
    card = model.run.model_card.read_text()
    for name, stats in recorded["inputs"].items():
        row = next(line for line in card.splitlines() if line.startswith(f"| {name} "))
        for region, cell in zip(recorded["dice"], row.strip("| ").split(" | ")[1:], strict=True):
            scores = [(entry["inputs"][name][region][0], entry["nested"][region][0]) for entry in setup["per_case"].values()]
            assert abs(stats["dice"][region]["mean"] - np.mean([s for s, _ in scores])) < 1e-4, (name, region)
            change = stats["change_from_full"][region]
            assert abs(change["mean"] - np.mean([s - full for s, full in scores])) < 1e-4, (name, region)
            assert cell == f"{stats['dice'][region]['mean']:.3f} ({change['mean']:+.3f} [{change['low']:+.3f}, {change['high']:+.3f}])"


def test_every_model_beside_the_default_is_compared_with_the_default_model_s_setup():
    """A card beside the default one says what choosing it costs against the setup that is the default today (a card
    kept from before the default changed would compare with an older one)."""
    source = json.loads((REPO / "benchmarks" / "results" / "real_cv.json").read_text())
    default_model = _default_model()
    assert default_model.info["cross_validation"]["setup"] == source["chosen"]
    assert "versus_default" not in default_model.info["cross_validation"]
    default = source["setups"][source["chosen"]]["per_case"]
    beside = {name: model for name, model in packaged_models().items() if name != DEFAULT_MODEL}
    assert {FIRST_STAGE_MODEL, INCOMPLETE_MODEL, INCOMPLETE_FIRST_STAGE_MODEL} <= set(beside)
    for name, model in beside.items():
        recorded = model.info["cross_validation"]
        versus = recorded["versus_default"]
        assert versus["setup"] == source["chosen"], name
        own = source["setups"][recorded["setup"]]["per_case"]
        card = model.run.model_card.read_text()
        sentence = next(line for line in card.splitlines() if "paired per case against the setup of the default model" in line)
        assert f"({source['chosen']}, same folds" in sentence, name
        for region, stat in versus["dice"].items():
            change = np.mean([own[case]["nested"][region][0] - default[case]["nested"][region][0] for case in own])
            assert abs(stat["mean"] - change) < 1e-4, (name, region)
            assert f"{region} {stat['mean']:+.3f} [{stat['low']:+.3f}, {stat['high']:+.3f}]" in sentence, (name, region)


def _install_wheel(tmp_path: Path, extra_models: dict[str, Path] | None = None) -> tuple[list[str], Path]:
    """Build a wheel from a copy of the sources (a build writes build/ and egg-info beside them), with
    ``extra_models`` (name: packaged-model folder) added, and pip-install it into a folder: its names, the folder."""
    source = tmp_path / "source"
    shutil.copytree(REPO / "gliomaseg", source / "gliomaseg", ignore=shutil.ignore_patterns("__pycache__"))
    for name, folder in (extra_models or {}).items():
        shutil.copytree(folder, source / "gliomaseg" / "models" / name)
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "wheel"),
                            str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "wheel").glob("gliomaseg-*.whl"))
    target = tmp_path / "installed"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    return zipfile.ZipFile(wheel).namelist(), target


def _load_offline(tmp_path: Path, target: Path, model: str | None = None) -> list[str]:
    """LOAD_OFFLINE run with the installed copy first on the path, not the source tree: what it prints."""
    loaded = subprocess.run([sys.executable, "-c", LOAD_OFFLINE, *([model] if model else [])], capture_output=True, text=True,
                            cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert loaded.returncode == 0, loaded.stderr
    return loaded.stdout.split()


def test_the_wheel_carries_the_model_and_it_loads_installed_with_the_network_blocked(tmp_path):
    names, target = _install_wheel(tmp_path)
    folder = f"gliomaseg/models/{DEFAULT_MODEL}/"
    two_stage = _default_model().run.stage_one_dir.is_dir()
    for name in ("best.pt", "config.json", "postprocess.json", "MODEL_CARD.md", INFO_FILE,
                 *((f"{RunFolder.STAGE_ONE}/{RunFolder.STAGE_ONE_NAMED}",) if two_stage else ())):
        assert folder + name in names, name
    if two_stage:  # the first stage it names, installed beside it
        assert f"gliomaseg/models/{_default_model().info['first_stage']}/best.pt" in names
    module, checkpoint, network, has_rules, stages = _load_offline(tmp_path, target)
    assert module.startswith(str(target)) and checkpoint.startswith(str(target / "gliomaseg" / "models" / DEFAULT_MODEL))
    assert network == "VNet3d" and has_rules == "True" and stages == ("2" if two_stage else "1")


def test_a_packaged_two_stage_model_installs_with_its_first_stage_and_loads_offline(two_stage_run, tmp_path):
    packaged = tmp_path / "two-stage"
    for name in (RunFolder.CONFIG, RunFolder.BEST, f"{RunFolder.STAGE_ONE}/{RunFolder.CONFIG}", f"{RunFolder.STAGE_ONE}/{RunFolder.BEST}"):
        (packaged / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(two_stage_run / name, packaged / name)
    (packaged / INFO_FILE).write_text(json.dumps({"summary": "a two-epoch test model"}))
    names, target = _install_wheel(tmp_path, {"two-stage-test": packaged})
    assert "gliomaseg/models/two-stage-test/stage_one/best.pt" in names
    module, checkpoint, _, _, stages = _load_offline(tmp_path, target, "two-stage-test")
    assert module.startswith(str(target)) and checkpoint.startswith(str(target / "gliomaseg" / "models" / "two-stage-test"))
    assert stages == "2"
    listed = subprocess.run([sys.executable, "-m", "gliomaseg", "models"], capture_output=True, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert "two-stage-test: a two-epoch test model (two-stage:" in listed.stdout, listed.stdout + listed.stderr


def test_init_from_the_packaged_model_with_another_network_is_one_line_naming_both(synthetic_dir, tmp_path):
    result = CliRunner().invoke(app, ["-q", "train", str(synthetic_dir), "--out", str(tmp_path / "run"), "--size", "32", "--epochs", "1",
                                      "--device", "cpu", "--model", "segresnet", "--init-from", DEFAULT_MODEL])
    assert result.exit_code != 0
    message = result.output.strip()
    assert len(message.splitlines()) == 1, message
    assert "vnet3d" in message and "segresnet" in message and DEFAULT_MODEL in message
