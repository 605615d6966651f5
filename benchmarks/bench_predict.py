"""End-to-end prediction time per case: gliomaseg's packaged model against a sliding-window peer.

Run: ``.venv/bin/python benchmarks/bench_predict.py [--model NAME|RUN] [--recipe] [--synthetic N]``.
Ours: ``gliomaseg predict`` per case (load, preprocess, network at the config's grid,
back to the native grid, write), with the packaged model (``--recipe``: an untrained network
of the baseline recipe, 160^3, instead). Where the seconds of one bundled case go is timed
stage by stage as well (the median of 3). Peer, in the same run on the same cases: MONAI
SegResNet with sliding-window inference over the whole native volume (roi 128^3,
overlap 0.5), with its own load, z-score and write. Each side runs in its own
process so its peak RSS is its own.
Writes ``results/predict.{json,md}`` (``--results NAME``: ``results/NAME.{json,md}``, for a model beside the default
one, whose card reads ``results/predict_<model>.json``); the last stdout line is
``{"s_per_case": ..., "peer_s_per_case": ..., "ratio": ..., "peak_rss_gb": ...}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import peak_rss_gb, write_results

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "data"
RECIPE = "recipe-untrained"


def _stages(case: Path, loaded) -> dict[str, float]:
    """Median seconds of each stage of one prediction (what ``predict`` does, step by step)."""
    import torch

    from gliomaseg.io.cases import load_case, read_case_folder
    from gliomaseg.inference.two_stage import refined_probabilities
    from gliomaseg.io.nifti import save_label_map
    from gliomaseg.model.probabilities import predict_probabilities
    from gliomaseg.preprocessing.pipeline import native_scores, preprocess_case

    first = loaded.stage_one or loaded  # a two-stage model's whole-brain pass is its first stage's
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(3):
            clock = time.perf_counter()

            def lap(name: str) -> None:
                nonlocal clock
                runs.setdefault(name, []).append(time.perf_counter() - clock)
                clock = time.perf_counter()

            loaded_case = load_case(read_case_folder(case), with_label=False)
            lap("read 4 sequences (gzip NIfTI)")
            prepared = preprocess_case(loaded_case, first.config.preprocess)
            lap("brain box, normalise, resize")
            probabilities = predict_probabilities(first.network, torch.from_numpy(prepared.image)[None], first.targets,
                                                  amp=first.config.train.amp, patch_size=first.config.train.patch_size)[0]
            lap("network")
            native = native_scores(probabilities.float().cpu(), prepared.geometry, first.targets.outside)
            lap("back to the native grid")
            if loaded.stage_one is not None:
                native = refined_probabilities(loaded, loaded_case, native)
                lap("second stage: 1 mm sliding window around the tumour")
            labels = loaded.rules.apply(loaded.targets.decode(native).numpy())
            lap("labels + post-processing")
            save_label_map(labels, loaded_case.affine, Path(tmp) / "labels.nii.gz", loaded_case.space)
            lap("write (gzip NIfTI)")
    return {name: statistics.median(values) for name, values in runs.items()}


def _ours(cases: list[Path], out: Path, model: str | None) -> dict:
    import torch

    from gliomaseg.config import ExperimentConfig
    from gliomaseg.inference.predictor import LoadedModel, load_model, predict
    from gliomaseg.model.device import ready_for_inference
    from gliomaseg.model.networks import network_for

    if model == RECIPE:
        config = ExperimentConfig()
        loaded = LoadedModel(ready_for_inference(network_for(config.train), torch.device("cpu")), config, Path("untrained"))
    else:
        loaded = load_model(model, device="cpu")
    times = {}
    for case in cases:
        started = time.perf_counter()
        predict(case, out, loaded, device="cpu", overwrite=True, quiet=True)
        times[case.name] = time.perf_counter() - started
    return {"seconds": times, "stages": _stages(cases[0], loaded), "peak_rss_gb": peak_rss_gb(), "threads": torch.get_num_threads()}


def _peer(cases: list[Path], out: Path) -> dict:
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import SegResNet

    from gliomaseg.io.cases import load_case, read_case_folder
    from gliomaseg.io.nifti import save_label_map

    network = SegResNet(spatial_dims=3, in_channels=4, out_channels=5, init_filters=16).eval()
    times = {}
    for case in cases:
        started = time.perf_counter()
        loaded = load_case(read_case_folder(case), with_label=False)
        image = loaded.image
        brain = image.any(axis=0)
        normalised = np.zeros_like(image)
        for c in range(image.shape[0]):
            values = image[c][brain]
            normalised[c][brain] = (values - values.mean()) / (values.std() + 1e-8)
        with torch.inference_mode():
            logits = sliding_window_inference(torch.from_numpy(normalised)[None], (128, 128, 128), 1, network, overlap=0.5)
        save_label_map(logits[0].argmax(0).numpy().astype(np.uint8), loaded.affine, out / f"{case.name}.nii.gz")
        times[case.name] = time.perf_counter() - started
    return {"seconds": times, "peak_rss_gb": peak_rss_gb(), "threads": torch.get_num_threads()}


def _run_part(part: str, cases: list[Path], out: Path, model: str | None) -> dict:
    command = [sys.executable, __file__, "--part", part, "--out", str(out), *(["--model", model] if model else []), *map(str, cases)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="packaged model name, run folder or checkpoint (default: the packaged model)")
    parser.add_argument("--recipe", action="store_true", help="time an untrained network of the baseline recipe (160^3) instead")
    parser.add_argument("--synthetic", type=int, default=1, help="synthetic cases (182x218x182) besides the bundled real ones")
    parser.add_argument("--results", default="predict", help="results/NAME.{json,md} to write (default: predict)")
    parser.add_argument("--part", choices=["ours", "peer"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("cases", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recipe:
        args.model = RECIPE
    if args.part:
        cases = [Path(c) for c in args.cases]
        result = _ours(cases, Path(args.out), args.model) if args.part == "ours" else _peer(cases, Path(args.out))
        print(json.dumps(result))
        return

    from gliomaseg.data.synthetic import write_synthetic_dataset

    with tempfile.TemporaryDirectory() as tmp:
        cases = sorted(p for p in EXAMPLES.iterdir() if p.is_dir())
        if args.synthetic:
            cases += write_synthetic_dataset(Path(tmp) / "synthetic", args.synthetic, seed=42)
        ours = _run_part("ours", cases, Path(tmp) / "ours", args.model)
        peer = _run_part("peer", cases, Path(tmp) / "peer", None)
    s_ours = statistics.mean(ours["seconds"].values())
    s_peer = statistics.mean(peer["seconds"].values())
    headline = {"s_per_case": round(s_ours, 2), "peer_s_per_case": round(s_peer, 2), "ratio": round(s_peer / s_ours, 2),
                "peak_rss_gb": round(ours["peak_rss_gb"], 2)}
    from gliomaseg.model.packaged import DEFAULT_MODEL

    # a packaged model's folder (timed before its card exists) is recorded by its name, as the card looks it up
    model = Path(args.model).name if args.model and Path(args.model).is_dir() else args.model or DEFAULT_MODEL
    described = ("the baseline recipe's VNet3d at 160^3, untrained weights" if args.model == RECIPE
                 else f"model {model}{'' if args.model else ' (packaged)'}")
    headline["stages"] = {k: round(v, 3) for k, v in ours["stages"].items()}
    table = [
        f"Ours: `gliomaseg predict` with {described}, CPU, {ours['threads']} threads. "
        "Peer: MONAI SegResNet, sliding window roi 128^3, overlap 0.5.",
        "",
        "| case | gliomaseg s | peer s |",
        "|---|---|---|",
        *(f"| {name} | {ours['seconds'][name]:.1f} | {peer['seconds'][name]:.1f} |" for name in ours["seconds"]),
        f"| **mean** | **{s_ours:.1f}** | **{s_peer:.1f}** |",
        "",
        f"Peak RSS: gliomaseg {ours['peak_rss_gb']:.2f} GB, peer {peer['peak_rss_gb']:.2f} GB; peer/ours time ratio {s_peer / s_ours:.2f}.",
        "",
        f"Where the seconds of {cases[0].name} go (median of 3, same process):",
        "",
        "| stage | seconds |",
        "|---|---|",
        *(f"| {name} | {seconds:.3f} |" for name, seconds in ours["stages"].items()),
    ]
    write_results(args.results, headline, {"model": model, "ours": ours, "peer": peer}, table)


if __name__ == "__main__":
    main()
