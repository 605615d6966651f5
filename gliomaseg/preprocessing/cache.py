"""The preprocessed cache: what training reads instead of four .nii.gz files per step.

One folder per case: ``image.npy`` (4, *size) float16 and ``label.npy`` (*size)
uint8, both memory-mappable, the native-grid label crop (for scoring validation
on the native grid), and ``meta.json`` with the geometry, written last: a case
counts as done only once its meta.json exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from gliomaseg.batch import BatchReport, run_batch
from gliomaseg.config import PreprocessConfig
from gliomaseg.errors import InputError
from gliomaseg.io.atomic import remove_stale_temporaries, write_atomic, write_text_atomic
from gliomaseg.io.cases import find_case_folders, load_case, read_case_folder
from gliomaseg.preprocessing.pipeline import Geometry, PreprocessedCase, preprocess_case

CACHE_MARKER = "preprocess.json"


@dataclass(frozen=True)
class CachedCase:
    """A case read back from the cache; arrays are read-only memory maps."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    geometry: Geometry
    folder: Path

    def native_label_crop(self) -> np.ndarray | None:
        path = self.folder / "native_label.npz"
        return np.load(path)["label"] if path.exists() else None


def is_cache(folder: Path | str) -> bool:
    return (Path(folder) / CACHE_MARKER).exists()


def write_cached_case(case: PreprocessedCase, out_dir: Path) -> Path:
    folder = out_dir / case.case_id
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "image.npy", lambda tmp: np.save(tmp, case.image.astype(np.float16)))
    if case.label is not None:
        write_atomic(folder / "label.npy", lambda tmp: np.save(tmp, case.label))
        write_atomic(folder / "native_label.npz", lambda tmp: np.savez_compressed(tmp, label=case.native_label_crop))
    meta = {"case_id": case.case_id, "has_label": case.label is not None, "geometry": case.geometry.to_dict()}
    if case.native_label_crop is not None:
        meta["label_values"] = np.unique(case.native_label_crop).tolist()
    write_text_atomic(folder / "meta.json", json.dumps(meta) + "\n")
    return folder


def read_cached_case(folder: Path) -> CachedCase:
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise InputError(folder, "not a finished cache entry (no meta.json)")
    meta = json.loads(meta_path.read_text())
    image = np.load(folder / "image.npy", mmap_mode="r")
    label = np.load(folder / "label.npy", mmap_mode="r") if meta["has_label"] else None
    return CachedCase(meta["case_id"], image, label, Geometry.from_dict(meta["geometry"]), folder)


def cached_case_ids(cache_dir: Path | str) -> list[str]:
    cache_dir = Path(cache_dir)
    return sorted(p.parent.name for p in cache_dir.glob("*/meta.json"))


def _metas(cache_dir: Path | str) -> list[dict]:
    return [json.loads((Path(cache_dir) / case_id / "meta.json").read_text()) for case_id in cached_case_ids(cache_dir)]


def labelled_case_ids(cache_dir: Path | str) -> tuple[list[str], list[str]]:
    """(cases with a label map, cases without one) in the cache, each sorted."""
    metas = _metas(cache_dir)
    return [m["case_id"] for m in metas if m["has_label"]], [m["case_id"] for m in metas if not m["has_label"]]


def cached_label_values(cache_dir: Path | str) -> set[int]:
    """Every label value present in the cache's label maps."""
    return {v for m in _metas(cache_dir) for v in m.get("label_values", [])}


def cache_config(cache_dir: Path | str) -> PreprocessConfig:
    data = json.loads((Path(cache_dir) / CACHE_MARKER).read_text())
    return PreprocessConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _preprocess_one(folder: Path, out_dir: Path, config: PreprocessConfig) -> Path:
    case = load_case(read_case_folder(folder), label_scheme=config.label_scheme)
    return write_cached_case(preprocess_case(case, config), out_dir)


def preprocess_dataset(
    data_dir: Path | str,
    out_dir: Path | str,
    config: PreprocessConfig,
    workers: int = 1,
    overwrite: bool = False,
    fail_fast: bool = False,
    quiet: bool = False,
) -> BatchReport[Path]:
    """Preprocess every case under ``data_dir`` into ``out_dir``; finished cases are skipped.

    A cache made with another configuration is refused rather than mixed.
    """
    out_dir = Path(out_dir)
    marker = out_dir / CACHE_MARKER
    if marker.exists() and cache_config(out_dir) != config:
        raise InputError(marker, "cache was made with a different preprocessing configuration; use a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(marker, json.dumps(config.__dict__) + "\n")
    folders = find_case_folders(data_dir)
    for folder in (out_dir, *(p for p in out_dir.iterdir() if p.is_dir())):
        remove_stale_temporaries(folder)
    done = set() if overwrite else set(cached_case_ids(out_dir))
    todo = [f for f in folders if f.name not in done]
    report = run_batch(
        todo,
        name=lambda f: f.name,
        work=partial(_preprocess_one, out_dir=out_dir, config=config),
        workers=workers,
        desc="preprocess",
        fail_fast=fail_fast,
        quiet=quiet,
    )
    for case_id in done & {f.name for f in folders}:
        report.results[case_id] = out_dir / case_id
    return report
