"""Pictures of simulated frames (asinh intensity scaling), e.g. the class gallery in docs/simulator.md.

Regenerate the documentation images with ``python -m sfx_cnnhit.simulate.preview docs/images``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.simulate.config import CLASS_NAMES, SimulationConfig
from sfx_cnnhit.simulate.simulator import Simulator


def asinh_scale(
    data: NDArray[np.floating], mask: NDArray[np.bool_] | None = None, span: tuple[float, float] = (-3.0, 300.0)
) -> NDArray[np.float64]:
    """``asinh((data - median) / noise)`` mapped to [0, 1] over ``span`` (in units of the noise).

    The noise is the robust sigma of the good pixels (1.4826 x median absolute deviation, at least 1),
    so background fluctuations stay visible while spots hundreds of sigma bright do not saturate.
    Masked pixels become NaN.
    """
    good = data[mask] if mask is not None else data.reshape(-1)
    med = float(np.median(good))
    noise = max(1.4826 * float(np.median(np.abs(good - med))), 1.0)
    lo, hi = np.arcsinh(span[0]), np.arcsinh(span[1])
    out = np.clip((np.arcsinh((data - med) / noise) - lo) / (hi - lo), 0.0, 1.0)
    return np.where(mask, out, np.nan) if mask is not None else out


def assemble(data: NDArray[np.floating], geometry: DetectorGeometry, fill: float = np.nan) -> NDArray[np.float64]:
    """Place a raw-slab frame's pixels at their lab positions (1 pixel = 1 cell; y increases downwards)."""
    x, y, _ = geometry.pixel_positions()
    covered = np.isfinite(x)
    col = np.floor(x[covered] - np.nanmin(x)).astype(np.int64)
    row = np.floor(y[covered] - np.nanmin(y)).astype(np.int64)
    image = np.full((row.max() + 1, col.max() + 1), fill)
    image[row, col] = data[covered]
    return image


def _cmap() -> Any:
    import matplotlib

    cmap = matplotlib.colormaps["gray_r"].copy()
    cmap.set_bad("#c8d8e8")
    return cmap


def save_image_png(path: str | Path, image: NDArray[np.floating], levels: int = 16) -> Path:
    """Save a [0, 1] image (NaN = masked) pixel for pixel, in ``levels`` grey levels (smaller files)."""
    import matplotlib

    scaled = np.where(np.isfinite(image), np.round(np.nan_to_num(image) * (levels - 1)) / (levels - 1), np.nan)
    rgba = _cmap()(np.ma.masked_invalid(scaled), bytes=True)
    import matplotlib.image

    matplotlib.image.imsave(path, rgba)
    return Path(path)


def save_class_gallery(
    out_dir: str | Path, config: SimulationConfig | None = None, seed: int = 2024, prefix: str = "simulator"
) -> list[Path]:
    """One frame of each class: ``<prefix>_<class>.png`` (raw slab, pixel for pixel) and a five-panel
    overview with titles, ``<prefix>_classes.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sim = Simulator(config, seed=seed, split="test")
    batch = sim.generate(list(range(len(CLASS_NAMES))))
    paths = []
    fig, axes = plt.subplots(1, len(CLASS_NAMES), figsize=(3.2 * len(CLASS_NAMES), 3.6), dpi=80)
    for i, name in enumerate(CLASS_NAMES):
        info: dict[str, Any] = batch.params[i]
        title = f"{i} {name}: {int(batch.n_spots[i])} spots"
        if info["lattices"]:
            title += f"\n{info['lattices'][0]['cell']['name']}, {info['crystal_size_um']:.2f} µm"
        image = asinh_scale(batch.data[i], batch.mask[i])
        paths.append(save_image_png(out / f"{prefix}_{name}.png", image))
        axes[i].imshow(image, cmap=_cmap(), interpolation="nearest", vmin=0.0, vmax=1.0)
        axes[i].set_title(title, fontsize=8)
        axes[i].set_axis_off()
    fig.tight_layout()
    overview = out / f"{prefix}_classes.png"
    fig.savefig(overview)
    plt.close(fig)
    return [*paths, overview]


def save_assembled_png(
    path: str | Path, config: SimulationConfig, label: int, seed: int = 2024, binning: int = 2
) -> Path:
    """One frame of class ``label`` placed at its lab positions (panels and gaps visible), binned
    ``binning`` x ``binning`` by the maximum for a smaller picture."""
    sim = Simulator(config, seed=seed, split="test")
    frame = sim.simulate_frame(label, 0)
    image = assemble(asinh_scale(frame.data, frame.mask), sim.geometry)
    rows, cols = (n // binning * binning for n in image.shape)
    blocks = image[:rows, :cols].reshape(rows // binning, binning, cols // binning, binning)
    with np.errstate(invalid="ignore"):
        binned = np.nanmax(np.where(np.isnan(blocks), -np.inf, blocks), axis=(1, 3))
    return save_image_png(path, np.where(np.isfinite(binned), binned, np.nan))


def write_documentation_images(out_dir: str | Path) -> list[Path]:
    """The pictures in docs/simulator.md."""
    out = Path(out_dir)
    paths = save_class_gallery(out)
    for name in ("cspad", "agipd1m"):
        config = SimulationConfig().with_overrides(detector__name=name)
        paths.append(save_assembled_png(out / f"simulator_{name}_good.png", config, label=3))
    return paths


if __name__ == "__main__":
    for written in write_documentation_images(sys.argv[1] if len(sys.argv) > 1 else "."):
        print(written)
