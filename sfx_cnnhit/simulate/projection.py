"""Per-pixel lab geometry of a detector and the inverse map from a scattering direction to a pixel.

Lab frame: beam along +z through the origin, x horizontal, y vertical; lengths in metres. A panel
pixel ``(fs, ss)`` (panel-relative, corner at integers) lies at
``C + fs * F + ss * S`` with ``C = (corner_x / res, corner_y / res, clen + coffset)``,
``F = fs_vec / res`` and ``S = ss_vec / res`` (the convention of :mod:`sfx_cnnhit.detector`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.simulate.detectors import DetectorModel
from sfx_cnnhit.simulate.scattering import N_AIR, N_WATER, R_E2, air_profile, polarisation_factor, water_profile

F32 = np.float32


@dataclass(frozen=True)
class BackgroundMaps:
    """Per-pixel scattering factors for one distance and wavelength, ``(ss, fs)`` float32.

    Attributes:
        q: ``4 pi sin(theta) / lambda`` (Å⁻¹); 0 in gaps.
        geometric: solid angle (sr) x polarisation x beamstop transmission; 0 in gaps.
        water: expected photons per incident photon per µm of water.
        air: expected photons per incident photon per mm of air.
    """

    q: NDArray[np.float32]
    geometric: NDArray[np.float32]
    water: NDArray[np.float32]
    air: NDArray[np.float32]


@dataclass(frozen=True)
class Projection:
    """Where scattered rays land: panel index (-1 = nowhere) and panel-relative ``fs, ss`` (corner-based)."""

    panel: NDArray[np.int64]
    fs: NDArray[np.float64]
    ss: NDArray[np.float64]

    @property
    def hit(self) -> NDArray[np.bool_]:
        return self.panel >= 0


class LabFrame:
    """Lab-frame pixel maps of a detector (built once per simulator) and ray projection.

    Args:
        model: the detector.
        beamstop_radius_mm: radius of the beamstop shadow (0 = none); the shadow has a 1-pixel soft edge.
        beamstop_arm: add the holder arm, a strip of the same width from the beam towards +x.
    """

    def __init__(self, model: DetectorModel, beamstop_radius_mm: float, beamstop_arm: bool) -> None:
        geom = model.geometry
        self.model = model
        self.shape = geom.slab_shape
        x_px, y_px, z = geom.pixel_positions()
        self.covered = np.isfinite(x_px)
        res = np.ones(self.shape, np.float64)
        for p in geom.panels:
            res[p.slab_slices()] = p.res
        self.nominal_clen = float(geom.panels[0].clen)
        x = np.where(self.covered, x_px / res, 0.0)
        y = np.where(self.covered, y_px / res, 0.0)
        self.x = x.astype(F32)
        self.y = y.astype(F32)
        self.dz = np.where(self.covered, z - self.nominal_clen, 0.0).astype(F32)
        self.r2 = (x * x + y * y).astype(F32)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.cos2_phi = np.where(self.r2 > 0, x * x / (x * x + y * y), 1.0).astype(F32)
        self.pixel_area = np.where(self.covered, 1.0 / res**2, 0.0).astype(F32)
        self._panel_arrays()
        self._grid = self._panel_grid(x_px, y_px)
        self.beamstop = self._beamstop(beamstop_radius_mm, beamstop_arm, x, y, res)
        self._cache: dict[tuple[float, float, float], BackgroundMaps] = {}

    def _panel_arrays(self) -> None:
        panels = self.model.geometry.panels
        self.n_fs = self.shape[1]
        self.p_min_fs = np.array([p.min_fs for p in panels], np.int64)
        self.p_min_ss = np.array([p.min_ss for p in panels], np.int64)
        self.p_width = np.array([p.width for p in panels], np.int64)
        self.p_height = np.array([p.height for p in panels], np.int64)
        self.p_res = np.array([p.res for p in panels], np.float64)
        self.p_corner = np.array(
            [(p.corner_x / p.res, p.corner_y / p.res, p.coffset + float(p.clen) - self.nominal_clen) for p in panels]
        )
        self.p_fs = np.array([p.fs_vec for p in panels]) / self.p_res[:, None]
        self.p_ss = np.array([p.ss_vec for p in panels]) / self.p_res[:, None]
        normal = np.cross(self.p_fs, self.p_ss)
        self.p_normal = normal / np.linalg.norm(normal, axis=1, keepdims=True)
        basis = np.stack([self.p_fs, self.p_ss, self.p_normal], axis=2)  # (P, 3, 3), columns F, S, n
        self.p_basis_inv = np.linalg.inv(basis)
        # In-plane pixel axes (lab xy, in pixels) and their inverse, for spot covariances.
        axes = np.stack([np.array([p.fs_vec[:2] for p in panels]), np.array([p.ss_vec[:2] for p in panels])], axis=2)
        self.p_axes_inv = np.linalg.inv(axes)  # lab-xy pixel displacement -> panel (fs, ss)
        self.flat_normals = bool(np.allclose(np.abs(self.p_normal[:, 2]), 1.0))

    def _panel_grid(
        self, x_px: NDArray[np.float32], y_px: NDArray[np.float32]
    ) -> tuple[NDArray[np.int32], float, float] | None:
        """A 1-pixel raster of panel indices by pixel centre, for flat, axis-aligned layouts of more than
        16 panels (else None: testing every panel is as fast).

        Two non-overlapping axis-aligned unit pixels cannot have their centres in one cell, and any
        point of a pixel lies in the cell of its centre or a neighbouring one, so the 3x3 cells around
        a point name every panel it can be on.
        """
        panels = self.model.geometry.panels
        units = {(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)}
        aligned = all(
            (p.fs_vec[0], p.fs_vec[1]) in units
            and (p.ss_vec[0], p.ss_vec[1]) in units
            and p.fs_vec[2] == 0
            and p.ss_vec[2] == 0
            for p in panels
        )
        if len(panels) <= 16 or not aligned or np.ptp(self.p_res) > 0 or np.ptp(self.p_corner[:, 2]) > 0:
            return None
        x0 = float(np.nanmin(x_px)) - 1.0
        y0 = float(np.nanmin(y_px)) - 1.0
        nx = int(np.nanmax(x_px) - x0) + 2
        ny = int(np.nanmax(y_px) - y0) + 2
        grid = np.full((ny, nx), -1, np.int32)
        index = self.model.geometry.panel_index_map()
        cov = self.covered
        grid[np.floor(y_px[cov] - y0).astype(np.int64), np.floor(x_px[cov] - x0).astype(np.int64)] = index[cov]
        return grid, x0, y0

    def _beamstop(
        self, radius_mm: float, arm: bool, x: NDArray[np.float64], y: NDArray[np.float64], res: NDArray[np.float64]
    ) -> NDArray[np.float32]:
        if radius_mm <= 0:
            return np.where(self.covered, 1.0, 0.0).astype(F32)
        radius = radius_mm * 1e-3
        px = 1.0 / res
        dist = np.hypot(x, y) - radius
        if arm:
            arm_dist = np.where(x > 0, np.abs(y) - radius, np.inf)
            dist = np.minimum(dist, arm_dist)
        transmission = np.clip(dist / px + 0.5, 0.0, 1.0)
        return np.where(self.covered, transmission, 0.0).astype(F32)

    def maps(self, clen_m: float, wavelength_a: float, polarisation: float) -> BackgroundMaps:
        """Background maps at this distance and wavelength (cached; a handful of entries kept)."""
        key = (round(clen_m, 9), round(wavelength_a, 9), round(polarisation, 6))
        maps = self._cache.get(key)
        if maps is None:
            maps = self._compute_maps(clen_m, wavelength_a, polarisation)
            if len(self._cache) >= 8:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = maps
        return maps

    def _compute_maps(self, clen_m: float, wavelength_a: float, polarisation: float) -> BackgroundMaps:
        z = self.dz + F32(clen_m)
        d2 = self.r2 + z * z
        inv_d = 1.0 / np.sqrt(d2)
        cos_2t = z * inv_d
        sin2_2t = self.r2 / d2
        if self.flat_normals:
            cos_psi = cos_2t
        else:
            normal = np.zeros((*self.shape, 3), F32)
            for i, p in enumerate(self.model.geometry.panels):
                normal[p.slab_slices()] = self.p_normal[i]
            cos_psi = np.abs(normal[..., 0] * self.x + normal[..., 1] * self.y + normal[..., 2] * z) * inv_d
        solid_angle = self.pixel_area * cos_psi / d2
        sin_t = np.sqrt(np.clip(0.5 * (1.0 - cos_2t), 0.0, 1.0))
        q = np.where(self.covered, F32(4.0 * math.pi / wavelength_a) * sin_t, 0.0).astype(F32)
        geometric = (solid_angle * polarisation_factor(sin2_2t, self.cos2_phi, polarisation) * self.beamstop).astype(
            F32
        )
        water = (F32(N_WATER * 1e4 * R_E2) * water_profile(q) * geometric).astype(F32)
        air = (F32(N_AIR * 1e7 * R_E2) * air_profile(q).astype(F32) * geometric).astype(F32)
        return BackgroundMaps(q=q, geometric=geometric, water=water, air=air)

    def project(self, directions: NDArray[np.float64], clen_m: float) -> Projection:
        """Panel and panel-relative position where unit ``directions`` (N, 3) from the sample land."""
        n = directions.shape[0]
        panel = np.full(n, -1, np.int64)
        fs = np.zeros(n)
        ss = np.zeros(n)
        if n == 0:
            return Projection(panel, fs, ss)
        if self._grid is not None:
            return self._project_grid(directions, clen_m)
        corner = self.p_corner.copy()
        corner[:, 2] += clen_m
        # For panel p and ray s: t = (n.C) / (n.s) and (a, b) = dual(F, S) . (t s - C); all (N, P).
        fs_dual, ss_dual = self.p_basis_inv[:, 0, :], self.p_basis_inv[:, 1, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.p_normal * corner).sum(axis=1)[None, :] / (directions @ self.p_normal.T)
            a = t * (directions @ fs_dual.T) - (corner * fs_dual).sum(axis=1)[None, :]
            b = t * (directions @ ss_dual.T) - (corner * ss_dual).sum(axis=1)[None, :]
        inside = (t > 0) & (a >= 0) & (b >= 0) & (a < self.p_width[None, :]) & (b < self.p_height[None, :])
        found = inside.any(axis=1)
        first = np.argmax(inside, axis=1)
        rows = np.nonzero(found)[0]
        panel[rows] = first[rows]
        fs[rows] = a[rows, first[rows]]
        ss[rows] = b[rows, first[rows]]
        return Projection(panel, fs, ss)

    def _project_grid(self, directions: NDArray[np.float64], clen_m: float) -> Projection:
        grid, x0, y0 = self._grid  # type: ignore[misc]
        n = directions.shape[0]
        res = self.p_res[0]
        forward = directions[:, 2] > 1e-9
        t = np.where(forward, (clen_m + self.p_corner[0, 2]) / np.where(forward, directions[:, 2], 1.0), 0.0)
        x = directions[:, 0] * t * res
        y = directions[:, 1] * t * res
        ix = np.floor(x - x0).astype(np.int64)
        iy = np.floor(y - y0).astype(np.int64)
        steps = np.array([-1, 0, 1])
        cx = (ix[:, None] + steps[None, :])[:, None, :]  # (N, 1, 3)
        cy = (iy[:, None] + steps[None, :])[:, :, None]  # (N, 3, 1)
        valid = forward[:, None, None] & (cx >= 0) & (cx < grid.shape[1]) & (cy >= 0) & (cy < grid.shape[0])
        cand = np.where(valid, grid[np.clip(cy, 0, grid.shape[0] - 1), np.clip(cx, 0, grid.shape[1] - 1)], -1).reshape(
            n, 9
        )
        safe = np.maximum(cand, 0)
        corner_x = self.p_corner[safe, 0] * res
        corner_y = self.p_corner[safe, 1] * res
        fs_vec = self.p_fs[safe] * res
        ss_vec = self.p_ss[safe] * res
        dx, dy = x[:, None] - corner_x, y[:, None] - corner_y
        a = dx * fs_vec[..., 0] + dy * fs_vec[..., 1]
        b = dx * ss_vec[..., 0] + dy * ss_vec[..., 1]
        inside = (cand >= 0) & (a >= 0) & (b >= 0) & (a < self.p_width[safe]) & (b < self.p_height[safe])
        found = inside.any(axis=1)
        first = np.argmax(inside, axis=1)
        rows = np.nonzero(found)[0]
        panel = np.full(n, -1, np.int64)
        fs = np.zeros(n)
        ss = np.zeros(n)
        panel[rows] = cand[rows, first[rows]]
        fs[rows] = a[rows, first[rows]]
        ss[rows] = b[rows, first[rows]]
        return Projection(panel, fs, ss)

    def slab_position(self, proj: Projection) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Slab ``fs, ss`` (pixel centre = integer) of projected points; NaN where nothing was hit."""
        hit = proj.hit
        idx = np.where(hit, proj.panel, 0)
        fs = np.where(hit, self.p_min_fs[idx] + proj.fs - 0.5, np.nan)
        ss = np.where(hit, self.p_min_ss[idx] + proj.ss - 0.5, np.nan)
        return fs, ss

    def lookup(self, image: NDArray[np.float32], proj: Projection) -> NDArray[np.float64]:
        """Values of a slab image at the pixels holding projected points (0 where nothing was hit)."""
        hit = proj.hit
        idx = np.where(hit, proj.panel, 0)
        col = np.clip(np.floor(proj.fs).astype(np.int64), 0, self.p_width[idx] - 1) + self.p_min_fs[idx]
        row = np.clip(np.floor(proj.ss).astype(np.int64), 0, self.p_height[idx] - 1) + self.p_min_ss[idx]
        return np.where(hit, image[row, col], 0.0)
