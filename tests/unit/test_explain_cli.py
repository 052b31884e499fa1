"""`sfx-cnnhit explain` in-process on a small simulated file."""

from __future__ import annotations

import json
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sfx_cnnhit.cli.app import app
from sfx_cnnhit.models import create_model, save_checkpoint
from sfx_cnnhit.simulate import DetectorConfig, SimulationConfig
from sfx_cnnhit.simulate.output import simulate_to_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    config = replace(SimulationConfig(), detector=DetectorConfig(size=128))
    data = simulate_to_file(root / "sim.cxi", 6, seed=3, config=config, split="test", hit_rate=0.5)
    torch.manual_seed(0)
    model, spec = create_model("hitnet_test", "fiveclass")
    ckpt = save_checkpoint(root / "model.pt", model, spec)
    return root, data, ckpt


def test_explain_scores_and_draws(files):
    root, data, ckpt = files
    out = root / "report.json"
    figures = root / "figures"
    result = CliRunner().invoke(
        app,
        [
            "explain", str(data), "--model", str(ckpt), "--frames", "0-3,5", "--score", "--json", str(out),
            "--figures", str(figures), "--max-figures", "2", "--histograms", "down.2", "--bins", "8",
            "--invert", "down.0", "--invert-steps", "5",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n_frames"] == 5 and [f["index"] for f in report["frames"]] == [0, 1, 2, 3, 5]
    assert report["dataset"] == "gradcam" and report["model"]["name"] == "hitnet_test"
    with h5py.File(data) as f:
        labels = f["/truth/label"][[0, 1, 2, 3, 5]]
        names = [n.decode() if isinstance(n, bytes) else n for n in f["/truth"].attrs["class_names"]]
    assert [f["truth"] for f in report["frames"]] == [names[i] for i in labels]
    score = report["score"]
    assert score["n_hits"] + score["misses"]["n_misses"] + score["n_hits_without_spots"] == 5
    assert score["n_hits"] == int(np.sum(labels >= 2)) - score["n_hits_without_spots"]
    for key in ("mass_in_spots_mean", "mass_in_spots_median", "pointing_game", "chance_mass_in_spots"):
        assert key in score
    per_frame = 8 * 4 * 4  # hitnet_test down.2 on a 32 x 32 input: 8 channels of 4 x 4
    counts = report["histograms"]["classes"]
    assert report["histograms"]["labels"] == "truth"
    assert sum(sum(c["counts"]) for c in counts.values()) == 5 * per_frame
    assert sorted(p.name for p in figures.iterdir()) == [
        "explain_000000.png", "explain_000001.png", "histograms_down_2.png", "inversion.png"
    ]


def test_explain_needs_truth_to_score_and_figures_to_invert(files, tmp_path):
    _, _, ckpt = files
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["/entry_1/data_1/data"] = np.random.default_rng(0).normal(10, 2, (2, 40, 40)).astype(np.float32)
    runner = CliRunner()
    result = runner.invoke(app, ["explain", str(plain), "--model", str(ckpt), "--score"])
    assert result.exit_code == 2 and "/truth/bragg_mask" in result.output
    result = runner.invoke(app, ["explain", str(plain), "--model", str(ckpt), "--invert", "down.0"])
    assert result.exit_code == 2 and "figures" in result.output
    result = runner.invoke(app, ["explain", str(plain), "--model", str(ckpt), "--frames", "7"])
    assert result.exit_code == 2 and "outside" in result.output
    args = ["explain", str(plain), "--model", str(ckpt), "--method", "guided", "--json", str(tmp_path / "r.json")]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["dataset"] == "guided_gradcam" and "score" not in report and report["n_frames"] == 2
    assert "truth" not in report["frames"][0]
