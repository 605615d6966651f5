"""One command-line convention everywhere, help that can be read, and errors that lead somewhere."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from conftest import EXAMPLES, METRIC_FIXTURES
from gliomaseg import __version__
from gliomaseg.cli import app
from gliomaseg.config import AUGMENTATIONS, FUSIONS, NETWORK_NAMES, OPTIMIZERS, PRESETS, PROTOCOL_NAMES, TARGET_NAMES
from gliomaseg.labels import LABEL_SCHEMES, MODALITIES

COMMAND = typer.main.get_command(app)
READ_ONLY = {"check", "models", "version"}  # commands that write no file
CHOICES = {"preset": PRESETS, "model": NETWORK_NAMES, "targets": TARGET_NAMES, "augment": AUGMENTATIONS, "protocol": PROTOCOL_NAMES,
           "label_scheme": LABEL_SCHEMES, "optimizer": OPTIMIZERS, "modality": MODALITIES, "missing": ("error", "empty"), "fusion": FUSIONS}


def _commands() -> dict:
    found = {}
    for name, command in COMMAND.commands.items():
        if hasattr(command, "commands"):  # a group: postprocess tune / apply
            found.update({f"{name} {sub}": c for sub, c in command.commands.items()})
        else:
            found[name] = command
    return found


def _flat(text: str) -> str:
    """Rich's boxes and wrapping removed: the words in order."""
    return " ".join(text.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


def test_version_flag():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"gliomaseg {__version__}"


def test_top_level_help_lists_every_command_and_the_workflow():
    result = CliRunner().invoke(app, ["--help"], terminal_width=80)
    flat = _flat(result.output)
    for name, command in COMMAND.commands.items():
        if not command.hidden:
            assert name in flat
    assert "own scans: prepare EXAMS -o READY -> predict READY -o PREDS" in flat and "scoring: evaluate PREDS DATA" in flat


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_option_has_help_and_every_writing_command_takes_dash_o(name):
    command = _commands()[name]
    visible = [p for p in command.params if p.param_type_name == "option" and not p.hidden and p.name != "help"]
    assert all(p.help for p in visible), [p.name for p in visible if not p.help]
    if name not in READ_ONLY:
        assert any("-o" in p.opts and "--out" in p.opts for p in visible), f"{name} has no -o/--out"
    for option in visible:  # a default worth showing is shown
        if option.default not in (None, False, ()) and not option.is_flag:
            assert option.show_default is not False, option.name
    shown = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "250"}).output
    for option, choices in CHOICES.items():  # listed, not <str>
        if any(p.name == option for p in visible) and (option != "model" or name == "train"):  # predict's --model is a path or name
            assert f"<{'|'.join(choices)}>" in shown, option


def test_a_model_is_given_with_dash_m():
    for name in ("predict", "train"):
        options = {opt for p in _commands()[name].params for opt in getattr(p, "opts", [])}
        assert {"-m", "--model"} <= options, name


def test_train_help_is_grouped_and_fits_80_columns():
    result = CliRunner().invoke(app, ["train", "--help"], terminal_width=80)
    assert result.exit_code == 0
    assert all(len(line) <= 80 for line in result.output.splitlines())
    for panel in ("Data", "Model", "Optimisation", "Schedule", "Validation and post-processing", "Devices and processes"):
        assert f"─ {panel} ─" in result.output


def test_old_spellings_still_work_with_a_deprecation_warning(trained_run, tmp_path):
    case = EXAMPLES / "TCGA-FG-6692"
    result = CliRunner().invoke(app, ["predict", str(case), str(tmp_path / "old"), "--model", str(trained_run), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "deprecated: use -o/--out" in result.output and (tmp_path / "old" / f"{case.name}.nii.gz").exists()
    result = CliRunner().invoke(app, ["predict", str(case), "-o", str(tmp_path / "new"), "-m", str(trained_run), "--device", "cpu"])
    assert result.exit_code == 0 and "deprecated" not in result.output
    both = CliRunner().invoke(app, ["predict", str(case), str(tmp_path / "a"), "-o", str(tmp_path / "b"), "-m", str(trained_run)])
    assert both.exit_code == 2 and "given twice" in _flat(both.output)
    gt = tmp_path / "gt" / case.name
    shutil.copytree(case, gt)
    old = CliRunner().invoke(app, ["evaluate", "--pred", str(tmp_path / "new"), "--gt", str(tmp_path / "gt"), "--out", str(tmp_path / "o.csv")])
    assert old.exit_code == 0 and "--pred is deprecated" in old.output and (tmp_path / "o.csv").exists()
    missing_out = CliRunner().invoke(app, ["-q", "evaluate", str(tmp_path / "new"), str(tmp_path / "gt")])
    assert missing_out.exit_code == 2 and "-o/--out" in _flat(missing_out.output)


def test_evaluate_reports_each_bad_case_goes_on_and_names_the_unmatched(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for case in ("case-a", "case-b"):
        (gt / case).mkdir(parents=True)
        (gt / case / f"{case}-seg.nii.gz").write_bytes((METRIC_FIXTURES / "syn-0000" / "gt.nii.gz").read_bytes())
    pred.mkdir()
    (pred / "case-a.nii.gz").write_bytes((METRIC_FIXTURES / "syn-0000" / "pred.nii.gz").read_bytes())
    (pred / "stray.nii.gz").write_bytes((METRIC_FIXTURES / "syn-0000" / "pred.nii.gz").read_bytes())
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(app, ["evaluate", str(pred), str(gt), "-o", str(out)])
    assert result.exit_code == 1
    assert "case-b.nii.gz: prediction missing" in result.output  # reported...
    assert "case-a" in out.read_text() and "case-b" not in out.read_text()  # ...and the rest scored
    assert "without a ground truth" in result.output and "stray.nii.gz" in result.output
    stopped = CliRunner().invoke(app, ["-q", "evaluate", str(pred), str(gt), "-o", str(tmp_path / "s.csv"), "--fail-fast"])
    assert stopped.exit_code == 1 and "case-b.nii.gz: prediction missing" in stopped.output


def test_misnamed_files_lead_to_prepare(tmp_path, trained_run):
    exam = tmp_path / "patient01"
    exam.mkdir()
    shutil.copyfile(EXAMPLES / "TCGA-DU-7294" / "TCGA-DU-7294-t1c.nii.gz", exam / "T1CE.nii.gz")
    checked = CliRunner().invoke(app, ["-q", "check", str(tmp_path)])
    assert checked.exit_code == 1
    line = next(l for l in checked.output.splitlines() if "T1CE.nii.gz" in l)
    assert "patient01-{t1n,t1c,t2w,t2f}.nii.gz" in line and "gliomaseg prepare" in line
    predicted = CliRunner().invoke(app, ["-q", "predict", str(exam), "-o", str(tmp_path / "out"), "-m", str(trained_run)])
    assert predicted.exit_code == 1 and "no case folders" not in predicted.output
    assert "T1CE.nii.gz" in predicted.output and "gliomaseg prepare" in predicted.output


def test_a_missing_optional_extra_is_one_line_naming_it(tmp_path):
    script = ("import sys; sys.modules['SimpleITK'] = None\n"  # as if the prepare extra were not installed
              "from gliomaseg.cli import app; app(['prepare', sys.argv[1], '-o', sys.argv[2]])")
    done = subprocess.run([sys.executable, "-c", script, str(EXAMPLES / "TCGA-DU-7294"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == ('error: SimpleITK is not installed; install the prepare extra: '
                                                    'pip install "gliomaseg[prepare]" (or make prepare-deps)')
    assert not (tmp_path / "out").exists()
