"""comparisons.spot_recall: per-spot recall of the shipped SpotNet against the Bragg masks of simulated frames."""

from __future__ import annotations

import json

import h5py
import pytest

from sfx_cnnhit.comparisons.spot_recall import main, recall_table, spot_rows
from sfx_cnnhit.errors import InputError
from sfx_cnnhit.models.checkpoint import load_model


def test_bright_spots_are_found_and_faint_ones_less_often(tmp_path, capsys) -> None:
    from pathlib import Path

    from sfx_cnnhit.cli.simulate import load_config
    from sfx_cnnhit.simulate import simulate_to_file

    path = simulate_to_file(tmp_path / "s.cxi", 8, seed=8, config=load_config(Path("compact")), hit_rate=1.0)
    model, spec = load_model("spotnet_hitmiss")
    rows = spot_rows(path, model, spec)
    with h5py.File(path) as f:
        assert len(rows) > 300 and rows[:, 2].sum() == f["/truth/bragg_mask"][()].sum()  # every mask pixel, once
    table = recall_table(rows)
    assert sum(r["spots"] for r in table) <= len(rows)
    bright = [r for r in table if r["x_low"] >= 3.0]
    assert bright and all(r["found"] > 0.9 for r in bright)
    assert min(r["found"] for r in table) < 0.5  # compact spots of z < 6 mostly not (docs/models.md)
    assert main([str(path), "--max-frames", "2", "--json", str(tmp_path / "r.json")]) == 0
    assert "found" in capsys.readouterr().out and str(path) in json.loads((tmp_path / "r.json").read_text())


def test_a_file_without_truth_is_refused(tmp_path) -> None:
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["/entry_1/data_1/data"] = [[[0.0]]]
    model, spec = load_model("spotnet_hitmiss")
    with pytest.raises(InputError, match="bragg_mask"):
        spot_rows(tmp_path / "plain.h5", model, spec)


def test_an_empty_file_is_named_in_a_clear_error(tmp_path) -> None:
    (tmp_path / "empty.h5").write_bytes(b"")
    model, spec = load_model("spotnet_hitmiss")
    with pytest.raises(InputError, match=r"empty\.h5"):
        spot_rows(tmp_path / "empty.h5", model, spec)
