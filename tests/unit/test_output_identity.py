"""`demo` and `reduce` give the outputs recorded in tests/reference/: a refactoring must not change what
users get. Hits, event ids, peak counts and hit frames are compared exactly; hit scores, peak positions
and intensities, and heat maps to the precision they are stored with (float16 maps: 2^-11).

When a change is meant to alter the outputs (a new shipped model, new defaults), regenerate the reference
and say why in the commit: ``.venv/bin/python -m tests.unit.test_output_identity``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from sfx_cnnhit.cli.app import app

pytestmark = pytest.mark.slow

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "demo_outputs.json"
DEMO_ARGS = ["--n-frames", "40", "--hit-rate", "0.25", "--seed", "2026"]
RESULT = "/entry_1/result_1"


def _digest(folder: Path) -> dict[str, Any]:
    """What a reduced folder holds, as JSON-able values (heat maps as per-hit sums and argmax)."""
    with h5py.File(folder / "hits.cxi", "r") as f:
        n = f[f"{RESULT}/nPeaks"][()].astype(int)
        peaks = {name: [f[f"{RESULT}/{name}"][i, :k].round(3).tolist() for i, k in enumerate(n)]
                 for name in ("peakXPosRaw", "peakYPosRaw", "peakTotalIntensity")}
        maps = f[f"{RESULT}/gradcam"][()].astype(np.float64) if f"{RESULT}/gradcam" in f else None
        digest: dict[str, Any] = {
            "event_ids": [e.decode() if isinstance(e, bytes) else str(e) for e in f["/entry_1/experiment_identifier"]],
            "source_index": f[f"{RESULT}/source_index"][()].tolist(),
            "n_peaks": n.tolist(),
            "frames_sha256": hashlib.sha256(f["/entry_1/data_1/data"][()].tobytes()).hexdigest(),
            "hit_score": f[f"{RESULT}/hit_score"][()].astype(float).round(6).tolist(),
            **peaks,
        }
        if maps is not None:
            digest["map_sum"] = maps.sum(axis=(1, 2)).round(3).tolist()
            digest["map_argmax"] = maps.reshape(len(maps), -1).argmax(axis=1).tolist()
    with (folder / "frames.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    digest["csv_hit"] = [int(r["hit"]) for r in rows]
    digest["csv_score"] = [round(float(r["score"]), 6) for r in rows]
    summary = json.loads((folder / "summary.json").read_text())
    digest["summary"] = {key: summary[key] for key in ("frames_read", "hits", "unjudged_frames", "failed_frames")}
    return digest


def _outputs(tmp: Path) -> dict[str, dict[str, Any]]:
    runner = CliRunner()
    demo = runner.invoke(app, ["demo", "-o", str(tmp / "demo"), *DEMO_ARGS])
    assert demo.exit_code == 0, demo.output
    reduced = runner.invoke(app, ["reduce", str(tmp / "demo" / "run.cxi"), "-o", str(tmp / "reduce")])
    assert reduced.exit_code == 0, reduced.output
    return {"demo": _digest(tmp / "demo" / "reduced"), "reduce": _digest(tmp / "reduce")}


def _assert_close(found: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    assert found.keys() == expected.keys(), where
    tolerance = {  # (rtol, atol)
        "hit_score": (0.0, 1e-4), "csv_score": (0.0, 1e-4), "map_sum": (1e-4, 1e-2),
        "peakXPosRaw": (0.0, 2e-3), "peakYPosRaw": (0.0, 2e-3), "peakTotalIntensity": (1e-4, 1e-2),
    }
    for key, value in expected.items():
        if key in tolerance:
            rtol, atol = tolerance[key]
            for i, (a, b) in enumerate(zip(found[key], value, strict=True)):
                np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"{where}: {key}[{i}]")
        elif key == "map_argmax":  # a near-tie between two pixels of a map may swap: allow one in ten
            same = np.mean(np.asarray(found[key]) == np.asarray(value)) if value else 1.0
            assert same >= 0.9, f"{where}: heat-map maxima moved ({same:.2f} the same)"
        else:
            assert found[key] == value, f"{where}: {key}"


def test_demo_and_reduce_outputs_are_unchanged(tmp_path: Path):
    expected = json.loads(REFERENCE.read_text())
    found = _outputs(tmp_path)
    assert found["demo"]["summary"]["hits"] > 0 and found["reduce"]["summary"]["hits"] > 0
    for name in ("demo", "reduce"):
        _assert_close(found[name], expected[name], name)


if __name__ == "__main__":  # regenerate the reference
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        REFERENCE.parent.mkdir(exist_ok=True)
        REFERENCE.write_text(json.dumps(_outputs(Path(tmp)), indent=1) + "\n")
    print(f"wrote {REFERENCE}", file=sys.stderr)
