"""How well can any classifier tell weak, good and strong hits apart? The Bayes ceiling of our labels.

The simulator labels a hit by its number of *spots*: reflections whose expected integrated signal
reaches ``classes.spot_snr`` (10) times its noise (:class:`~sfx_cnnhit.simulate.config.ClassConfig`).
A detector frame shows one noisy draw of each reflection, so a reflection just above the line and
one just below look alike, and frames whose spot count lies near a class boundary (5, 25, 100) are
ambiguous for every method, CNN or peakfinder8.

This module measures that limit on a simulated file's ground truth (``/truth/reflections``) with an
*oracle* that knows more than any real classifier: every reflection's position and the background
under it, so that only the photon and read noise of each integrated signal is unknown. Its measured
signal-to-noise ratio is then the true one plus a unit Gaussian. From it the oracle takes, for each
reflection, the posterior probability of being a spot (the prior: the file's own distribution of
reflection SNRs), the distribution of the frame's spot count (Poisson-binomial) and finally the
most probable class. Its accuracy, averaged over noise draws, bounds from above what any classifier
of the frames can reach; ``count`` also reports the simpler rule "count measured SNRs >= 10".
Misses (blank, no crystal) have no reflections and count as correct, so the five-class ceiling is
an upper bound too.

    python -m sfx_cnnhit.comparisons.ceiling test_512.cxi --draws 5 --json ceiling.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.errors import InputError, SfxCnnHitError
from sfx_cnnhit.simulate.config import HIT_MIN_LABEL, ClassConfig

#: Reflections measured more than this many sigmas from the spot line are decided without doubt.
SURE_SIGMAS = 6.0


def spot_posterior(measured: NDArray[np.float64], prior_snr: NDArray[np.float64], line: float) -> NDArray[np.float64]:
    """P(true SNR >= ``line`` | measured SNR) for a unit-Gaussian measurement and an empirical prior.

    Args:
        measured: ``(m,)`` measured SNRs.
        prior_snr: SNRs of many reflections (the prior, as a histogram on a 0.01 grid).
        line: the spot threshold (``spot_snr``).
    """
    top = max(float(prior_snr.max()), line + 2 * SURE_SIGMAS)
    grid = np.arange(0.0, top + 0.01, 0.01)
    counts = np.bincount(np.clip(np.rint(prior_snr / 0.01).astype(np.int64), 0, grid.size - 1), minlength=grid.size)
    prior = counts.astype(np.float64) + 1e-3  # no grid point impossible
    near = np.abs(grid - line) <= 2 * SURE_SIGMAS
    grid, prior = grid[near], prior[near]
    like = np.exp(-0.5 * (measured[:, None] - grid[None, :]) ** 2) * prior[None, :]
    posterior: NDArray[np.float64] = like[:, grid >= line].sum(axis=1) / like.sum(axis=1)
    return posterior


def count_distribution(p: NDArray[np.float64]) -> NDArray[np.float64]:
    """Distribution of the number of successes of independent Bernoulli(p_i): ``(len(p) + 1,)``."""
    dist = np.ones(1)
    for pi in p:
        dist = np.append(dist * (1.0 - pi), 0.0) + np.append(0.0, dist * pi)
    return dist


def oracle_class(
    true_snr: NDArray[np.float64], prior_snr: NDArray[np.float64], classes: ClassConfig, rng: np.random.Generator
) -> tuple[int, int]:
    """One noise draw of a hit frame's reflections: (Bayes oracle's class, counting rule's class)."""
    edges = np.asarray(classes.thresholds)
    measured = true_snr + rng.standard_normal(true_snr.size)
    line = classes.spot_snr
    counted = int(np.sum(measured >= line))
    by_count = HIT_MIN_LABEL + max(0, int(np.searchsorted(edges, counted, side="right")) - 1)
    sure = measured > line + SURE_SIGMAS
    doubt = np.abs(measured - line) <= SURE_SIGMAS
    dist = count_distribution(spot_posterior(measured[doubt], prior_snr, line))
    counts = int(sure.sum()) + np.arange(dist.size)
    bounds = [*edges.tolist(), np.inf]
    posterior = [dist[(counts >= lo) & (counts < hi)].sum() for lo, hi in itertools.pairwise(bounds)]
    return HIT_MIN_LABEL + int(np.argmax(posterior)), by_count


