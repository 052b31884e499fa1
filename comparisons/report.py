"""Write a comparison: per-frame CSV, ``compare.json``, a disagreement gallery and a Markdown report.

Outputs in the output folder, each written as ``<name>.inprogress`` and renamed when complete:

================  ==================================================================================
``compare.csv``   one row per frame: event id, source file and index, label, and for each method its
                  score, decision and number of peaks
``compare.json``  ``methods.<name>`` (accuracy, precision, recall, frames/s, confusion counts, ...),
                  ``table5``, ``agreement``, ``per_frame``, inputs, labels, versions, gallery
``gallery.png``   frames where the methods disagree (see :mod:`sfx_cnnhit.comparisons.gallery`)
``curves.png``    ROC and precision-recall curves of every method (with labels of both classes)
``report.md``     the same for people: what was run, the seed's Table 5 form, speed, agreement, notes
================  ==================================================================================

While the comparison runs, ``compare.inprogress/`` holds its committed batches
(:mod:`sfx_cnnhit.comparisons.resume`); it is removed once ``compare.json``, written last, is in place.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sfx_cnnhit import __version__
from sfx_cnnhit.errors import OutputError
from sfx_cnnhit.io.atomic import write_errors, write_text_atomic
from sfx_cnnhit.io.sources import FrameSource

from .curves import render_curves
from .gallery import GalleryFrame, render_gallery, select_disagreements
from .metrics import TABLE5_ROWS, agreement, hit_metrics, nan_to_none
from .runner import ComparisonResult

CSV_NAME = "compare.csv"
JSON_NAME = "compare.json"
GALLERY_NAME = "gallery.png"
CURVES_NAME = "curves.png"
REPORT_NAME = "report.md"
STATE_DIR = "compare.inprogress"
GENERAL_NOTES = (
    "Frames/s count only each method's own classify calls, measured in this one run on the same batches "
    "(one method at a time, in rotating order); reading the frames is timed separately.",
    "DIALS-style spot finding assumes Poisson counts: pedestal-subtracted frames and the gain in ADU per photon. "
    "Frames with an offset or read noise of the order of a photon need a global_threshold, or give many spots "
    "on the background.",
    "Accuracy, precision, recall and the Table 5 percentages are over the labelled frames only; precision and "
    "recall are those of the hit class.",
)


@dataclass
class RunContext:
    """What the report says about how the comparison was started.

    Attributes:
        command: the command line, for the report.
        warnings: messages shown to the user when the methods were built (fallbacks, methods left out).
        n_frames_available: frames in the inputs (more than compared when ``--max-frames`` cut the run).
    """

    command: str = ""
    warnings: list[str] = field(default_factory=list)
    n_frames_available: int | None = None


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


def frame_columns(result: ComparisonResult) -> list[str]:
    """Columns of ``compare.csv`` (the keys of each :func:`per_frame_rows` dict)."""
    base = ["event_id", "source_file", "source_index", "label", "true_hit"]
    return base + [f"{m.name}_{key}" for m in result.methods for key in ("score", "hit", "n_peaks")]


def per_frame_rows(result: ComparisonResult) -> list[dict[str, Any]]:
    """One dict per frame: event id, source, label, and per method ``<name>_score/_hit/_n_peaks``."""
    rows = []
    for i in range(result.n_frames):
        row: dict[str, Any] = {
            "event_id": result.event_ids[i],
            "source_file": result.source_files[i],
            "source_index": int(result.source_index[i]),
            "label": result.label[i],
            "true_hit": None if result.true_hit[i] < 0 else int(result.true_hit[i]),
        }
        for m in result.methods:
            row[f"{m.name}_score"] = float(result.scores[m.name][i])
            row[f"{m.name}_hit"] = int(result.hits[m.name][i])
            row[f"{m.name}_n_peaks"] = int(result.n_peaks[m.name][i])
        rows.append(row)
    return rows


#: Most distinct label values for which the per-label table is given.
MAX_LABEL_VALUES = 12


def hits_by_label(result: ComparisonResult) -> dict[str, dict[str, Any]]:
    """Per label value (e.g. each class): frames, and the fraction each method calls a hit.

    Misses come first, then hits; numeric labels in order, named ones from the least to the most
    often called a hit. Empty without labels or with more than :data:`MAX_LABEL_VALUES` values.
    """
    labelled = np.flatnonzero(result.labelled)
    text = np.array(result.label, dtype=object)
    values = set(text[labelled].tolist())
    if not values or len(values) > MAX_LABEL_VALUES:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for value in values:
        rows = labelled[text[labelled] == value]
        out[value] = {
            "n_frames": int(rows.size),
            "true_hit": bool(result.true_hit[rows[0]]),
            "called_hit": {m.name: float(result.hits[m.name][rows].mean()) for m in result.methods},
        }
    numeric = all(v.isdigit() for v in values)

    def order(value: str) -> tuple[bool, float, str]:
        entry = out[value]
        rank = float(value) if numeric else float(np.mean(list(entry["called_hit"].values())))
        return entry["true_hit"], rank, value

    return {value: out[value] for value in sorted(values, key=order)}


def versions(result: ComparisonResult) -> dict[str, str]:
    """Versions of the software that produced the numbers."""
    import h5py
    import scipy

    out = {
        "sfx_cnnhit": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "h5py": h5py.__version__,
    }
    for m in result.methods:
        for key in ("dials_version", "torch_version"):
            if key in m.settings:
                out[key.removesuffix("_version")] = str(m.settings[key])
    return out


def summarize(
    result: ComparisonResult,
    gallery: Sequence[GalleryFrame] = (),
    curve_areas: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """Everything ``compare.json`` holds (NaN as None); ``curve_areas``: per method ``roc_auc`` and
    ``average_precision`` (:func:`~.curves.render_curves`)."""
    labelled = result.labelled
    truth = result.true_hit[labelled] == 1
    methods: dict[str, Any] = {}
    for m in result.methods:
        hits = result.hits[m.name]
        entry: dict[str, Any] = {
            "description": m.description,
            "score": m.score_name,
            "n_hits_called": int(hits.sum()),
            "hit_rate_called": float(hits.mean()) if hits.size else float("nan"),
            "seconds": result.seconds[m.name],
            "frames_per_second": result.frames_per_second(m.name),
            **hit_metrics(truth, hits[labelled]),
            "settings": m.settings,
            "origin": m.origin,
            **(curve_areas or {}).get(m.name, {}),
            "notes": m.notes,
        }
        if m.name in result.inner_seconds:
            inner = result.inner_seconds[m.name]
            entry["seconds_inside"] = inner
            entry["frames_per_second_inside"] = result.n_frames / inner if inner > 0 else float("nan")
        methods[m.name] = entry
    summary = {
        "n_frames": result.n_frames,
        "n_labelled": int(labelled.sum()),
        "n_true_hits": int(truth.sum()),
        "n_true_misses": int((~truth).sum()),
        "inputs": result.inputs,
        "labels": None if result.labels is None else {
            "source": result.labels.description, "notes": result.labels.notes()
        },
        "read_seconds": result.read_seconds,
        "methods": methods,
        "table5": {
            "rows": list(TABLE5_ROWS),
            "columns": list(TABLE5_ROWS),
            "unit": "percent of each true class",
            "methods": {name: entry["table5"] for name, entry in methods.items()},
        },
        "hits_by_label": hits_by_label(result),
        "agreement": agreement(result.hits),
        "gallery": [
            {"event_id": result.event_ids[g.position], "position": g.position, "reason": g.reason} for g in gallery
        ],
        "versions": versions(result),
        "per_frame": per_frame_rows(result),
    }
    plain: dict[str, Any] = nan_to_none(summary)  # NaN -> None, nested
    return plain


def _csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in columns})
    return buffer.getvalue()


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _origin_lines(methods: Mapping[str, Any], *, labelled: bool) -> list[str]:
    """The report's table of where each method's settings come from, with tuning and test scores."""
    if not any(v.get("origin") for v in methods.values()):
        return []
    lines = ["", "### Where the settings come from", ""]
    rows = []
    for name, v in methods.items():
        origin = v.get("origin") or {}
        tuning = origin.get("tuning") or {}
        rows.append([name, origin.get("kind", "given"), origin.get("detail", ""),
                     _fmt(tuning.get("accuracy")), _fmt(tuning.get("recall")),
                     _fmt(v["accuracy"]) if labelled else "-", _fmt(v["recall"]) if labelled else "-"])
    lines += _table(["method", "settings", "how", "tuning accuracy", "tuning recall", "test accuracy",
                     "test recall"], rows)
    chosen = [(name, v["origin"]["tuning"]["chosen"]) for name, v in methods.items()
              if (v.get("origin") or {}).get("tuning")]
    if chosen:
        lines += ["", "Chosen on the tuning frames (thresholds in ADU): " + "; ".join(
            f"{name}: " + ", ".join(f"{k} {_fmt_value(x)}" for k, x in c.items()) for name, c in chosen)]
    return lines


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def markdown_report(
    summary: dict[str, Any], context: RunContext, gallery_file: str | None, curves_file: str | None = None
) -> str:
    """The report a scientist reads, from :func:`summarize`'s dict (``curves_file``: the ROC/PR picture)."""
    methods: dict[str, Any] = summary["methods"]
    names = list(methods)
    n = summary["n_frames"]
    lines = [f"# sfx-cnnhit compare: {', '.join(names)} on {n} frames", ""]
    lines += [f"Written {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by sfx-cnnhit {summary['versions']['sfx_cnnhit']}."]
    if context.command:
        lines += ["", f"Command: `{context.command}`"]
    lines += _what_was_run_lines(summary, context)
    lines += _origin_lines(methods, labelled=summary["n_labelled"] > 0)
    if summary["n_labelled"]:
        lines += _label_lines(summary)
    if curves_file:
        lines += ["", "## ROC and precision-recall curves", "",
                  f"![ROC and precision-recall curves of every method]({curves_file})", "",
                  "Each method's score (peak count, spot count or P(hit)) swept over all its values on these frames; "
                  "the dots are the decisions it made with its settings.", ""]
        lines += _table(["method", "ROC AUC", "average precision"],
                        [[k, _fmt(v.get("roc_auc")), _fmt(v.get("average_precision"))] for k, v in methods.items()])
    lines += _speed_lines(summary)
    if len(names) > 1:
        agree = summary["agreement"]
        lines += ["", "## Agreement between methods", ""]
        lines += ["Fraction of frames with the same decision (Cohen's kappa in brackets):", ""]
        lines += _table(
            ["", *names],
            [[a, *(f"{_fmt(agree['fraction'][i][j])} ({_fmt(agree['kappa'][i][j], '.2f')})" for j in range(len(names)))]
             for i, a in enumerate(names)],
        )

    lines += ["", "## Frames where the methods disagree", ""]
    if gallery_file:
        lines += [f"![frames where the methods disagree]({gallery_file})", ""]
        lines += [f"- `{g['event_id']}`: {g['reason']}" for g in summary["gallery"]]
    else:
        lines += ["No frame where the methods disagree (or, with one method, where it contradicts the label)."]
    lines += ["", "## Notes", "", *(f"- {note}" for note in _notes(summary, context)), ""]
    return "\n".join(lines)


