"""Cost of explaining a hit against classifying it: Grad-CAM (HiResCAM, guided Grad-CAM) vs classification.

Same model, same frames, same batch: classification is preprocessing + forward pass + softmax
(what the CNN hit finder does per batch); Grad-CAM is :class:`GradCamExplainer` on that batch
(preprocessing, forward, backward to the target layer, map back onto the frame). Goal: ratio <= 2.

Uses the shipped default model when there is one, else a freshly built HitNet (untrained weights
time the same as trained ones). Usage::

    .venv/bin/python benchmarks/bench_gradcam.py [--batch 16] [--repeats 5] [--device cpu]
        [--methods gradcam,hirescam,guided] [--layers spots.logit,spots.body]

``--layers`` times each method at each of these target layers (default: the model's own).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import numpy as np
import torch

from sfx_cnnhit.errors import NotAvailableError
from sfx_cnnhit.explain.gradcam import GradCamExplainer
from sfx_cnnhit.models import create_model, load_model, preprocess
from sfx_cnnhit.models.hitnet import fuse_conv_bn_


def frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Noise frames with 40 bright 3x3 spots each (a hit)."""
    rng = np.random.default_rng(seed)
    data = rng.normal(10.0, 3.0, (n, size, size)).astype(np.float32)
    for i in range(n):
        for ss, fs in rng.integers(2, size - 2, (40, 2)):
            data[i, ss - 1 : ss + 2, fs - 1 : fs + 2] += 400.0
    return data


def median_times(runs: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time (s) of each of ``runs``, timed in interleaved rounds after one warm-up each, so
    that changes in the machine's load hit all of them alike."""
    for run in runs:
        run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, bucket in zip(runs, times, strict=True):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            run()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            bucket.append(time.perf_counter() - t0)
    return [statistics.median(bucket) for bucket in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default="gradcam,hirescam", help="comma-separated: gradcam, hirescam, guided")
    parser.add_argument("--layers", default=None, help="comma-separated CAM target layers (default: the model's)")
    args = parser.parse_args()
    device = torch.device(args.device)
    try:
        model, spec = load_model(None, device=device, optimize=True)
        origin = "shipped default model"
    except NotAvailableError:
        model, spec = create_model("hitnet", "hitmiss")
        model = fuse_conv_bn_(model.eval()).to(device, memory_format=torch.channels_last)
        origin = "freshly built HitNet (no shipped model yet; untrained weights, same cost)"
    print(f"model: {spec.name} ({origin}), input {spec.input_size}^2, CAM layer {spec.cam_target_layer}")
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch}, median of {args.repeats}")
    layers = args.layers.split(",") if args.layers else [spec.cam_target_layer]
    runs = [(m, layer) for layer in layers for m in args.methods.split(",")]
    explainers = [
        GradCamExplainer(model, replace(spec, cam_target_layer=layer), method=m, batch_size=args.batch)
        for m, layer in runs
    ]
    methods = [m if len(layers) == 1 else f"{m}@{layer}" for m, layer in runs]

    def classify(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = preprocess(data, mask, spec.preprocess).to(device)
            return torch.softmax(model(x).float(), dim=1).cpu().numpy()

    print(f"{'frame':>11} {'classify':>14} " + " ".join(f"{m:>20} {'ratio':>6}" for m in methods))
    for size in (512, 1024):
        data = frames(args.batch, size)
        mask = np.ones(data.shape[1:], bool)
        t_cls, *t_explain = median_times(
            [partial(classify, data, mask), *(partial(e, data, mask) for e in explainers)], args.repeats
        )
        row = f"{size:>5}x{size:<5} {args.batch / t_cls:8.1f} fr/s "
        for t in t_explain:
            row += f"{args.batch / t:14.1f} fr/s {t / t_cls:5.2f}x "
        print(row)
    print("ratio = time of the explanation / time of the classification of the same batch (goal <= 2)")


if __name__ == "__main__":
    main()