def label_ceiling(
    path: str | Path, *, draws: int = 5, seed: int = 0, classes: ClassConfig | None = None
) -> dict[str, Any]:
    """The oracle's accuracy on a simulated file's ground truth (see the module docstring).

    Returns:
        ``n_frames``, ``n_hits``, ``draws`` and for ``bayes`` and ``count``: ``hit_class_accuracy``
        (mean and standard deviation over draws, on the hit frames) and ``fiveclass_ceiling`` (misses
        counted as correct), plus the number of hit frames within 10 % of a class boundary.
    """
    import h5py
    import hdf5plugin  # noqa: F401  (filters of the simulated files)

    classes = classes or ClassConfig()
    try:
        with h5py.File(path, "r") as f:
            labels = f["/truth/label"][()]
            n_spots = f["/truth/n_spots"][()]
            snr = f["/truth/reflections/snr"][()].astype(np.float64)
            frame = f["/truth/reflections/frame"][()]
    except (OSError, KeyError) as exc:
        raise InputError(f"{path}: not a simulated file with /truth/label, n_spots and reflections ({exc})") from None
    hits = np.flatnonzero(labels >= HIT_MIN_LABEL)
    if hits.size == 0:
        raise InputError(f"{path}: no hit frames")
    order = np.argsort(frame, kind="stable")
    starts = np.searchsorted(frame[order], hits)
    stops = np.searchsorted(frame[order], hits, side="right")
    rng = np.random.default_rng(seed)
    right = np.zeros((2, draws))
    for d in range(draws):
        for i, a, b in zip(hits, starts, stops, strict=True):
            bayes, counted = oracle_class(snr[order[a:b]], snr, classes, rng)
            right[:, d] += (bayes == labels[i], counted == labels[i])
    n, n_hits = labels.size, hits.size
    near = sum(int(np.sum(np.abs(n_spots[hits] - t) < 0.1 * t)) for t in classes.thresholds[1:])
    result: dict[str, Any] = {
        "file": str(path),
        "n_frames": int(n),
        "n_hits": int(n_hits),
        "draws": draws,
        "hits_within_10_percent_of_a_boundary": near,
    }
    for name, r in zip(("bayes", "count"), right, strict=True):
        acc = r / n_hits
        result[name] = {
            "hit_class_accuracy": float(acc.mean()),
            "hit_class_accuracy_std": float(acc.std()),
            "fiveclass_ceiling": float(((r + n - n_hits) / n).mean()),
        }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sfx_cnnhit.comparisons.ceiling", description=__doc__.split("\n")[0]
    )
    parser.add_argument("file", help="simulated CXI file with /truth")
    parser.add_argument("--draws", type=int, default=5, help="noise draws to average (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the result as JSON")
    args = parser.parse_args(argv)
    try:
        result = label_ceiling(args.file, draws=args.draws, seed=args.seed)
    except SfxCnnHitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{result['n_hits']} hit frames of {result['n_frames']}, "
        f"{result['hits_within_10_percent_of_a_boundary']} within 10 % of a weak/good/strong boundary"
    )
    for name in ("bayes", "count"):
        r = result[name]
        print(
            f"{name:>5}: hit classes {100 * r['hit_class_accuracy']:.2f} %"
            f" (± {100 * r['hit_class_accuracy_std']:.2f}), "
            f"five-class ceiling {100 * r['fiveclass_ceiling']:.2f} %"
        )
    if args.json:
        from sfx_cnnhit.io.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n", protect=[args.file])
    return 0


if __name__ == "__main__":
    sys.exit(main())
