"""Models shipped inside gliomaseg: run folders under ``gliomaseg/models/<name>/``, found by name.

A packaged model is a run folder cut to what prediction needs (``config.json``, ``best.pt`` with
float16 weights, ``postprocess.json``) plus ``MODEL_CARD.md`` and ``model.json`` (its one-line
summary and cross-validated scores, what ``gliomaseg models`` prints). Nothing is downloaded: the
weights are package data, installed with the wheel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from gliomaseg.errors import InputError
from gliomaseg.model.run_folder import RunFolder

MODELS_DIR = Path(str(files("gliomaseg"))) / "models"
DEFAULT_MODEL = "brats-gli-carved28"
"""What ``predict`` uses without ``--model``: two stages, the second at 1 mm around the tumour the first finds,
trained with resection cavities carved into the real cases as well."""
FIRST_STAGE_MODEL = "brats-gli-real28"
"""The default model's first stage on its own (the default model names it as its first stage, see
:func:`first_stage_folder`): 3-4x faster, lower scores, and the one-stage network that ``train --init-from`` can
fine-tune with the cpu preset."""
INCOMPLETE_MODEL = "brats-gli-incomplete-carved28"
"""What ``predict`` uses without ``--model`` for an exam that lacks a sequence: two stages set up as the default model's,
both trained with modality dropout; on complete exams it scored below the default model (its card), so it is not the default."""
INCOMPLETE_FIRST_STAGE_MODEL = "brats-gli-incomplete28"
"""Its first stage on its own (named as its first stage, as the default's is): one stage trained with modality dropout,
the model for incomplete exams before the two-stage one replaced it."""

INFO_FILE = "model.json"


@dataclass(frozen=True)
class PackagedModel:
    name: str
    run: RunFolder
    info: dict

    @property
    def summary(self) -> str:
        return self.info.get("summary", "")


def packaged_models() -> dict[str, PackagedModel]:
    """Every model shipped with this installation, by name."""
    if not MODELS_DIR.is_dir():
        return {}
    models = {}
    for folder in sorted(p for p in MODELS_DIR.iterdir() if (p / INFO_FILE).exists()):
        models[folder.name] = PackagedModel(folder.name, RunFolder(folder), json.loads((folder / INFO_FILE).read_text()))
    return models


def resolve_model(spec: Path | str | None) -> Path:
    """A run folder or checkpoint path as given, or the folder of the packaged model named ``spec``
    (the default model when ``spec`` is None)."""
    name = DEFAULT_MODEL if spec is None else str(spec)
    if spec is not None and Path(spec).exists():
        return Path(spec)
    models = packaged_models()
    if name in models:
        return models[name].run.path
    known = ", ".join(models) or "none installed"
    raise InputError(Path(name), f"no such run folder, checkpoint or packaged model (packaged: {known})")


def first_stage_folder(run: RunFolder) -> Path:
    """A two-stage run's first stage: its ``stage_one/`` folder, or the packaged model that folder names
    (``RunFolder.stage_one_named``). A packaged two-stage model names its first stage when that stage is itself shipped,
    so that the wheel does not carry the same weights twice (19 MB each)."""
    pointer = run.stage_one_named
    if not pointer.exists():
        return run.stage_one_dir
    try:
        name = json.loads(pointer.read_text())["name"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise InputError(pointer, 'is not {"name": <packaged model>}') from None
    models = packaged_models()
    if name not in models:
        raise InputError(pointer, f"names packaged model {name!r} as the first stage, and it is not installed")
    return models[name].run.path
