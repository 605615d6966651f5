"""Would another inference engine pay for itself? The packaged model's forward pass in torch and in ONNX Runtime.

Run: ``.venv/bin/pip install onnxruntime onnx`` once (not project dependencies), then
``.venv/bin/python benchmarks/bench_backends.py [--model NAME|RUN]``. The network is exported once with
``torch.onnx.export``; the same preprocessed bundled case goes through torch (fp32, and bf16 autocast where the
CPU computes bf16 natively, as ``predict`` runs it) and ONNX Runtime (fp32, all graph optimisations), each
timed as the median of 5 passes after a warm-up, in this process, on the machine's cores. Labels are compared
voxel by voxel on the network grid. gliomaseg adopts a backend only if it beats torch by 1.5x with labels
identical on >= 99.9 % of voxels; ``results/backends.{json,md}`` record the measurement either way.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import torch
from common import median_seconds, write_results

from gliomaseg.io.cases import load_case, read_case_folder
from gliomaseg.model.device import autocast, cpu_supports_bf16
from gliomaseg.model.loading import load_model
from gliomaseg.preprocessing.pipeline import channel_argmax, preprocess_case

CASE = Path(__file__).resolve().parents[1] / "examples" / "data" / "TCGA-DU-7294"
ADOPT_SPEEDUP, ADOPT_AGREEMENT = 1.5, 0.999


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="packaged model name, run folder or checkpoint (default: the packaged model)")
    args = parser.parse_args()
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        sys.exit("bench_backends: needs onnxruntime and onnx (.venv/bin/pip install onnxruntime onnx)")
    import onnxruntime

    model = load_model(args.model, "cpu", postprocess=False)
    if model.config.train.patch_size:
        sys.exit("bench_backends: the model predicts by sliding window; time its whole-grid forward pass on another run")
    image = torch.from_numpy(preprocess_case(load_case(read_case_folder(CASE), with_label=False), model.config.preprocess).image)[None]
    image = image.contiguous()
    network = model.network.float().to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        def torch_fp32():
            return network(image)

        def torch_bf16():
            with autocast(torch.device("cpu"), True, cpu_bf16=True):
                return network(image.to(memory_format=torch.channels_last_3d)).float()

        reference = torch_fp32()
        results = {"torch fp32": (median_seconds(torch_fp32, 5, warm_up=True), reference)}
        if cpu_supports_bf16():
            results["torch bf16 (what predict runs here)"] = (median_seconds(torch_bf16, 5, warm_up=True), torch_bf16())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(network, (image,), str(path), input_names=["image"], output_names=["logits"], opset_version=17, dynamo=False)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"image": image.numpy()}
        output = torch.from_numpy(session.run(None, feed)[0])
        results[f"ONNX Runtime {onnxruntime.__version__} fp32"] = (median_seconds(lambda: session.run(None, feed), 5, warm_up=True), output)
    labels = channel_argmax(reference[0])
    base = results["torch fp32"][0]
    rows, details = [], {}
    for name, (seconds, logits) in results.items():
        agreement = float((channel_argmax(logits[0].float()) == labels).float().mean())
        details[name] = {"seconds": round(seconds, 4), "speedup_vs_torch_fp32": round(base / seconds, 2), "label_agreement": round(agreement, 5)}
        rows.append(f"| {name} | {seconds * 1000:.0f} | {base / seconds:.2f}x | {100 * agreement:.3f} % |")
    best_other = max((d["speedup_vs_torch_fp32"] for n, d in details.items() if n.startswith("ONNX")), default=0.0)
    predict_path = next((d for n, d in details.items() if n.startswith("torch bf16")), details["torch fp32"])
    adopt = best_other / predict_path["speedup_vs_torch_fp32"] >= ADOPT_SPEEDUP
    lines = [
        f"The packaged model's network ({model.config.train.model}, {'x'.join(map(str, model.config.preprocess.size))} grid) on the "
        "preprocessed bundled case TCGA-DU-7294, median of 5 forward passes in one process, all cores:",
        "",
        "| backend | ms per pass | vs torch fp32 | labels equal to torch fp32 |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Decision: {'adopt' if adopt else 'keep torch'} (a backend must beat what predict runs by {ADOPT_SPEEDUP}x with labels equal on "
        f">= {100 * ADOPT_AGREEMENT:.1f} % of voxels).",
    ]
    write_results("backends", {"adopt_onnx": adopt, **{n: d["seconds"] for n, d in details.items()}}, {"backends": details}, lines)


if __name__ == "__main__":
    main()
