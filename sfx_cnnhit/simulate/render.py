"""Bragg spots as small pixel patches in the slab.

A spot is a 2-D Gaussian on its panel whose covariance combines the angular spread of the diffracted
beam (radial and tangential widths), the detector point spread and the pixel area (a box of one pixel
has variance 1/12 per axis, so ``Σ + I/12`` approximates integrating the Gaussian over each pixel).
Each patch is normalised to the spot's photons; the part falling off its panel (into gaps or beyond the
edge) is lost, as on a real detector.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.simulate.projection import LabFrame, Projection

#: Share of a 2-D Gaussian inside Mahalanobis radius 2 (the aperture used for spot SNRs).
APERTURE_FRACTION = 1.0 - np.exp(-2.0)


@dataclass(frozen=True)
class SpotPatches:
    """Pixels of all spots of a frame (M entries over N spots).

    Attributes:
        index: flat slab index of each entry (row-major ``ss * n_fs + fs``).
        weight: share of its spot's photons in that pixel.
        owner: spot (reflection) index of each entry.
        peak_fraction: weight relative to the brightest pixel of the same spot.
    """

    index: NDArray[np.int64]
    weight: NDArray[np.float64]
    owner: NDArray[np.int64]
    peak_fraction: NDArray[np.float64]


def spot_covariance(
    lab: LabFrame,
    proj: Projection,
    k_out: NDArray[np.float64],
    sigma_radial: NDArray[np.float64],
    sigma_tangential: NDArray[np.float64],
    clen_m: float,
    psf_px: float,
) -> NDArray[np.float64]:
    """Spot covariances (N, 2, 2) in panel pixel coordinates (fs, ss).

    Angular widths (rad) become lengths at the ray's distance ``clen / cos 2θ``; the radial one is
    stretched by ``1 / cos 2θ`` for the oblique incidence on a flat detector.
    """
    cos_2t = np.clip(k_out[:, 2], 1e-3, 1.0)
    pixel = 1.0 / lab.p_res[proj.panel]
    dist = clen_m / cos_2t
    s_t = dist * sigma_tangential / pixel
    s_r = dist * sigma_radial / (cos_2t * pixel)
    rho = np.hypot(k_out[:, 0], k_out[:, 1])
    safe = rho > 1e-12
    ux = np.where(safe, k_out[:, 0] / np.where(safe, rho, 1.0), 1.0)
    uy = np.where(safe, k_out[:, 1] / np.where(safe, rho, 1.0), 0.0)
    vr, vt = s_r * s_r, s_t * s_t
    xx, xy, yy = vr * ux * ux + vt * uy * uy, (vr - vt) * ux * uy, vr * uy * uy + vt * ux * ux
    m = lab.p_axes_inv[proj.panel]  # lab-xy -> panel (fs, ss)
    m11, m12, m21, m22 = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    iso = psf_px**2 + 1.0 / 12.0
    cov = np.empty((k_out.shape[0], 2, 2))
    cov[:, 0, 0] = m11 * m11 * xx + 2.0 * m11 * m12 * xy + m12 * m12 * yy + iso
    cov[:, 1, 1] = m21 * m21 * xx + 2.0 * m21 * m22 * xy + m22 * m22 * yy + iso
    cov[:, 0, 1] = cov[:, 1, 0] = m11 * m21 * xx + (m11 * m22 + m12 * m21) * xy + m12 * m22 * yy
    return cov


def aperture_area(cov: NDArray[np.float64]) -> NDArray[np.float64]:
    """Area (pixels, at least 1) of each spot's ellipse of Mahalanobis radius 2."""
    det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] ** 2
    return np.maximum(4.0 * np.pi * np.sqrt(det), 1.0)


def patch_half_width(cov: NDArray[np.float64], limit: int = 8) -> int:
    """Half-width of the patches: three sigma of the widest spot, between 2 and ``limit`` pixels."""
    if cov.shape[0] == 0:
        return 2
    widest = float(np.sqrt(np.max(np.maximum(cov[:, 0, 0], cov[:, 1, 1]))))
    return int(np.clip(np.ceil(3.0 * widest), 2, limit))


def roughen(patches: SpotPatches, roughness: float, rng: np.random.Generator) -> SpotPatches:
    """Multiply every pixel of every spot by ``exp(roughness * N(0, 1))``, keeping each spot's photons."""
    if roughness <= 0 or patches.weight.size == 0:
        return patches
    weight = patches.weight * np.exp(roughness * rng.standard_normal(patches.weight.size))
    n = int(patches.owner.max()) + 1
    weight /= np.bincount(patches.owner, weights=weight, minlength=n)[patches.owner]
    brightest = np.zeros(n)
    np.maximum.at(brightest, patches.owner, weight)
    return replace(patches, weight=weight, peak_fraction=weight / brightest[patches.owner])


def spot_patches(lab: LabFrame, proj: Projection, cov: NDArray[np.float64]) -> SpotPatches:
    """Pixel patches of spots at panel-relative ``proj.fs, proj.ss`` (all must be on a panel)."""
    half = patch_half_width(cov)
    offsets = np.arange(-half, half + 1)
    cols = np.floor(proj.fs).astype(np.int64)[:, None] + offsets[None, :]  # (N, K)
    rows = np.floor(proj.ss).astype(np.int64)[:, None] + offsets[None, :]
    dx = cols + 0.5 - proj.fs[:, None]
    dy = rows + 0.5 - proj.ss[:, None]
    det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] ** 2
    i11 = (cov[:, 1, 1] / det)[:, None, None]
    i22 = (cov[:, 0, 0] / det)[:, None, None]
    i12 = (-cov[:, 0, 1] / det)[:, None, None]
    quad = i11 * (dx * dx)[:, None, :] + 2.0 * i12 * dy[:, :, None] * dx[:, None, :] + i22 * (dy * dy)[:, :, None]
    weight = np.exp(-0.5 * quad)  # (N, K_ss, K_fs)
    weight /= weight.sum(axis=(1, 2), keepdims=True)
    peak = weight / weight.max(axis=(1, 2), keepdims=True)
    width = lab.p_width[proj.panel][:, None, None]
    height = lab.p_height[proj.panel][:, None, None]
    inside = (
        (cols[:, None, :] >= 0) & (cols[:, None, :] < width) & (rows[:, :, None] >= 0) & (rows[:, :, None] < height)
    )
    flat = (
        (lab.p_min_ss[proj.panel][:, None, None] + rows[:, :, None]) * lab.n_fs
        + lab.p_min_fs[proj.panel][:, None, None]
        + cols[:, None, :]
    )
    owner = np.broadcast_to(np.arange(proj.fs.size)[:, None, None], weight.shape)
    return SpotPatches(index=flat[inside], weight=weight[inside], owner=owner[inside], peak_fraction=peak[inside])
