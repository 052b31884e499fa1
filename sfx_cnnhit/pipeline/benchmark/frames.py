"""The frames every method of a benchmark runs on: simulated once per detector, written for the workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import BenchmarkConfig


@dataclass
class FrameSet:
    """One detector's frames for the benchmark (written to ``folder`` for the workers)."""

    detector: str
    frame_shape: tuple[int, int]
    n_panels: int
    labels: list[int]
    pool_frames: int
    hit_fraction: float
    folder: Path
    files: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "frame_shape": list(self.frame_shape),
            "megapixels": self.frame_shape[0] * self.frame_shape[1] / 1e6,
            "panels": self.n_panels,
            "distinct_frames": len(self.labels),
            "labels": self.labels,
            "pool_frames": self.pool_frames,
            "hit_fraction": self.hit_fraction,
        }


def make_frames(detector: str, config: BenchmarkConfig, folder: Path) -> FrameSet:
    """Simulate ``config.distinct_frames`` frames of ``detector`` and write what the workers read.

    Files: ``pool.npz`` (``data`` float32 and ``mask`` bool ``(pool_frames, ss, fs)``, the distinct
    frames repeated, one static mask: the good pixels of every frame; ``hit`` bool), ``detector.geom``,
    ``run.cxi`` (``reduce_frames`` frames of the pool, uncompressed) and ``warm.cxi`` (one batch).
    """
    from sfx_cnnhit.io.cxi import CXIWriter
    from sfx_cnnhit.io.geometry import write_geometry
    from sfx_cnnhit.simulate import SimulationConfig, Simulator

    folder.mkdir(parents=True, exist_ok=True)
    sim = Simulator(SimulationConfig().with_overrides(detector__name=detector), seed=config.seed, split="test")
    labels = sim.labels_for(config.distinct_frames, hit_rate=config.hit_rate)
    batch = sim.generate(labels)
    mask = np.logical_and.reduce(batch.mask, axis=0)
    take = np.arange(config.pool_frames) % len(labels)
    data = np.ascontiguousarray(batch.data[take], dtype=np.float32)
    masks = np.ascontiguousarray(np.broadcast_to(mask, data.shape))
    hit = batch.hit[take]
    files = {"pool": str(folder / "pool.npz"), "geometry": str(folder / "detector.geom")}
    np.savez(files["pool"], data=data, mask=masks, hit=hit)
    write_geometry(sim.geometry, files["geometry"])
    if "reduce" in config.methods:
        for name, n in (("run", config.reduce_frames), ("warm", config.batch_size)):
            files[name] = str(folder / f"{name}.cxi")
            rows = np.arange(n) % config.pool_frames
            with CXIWriter(files[name], frame_shape=sim.frame_shape, compression="none", mask=mask,
                           geometry=sim.geometry) as writer:
                for i0 in range(0, n, config.batch_size):
                    part = rows[i0 : i0 + config.batch_size]
                    writer.append(data[part], event_ids=[f"frame {i}" for i in part], source_files="benchmark",
                                  source_indices=part)
                writer.finalize()
    return FrameSet(
        detector=detector,
        frame_shape=sim.frame_shape,
        n_panels=len(sim.geometry.panels),
        labels=[int(v) for v in labels],
        pool_frames=config.pool_frames,
        hit_fraction=float(batch.hit.mean()) if len(labels) else 0.0,
        folder=folder,
        files=files,
    )
