"""After training: the post-processing rules a run's predictions get, tuned on its validation cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gliomaseg.evaluation.protocol import protocol_named
from gliomaseg.model.loading import load_model
from gliomaseg.model.run_folder import RunFolder
from gliomaseg.postprocessing.tuning import starting_rules, tune_rules
from gliomaseg.preprocessing.cache import cache_config
from gliomaseg.training.trainer import cache_location
from gliomaseg.training.validation import predict_validation_cases


def tune_run_postprocessing(run_dir: Path | str, data: Path | str | None = None, workers: int = 1,
                            device: str | None = None) -> Path | None:
    """Tune rules into the run's postprocess.json for the checkpoint ``predict --model RUN`` uses (best.pt,
    else last.pt), on its predictions of the run's validation cases, scored by the run's protocol; None
    when the run has no labelled validation case. ``data``: what the run was trained from (its cache is
    then ``data`` itself when that is a cache; by default the run's own cache/)."""
    run = RunFolder(Path(run_dir))
    model = load_model(run.path, device, postprocess=False)
    tc = model.config.train
    cache_dir = cache_location(Path(data), run.path) if data is not None else run.cache_dir
    predicted = list(predict_validation_cases(model.network, cache_dir, run.load_split()["val"], model.targets, tc.amp, tc.patch_size,
                                               tc.cascade))
    if not predicted:
        return None
    cases = [case for case, _ in predicted]
    native_per_network = np.mean([np.prod(geometry.box_shape) for _, geometry in predicted]) / np.prod(cache_config(cache_dir).size)
    protocol = protocol_named(tc.protocol)
    result = tune_rules(cases, protocol, workers=workers, start=starting_rules(float(native_per_network)))
    return run.save_rules(result.rules, {"checkpoint": model.checkpoint.name, **result.provenance(protocol)})
