"""The Bayes ceiling of the five-class labels (comparisons/ceiling.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sfx_cnnhit.comparisons.ceiling import count_distribution, label_ceiling, main, spot_posterior
from sfx_cnnhit.errors import InputError


def test_count_distribution_is_poisson_binomial() -> None:
    assert np.allclose(count_distribution(np.array([0.5, 0.5])), [0.25, 0.5, 0.25])
    p = np.random.default_rng(0).uniform(size=30)
    dist = count_distribution(p)
    assert dist.sum() == pytest.approx(1.0) and (dist @ np.arange(31)) == pytest.approx(p.sum())


def test_spot_posterior_rises_through_the_line() -> None:
    prior = np.random.default_rng(1).uniform(0.0, 30.0, 100_000)
    post = spot_posterior(np.array([2.0, 8.0, 10.0, 12.0, 18.0]), prior, 10.0)
    assert np.all(np.diff(post) > 0)
    assert post[0] < 1e-6 and post[-1] > 1 - 1e-6 and post[2] == pytest.approx(0.5, abs=0.05)


def test_ceiling_of_a_simulated_file(tmp_path, capsys) -> None:
    from sfx_cnnhit.simulate import SimulationConfig, simulate_to_file

    path = simulate_to_file(
        tmp_path / "s.cxi", 15, seed=4, config=SimulationConfig().with_overrides(detector__size=128)
    )
    result = label_ceiling(path, draws=2)
    assert result["n_frames"] == 15 and result["n_hits"] == 9
    for name in ("bayes", "count"):
        assert 0.0 <= result[name]["hit_class_accuracy"] <= 1.0
        assert 6 / 15 <= result[name]["fiveclass_ceiling"] <= 1.0  # the 6 misses always count as right
    assert main([str(path), "--draws", "1", "--json", str(tmp_path / "c.json")]) == 0
    assert "five-class ceiling" in capsys.readouterr().out and (tmp_path / "c.json").exists()
    (tmp_path / "empty.h5").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.h5"):
        label_ceiling(tmp_path / "empty.h5")