def _what_was_run_lines(summary: dict[str, Any], context: RunContext) -> list[str]:
    """The report's "What was run" section: inputs, labels, versions, and each method with its parameters."""
    methods: dict[str, Any] = summary["methods"]
    n = summary["n_frames"]
    lines = ["", "## What was run", ""]
    available = context.n_frames_available
    frames = f"{n} frames" + (f" (the first {n} of {available})" if available and available > n else "")
    lines += [f"- Inputs ({frames}): " + ", ".join(f"`{p}`" for p in summary["inputs"])]
    labels = summary["labels"]
    if labels is None:
        lines += ["- Labels: none (no accuracy figures)"]
    else:
        lines += [
            f"- Labels: {labels['source']}; {summary['n_labelled']} frames labelled "
            f"({summary['n_true_hits']} hit or maybe, {summary['n_true_misses']} miss)"
        ]
    lines += ["- Versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items())]
    lines += ["", *_table(["method", "what", "score"], [[f"`{k}`", v["description"], v["score"]] for k, v in
                                                        methods.items()])]
    for name, entry in methods.items():
        lines += ["", f"<details><summary>parameters of {name}</summary>", "", "```json",
                  json.dumps(entry["settings"], indent=2), "```", "", "</details>"]
    return lines


def _label_lines(summary: dict[str, Any]) -> list[str]:
    """The report's "Against the labels" section: Table 5's form, the hit metrics, hits called per label."""
    methods: dict[str, Any] = summary["methods"]
    names = list(methods)
    lines = ["", "## Against the labels", ""]
    lines += ["Percent of each true class, in the form of Table 5 of Nawaz et al. (2023):", ""]
    header = ["true \\ predicted"] + [f"{k}: {c}" for k in names for c in TABLE5_ROWS]
    counts = (summary["n_true_hits"], summary["n_true_misses"])
    rows = [
        [f"{label} ({count})"] + [_fmt(methods[k]["table5"][r][c], ".1f") for k in names for c in range(2)]
        for r, (label, count) in enumerate(zip(TABLE5_ROWS, counts, strict=True))
    ]
    lines += _table(header, rows)
    lines += [""]
    lines += _table(
        ["method", "accuracy", "precision", "recall", "miss rejection", "kappa", "TP", "FP", "FN", "TN"],
        [[k, *(_fmt(v[key]) for key in ("accuracy", "precision", "recall", "miss_rejection", "kappa")),
          *(str(v[key]) for key in ("tp", "fp", "fn", "tn"))] for k, v in methods.items()],
    )

    by_label = summary["hits_by_label"]
    if by_label:
        lines += ["", "Percent of frames called a hit, per label:", ""]
        lines += _table(
            ["label", "frames", "true class", *names],
            [[f"`{value}`", str(v["n_frames"]), "hit" if v["true_hit"] else "miss",
              *(_fmt(100 * v["called_hit"][k], ".1f") for k in names)] for value, v in by_label.items()],
        )
    return lines


def _speed_lines(summary: dict[str, Any]) -> list[str]:
    """The report's "Speed" section: frames/s, seconds and hits called per method, and the reading time."""
    lines = ["", "## Speed", ""]
    speed_rows = []
    for k, v in summary["methods"].items():
        inside = _fmt(v.get("frames_per_second_inside"), ".1f") if "frames_per_second_inside" in v else ""
        speed_rows.append([k, _fmt(v["frames_per_second"], ".1f"), _fmt(v["seconds"], ".2f"), inside,
                           f"{v['n_hits_called']} ({_fmt(100 * v['hit_rate_called'], '.1f')} %)"])
    lines += _table(["method", "frames/s", "seconds", "frames/s inside the backend", "hits called"], speed_rows)
    lines += ["", f"Reading the frames took {summary['read_seconds']:.2f} s."]
    return lines


def _notes(summary: dict[str, Any], context: RunContext) -> list[str]:
    """The report's notes: the run's warnings, each method's notes and time inside DIALS, the labels' notes,
    then :data:`GENERAL_NOTES`."""
    notes = list(context.warnings)
    for k, v in summary["methods"].items():
        notes += [f"{k}: {note}" for note in v["notes"]]
        if "seconds_inside" in v:
            notes.append(
                f"{k}: {v['seconds']:.2f} s in total, of which {v['seconds_inside']:.2f} s inside DIALS "
                f"({_fmt(v['frames_per_second_inside'], '.1f')} frames/s); the rest is process start and hand-over"
            )
    if summary["labels"] is not None:
        notes += summary["labels"]["notes"]
    notes += GENERAL_NOTES
    return notes


def output_paths(outdir: str | os.PathLike[str]) -> dict[str, Path]:
    """Every output of a comparison in ``outdir``, by role."""
    outdir = Path(outdir)
    return {"csv": outdir / CSV_NAME, "json": outdir / JSON_NAME, "gallery": outdir / GALLERY_NAME,
            "curves": outdir / CURVES_NAME, "report": outdir / REPORT_NAME}


def check_outdir(outdir: str | os.PathLike[str], *, overwrite: bool = False) -> dict[str, Path]:
    """Create ``outdir`` and return the output paths; refuse to replace an earlier comparison.

    Raises:
        OutputError: ``outdir`` holds a comparison and ``overwrite`` is false, or cannot be created.
    """
    paths = output_paths(outdir)
    if paths["json"].exists() and not overwrite:
        raise OutputError(f"{outdir}: holds an earlier comparison ({JSON_NAME}); use --overwrite to replace it")
    try:
        Path(outdir).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{outdir}: cannot create the output folder ({err.strerror})") from None
    return paths


def write_comparison(
    result: ComparisonResult,
    outdir: str | os.PathLike[str],
    *,
    source: FrameSource,
    gallery: int = 8,
    context: RunContext | None = None,
    overwrite: bool = False,
    status: Callable[[str], None] | None = None,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Write the CSV, JSON, gallery and report of ``result`` into ``outdir``.

    Args:
        result: from :func:`~sfx_cnnhit.comparisons.runner.run_comparison` on ``source``.
        outdir: output folder (created if missing).
        source: the frames, read again for the gallery.
        gallery: most frames in the gallery (0: no gallery).
        context: the command line and warnings, for the report.
        overwrite: replace an earlier comparison in ``outdir``.
        status: called with a short message before each slow step.

    Returns:
        The paths written, by role (no ``gallery`` when no frame was drawn), and the
        :func:`summarize` dict that ``compare.json`` holds.
    """
    context = context or RunContext()
    paths = check_outdir(outdir, overwrite=overwrite)
    protect = source.input_paths
    chosen = select_disagreements(result, gallery)
    if chosen and status is not None:
        status(f"drawing {len(chosen)} frames where the methods disagree")
    with write_errors(paths["gallery"]):
        drawn = render_gallery(source, result, chosen, paths["gallery"]) if chosen else None
    if drawn is None:
        paths.pop("gallery").unlink(missing_ok=True)  # an earlier run's gallery would not match
    truth = result.true_hit[result.labelled]
    curve_areas = None
    if truth.size and truth.min() != truth.max():
        with write_errors(paths["curves"]):
            curve_areas = render_curves(result, paths["curves"])
    else:
        paths.pop("curves").unlink(missing_ok=True)
    summary = summarize(result, chosen, curve_areas)
    texts = {
        "csv": _csv_text(summary["per_frame"], frame_columns(result)),
        "report": markdown_report(summary, context, GALLERY_NAME if drawn else None,
                                  CURVES_NAME if curve_areas else None),
        "json": json.dumps(summary, indent=1) + "\n",  # last: its presence says the comparison is complete
    }
    for role, text in texts.items():
        with write_errors(paths[role]):
            write_text_atomic(paths[role], text, protect=protect)
    shutil.rmtree(Path(outdir) / STATE_DIR, ignore_errors=True)
    return paths, summary
