"""The benchmark's report: ratios to the reference, headline figures, notes, and the report as text."""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import REFERENCE


def headline_results(
    by_detector: dict[str, dict[str, Any]], frames: dict[str, dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Each method's result and ratio to the reference at the largest frames it ran on."""
    headline: dict[str, dict[str, Any]] = {}
    ratios: dict[str, float] = {}
    for detector in sorted(by_detector, key=lambda d: np.prod(frames[d]["frame_shape"])):  # largest last
        for method, result in by_detector[detector]["results"].items():
            headline[method] = result
            ratios.pop(method, None)
            if method in by_detector[detector]["ratio_to_om_peakfinder8"]:
                ratios[method] = by_detector[detector]["ratio_to_om_peakfinder8"][method]
    return headline, ratios


def report_notes(model: dict[str, Any] | None, machine: dict[str, Any]) -> list[str]:
    """The report's notes: how to read the figures, the stand-in model, a busy machine."""
    notes = [
        "frames/s = frames / wall time; per CPU-s = frames / CPU time of all the method's threads.",
        "om_peakfinder8 and peakfinder8 use one core; the CNN uses torch's threads (see threads).",
    ]
    if model and model["note"]:
        notes.append(model["note"])
    if machine["load_average"][0] > 0.5 * (machine["usable_cores"] or 1):
        notes.append(f"the machine was busy (load average {machine['load_average'][0]:.1f} on "
                     f"{machine['usable_cores']} cores): wall-time figures are noisy; per-CPU-second figures "
                     "and the ratios are steadier")
    return notes


def ratios_to_reference(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Every method's frames/s over the reference's, when the reference was measured."""
    if REFERENCE not in results:
        return {}
    ref = results[REFERENCE]["frames_per_second"]
    return {name: r["frames_per_second"] / ref for name, r in results.items()}


def format_report(report: dict[str, Any]) -> str:
    """The report as readable text: machine, then one table per detector."""
    m = report["machine"]
    lines = [
        f"{m['cpu']}, {m['usable_cores']} cores, torch {m['torch_version']} "
        f"({report['config']['threads'] or m['torch_threads']} threads, "
        f"{m['torch_cpu_capability']}), device {m['cuda'] or 'cpu'}, load average {m['load_average'][0]:.1f}"
        f" -> {m['load_average_end'][0]:.1f}",
    ]
    if report["model"]:
        model = report["model"]
        lines.append(f"model: {model['architecture']} ({'trained' if model['trained'] else 'untrained stand-in'}), "
                     f"input {model['input_size']}x{model['input_size']}, {model['path']}")
    header = f"{'method':<18} {'frames':>6} {'frames/s':>9} {'per CPU-s':>9} {'x OM pf8':>8} {'peak RSS MB':>11}"
    for detector, part in report["by_detector"].items():
        info = report["frames"][detector]
        ss, fs = info["frame_shape"]
        lines += ["", f"{detector}: {ss}x{fs} ({info['megapixels']:.2f} Mpx, {info['panels']} panels), "
                  f"{info['distinct_frames']} distinct frames ({100 * info['hit_fraction']:.0f} % hits) in a pool of "
                  f"{info['pool_frames']}", header, "-" * len(header)]
        for name, r in part["results"].items():
            ratio = part["ratio_to_om_peakfinder8"].get(name)
            lines.append(
                f"{name:<18} {r['frames']:>6} {r['frames_per_second']:>9.1f} {r['frames_per_cpu_second']:>9.1f} "
                f"{'' if ratio is None else f'{ratio:.2f}':>8} {r['peak_rss_mb']:>11.0f}"
            )
    for title, entries in (("skipped", report["skipped"]), ("failed", report["failed"])):
        lines += [f"{title}: {name}: {why}" for name, why in entries.items()]
    lines += ["", *report["notes"]]
    return "\n".join(lines)
