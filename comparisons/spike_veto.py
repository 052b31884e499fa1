"""Do one-pixel spikes turn misses into hits? The false-hit rate of models on misses with spikes added.

A zinger, a cosmic-ray hit or a hot pixel not yet in the map is one bright pixel. Each miss of a
labelled file (read as the commands read it: the run-level hot-pixel map applied) gets ``spikes``
one-pixel spikes at random places of its network input, each of a z-score drawn uniformly from
``z_range`` (written as the preprocessing writes a z-score, ``log1p(z)``); every model judges the
same spiked frames at its own calibrated threshold. Rates are the fraction of misses called hits;
``spikes = 0`` gives the rate without spikes (docs/models.md, session 16).

    python -m sfx_cnnhit.comparisons.spike_veto ../shared/data/nanobragg_dev.cxi --model spotnet_hitmiss --spikes 3
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

import torch

from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.io.hotpixels import DEFAULT_HOT_PIXELS
from sfx_cnnhit.models.checkpoint import (
    decision_threshold,
    load_checkpoint,
    model_from_checkpoint,
    resolve_model_path,
)
from sfx_cnnhit.models.data import HITMISS, LabelledFrames
from sfx_cnnhit.models.inference import batch_input
from sfx_cnnhit.models.preprocess import plan_input
from sfx_cnnhit.models.zoo import ModelSpec, hit_probability


def add_spikes_(x: torch.Tensor, spikes: int, z_range: tuple[float, float], generator: torch.Generator) -> None:
    """Set ``spikes`` random pixels of each ``(n, 1, S, S)`` input (2 pixels from the edge) to ``log1p(z)``."""
    n, _, height, width = x.shape
    rows = torch.randint(2, height - 2, (n, spikes), generator=generator)
    cols = torch.randint(2, width - 2, (n, spikes), generator=generator)
    z = z_range[0] + (z_range[1] - z_range[0]) * torch.rand((n, spikes), generator=generator, dtype=torch.float64)
    frames = torch.arange(n)[:, None].expand(n, spikes)
    x[frames, 0, rows, cols] = z.log1p().to(x.dtype)


@torch.no_grad()
def spiked_false_hits(
    paths: Sequence[str], models: Sequence[str], *, spikes: int = 3, z_range: tuple[float, float] = (10.0, 60.0),
    seed: int = 0, labels: str = "/truth/hit",
) -> dict[str, float]:
    """Fraction of the misses of ``paths`` each model calls a hit once ``spikes`` spikes are added."""
    nets: list[tuple[str, torch.nn.Module, ModelSpec, dict[str, Any]]] = []
    for name in models:
        path = resolve_model_path(name)
        ckpt = load_checkpoint(path)
        if nets and ckpt.spec.preprocess != nets[0][2].preprocess:
            raise ConfigError(f"{name}: preprocessing differs from {nets[0][0]}'s; compare models fed alike")
        nets.append((name, model_from_checkpoint(ckpt, source=path), ckpt.spec, ckpt.metrics))
    frames = LabelledFrames(list(paths), labels, class_names=HITMISS, shuffle=False, hot_pixels=DEFAULT_HOT_PIXELS)
    generator = torch.Generator().manual_seed(seed)
    false_hits, misses = dict.fromkeys(models, 0), 0
    for batch in frames(0):
        x, y = batch_input(batch, nets[0][2], torch.device("cpu"), layout=None)
        bin_factor = plan_input(tuple(batch[0].shape[-2:]), nets[0][2].preprocess, batch[3]).bin_factor
        x = x[y == 0]
        add_spikes_(x, spikes, z_range, generator)
        misses += len(x)
        for name, net, spec, metrics in nets:
            p_hit = hit_probability(torch.softmax(net(x).float(), dim=1), spec)
            false_hits[name] += int((p_hit >= decision_threshold(metrics, bin_factor)).sum())
    return {name: count / misses if misses else math.nan for name, count in false_hits.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="labelled CXI/HDF5 files")
    parser.add_argument("--model", action="append", required=True, help="checkpoint or shipped model (repeat)")
    parser.add_argument("--spikes", type=int, default=3, help="spikes per miss (default 3)")
    parser.add_argument("--z", type=float, nargs=2, default=(10.0, 60.0), help="spike z-score range (10 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", default="/truth/hit", help="hit/miss or class label dataset")
    args = parser.parse_args(argv)
    rates = spiked_false_hits(args.files, args.model, spikes=args.spikes, z_range=tuple(args.z), seed=args.seed,
                              labels=args.labels)
    for name, rate in rates.items():
        print(f"{name}: {rate:.4f} of misses called hits with {args.spikes} spikes of z {args.z[0]:g}-{args.z[1]:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
