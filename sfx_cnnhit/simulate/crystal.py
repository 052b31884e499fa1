"""Bragg reflections of a still: reciprocal-lattice points near the Ewald sphere, partiality, intensity.

Conventions: incident wave vector ``k_in = (0, 0, 1/lambda)``; a reciprocal-lattice vector
``g = U B h`` (Å⁻¹, ``|g| = 1/d``) diffracts along ``k_out = k_in + g`` when it lies on the Ewald sphere
``|k_in + g| = 1/lambda``. Its excitation error is ``eps = |k_in + g| - 1/lambda``; the spot is
predicted along ``k_in + g`` (the direction from the sphere centre through the lattice point).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.simulate.cells import UnitCell, allowed_by_centring, cell_key, protein_mean_f2, wilson_weights
from sfx_cnnhit.simulate.scattering import R_E2, polarisation_factor

#: Reflections are kept within this many excitation-error sigmas of the sphere.
N_SIGMA_EPS = 3.0
SQRT_2PI = math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class Lattice:
    """One crystal lattice in a frame.

    Attributes:
        cell: unit cell (already varied for this crystal).
        orientation: ``U`` (3, 3), rotating the cell's standard frame into the lab frame.
        domain_size_um: mosaic-block size ``D`` (µm).
        mosaicity_rad: rms mosaic spread ``eta`` (rad).
        b_factor: Wilson B (Å²).
        weight: this lattice's share of the illuminated volume relative to the first lattice.
    """

    cell: UnitCell
    orientation: NDArray[np.float64]
    domain_size_um: float
    mosaicity_rad: float
    b_factor: float
    weight: float = 1.0

    def as_dict(self) -> dict[str, object]:
        return {
            "cell": self.cell.as_dict(),
            "orientation": np.asarray(self.orientation).round(12).tolist(),
            "domain_size_um": self.domain_size_um,
            "mosaicity_deg": math.degrees(self.mosaicity_rad),
            "b_factor": self.b_factor,
            "weight": self.weight,
        }


@dataclass(frozen=True)
class Beam:
    """What the Bragg geometry needs of the pulse: wavelength (Å), rms bandwidth and divergence (rad),
    and the fraction polarised along lab x."""

    wavelength_a: float
    bandwidth: float
    divergence_rad: float
    polarisation: float = 1.0


@dataclass(frozen=True)
class Reflections:
    """Reflections of one lattice near the Ewald sphere (all arrays of length N).

    Attributes:
        hkl: (N, 3) int64 Miller indices.
        k_out: (N, 3) unit vectors of the diffracted rays.
        d: resolution (Å).
        eps: excitation error (Å⁻¹); sigma_eps its profile width.
        partiality: ``exp(-eps² / (2 sigma_eps²))``.
        photons_per_a3: expected photons per Å³ of illuminated crystal (before the beamstop), with
            polarisation and the lattice weight applied.
        sigma_radial, sigma_tangential: spot widths on the detector (rad, seen from the sample).
    """

    hkl: NDArray[np.int64]
    k_out: NDArray[np.float64]
    d: NDArray[np.float64]
    eps: NDArray[np.float64]
    sigma_eps: NDArray[np.float64]
    partiality: NDArray[np.float64]
    photons_per_a3: NDArray[np.float64]
    sigma_radial: NDArray[np.float64]
    sigma_tangential: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.d.size)


def excitation_sigma(
    g: NDArray[np.float64], cos_theta: NDArray[np.float64], beam: Beam, domain_size_a: float, mosaicity_rad: float
) -> NDArray[np.float64]:
    """Width of the excitation-error profile (Å⁻¹).

    ``sigma² = (1 / (D sqrt(2 pi)))² + (|g| cos(theta))² (eta² + delta²) + (|g|² lambda / 2 · bw)²``:
    the mosaic block's shape transform, rotations of ``g`` by mosaicity or of ``k_in`` by divergence,
    and the change of sphere radius over the spectrum.
    """
    sigma_d = 1.0 / (domain_size_a * SQRT_2PI)
    rot = g * cos_theta
    spec = g * g * beam.wavelength_a / 2.0 * beam.bandwidth
    return np.sqrt(sigma_d**2 + rot * rot * (mosaicity_rad**2 + beam.divergence_rad**2) + spec * spec)


def _candidates(a_mat: NDArray[np.float64], k: float, q_max: float, shell: float) -> NDArray[np.int64]:
    """Integer ``hkl`` (N, 3) whose lattice points lie within ``shell`` of the Ewald sphere.

    Enumerates lattice rows along the reciprocal axis closest to the beam and keeps, on each row, the
    integers between the sphere shells of radius ``k ± shell`` (solved as quadratics).
    """
    real = np.linalg.inv(a_mat).T  # real-space axes in the lab frame (Å)
    bounds = np.floor(q_max * np.linalg.norm(real, axis=0)).astype(np.int64)
    col = int(np.argmax(np.abs(a_mat[2]) / np.linalg.norm(a_mat, axis=0)))
    m_ax, n_ax = (i for i in range(3) if i != col)
    m = np.arange(-bounds[m_ax], bounds[m_ax] + 1)
    n = np.arange(-bounds[n_ax], bounds[n_ax] + 1)
    mm, nn = (v.ravel() for v in np.meshgrid(m, n, indexing="ij"))
    c = a_mat[:, col]
    cc = float(c @ c)
    v0 = mm[:, None] * a_mat[:, m_ax] + nn[:, None] * a_mat[:, n_ax]
    # Drop rows farther than q_max from the origin (perpendicular to the row axis).
    perp = v0 - np.outer(v0 @ c / cc, c)
    keep = np.einsum("ij,ij->i", perp, perp) <= q_max * q_max
    mm, nn, v0 = mm[keep], nn[keep], v0[keep]
    v0 = v0 + np.array([0.0, 0.0, k])
    bc = v0 @ c
    vv = np.einsum("ij,ij->i", v0, v0)
    disc_out = bc * bc - cc * (vv - (k + shell) ** 2)
    ok = disc_out >= 0
    mm, nn, bc, vv, disc_out = mm[ok], nn[ok], bc[ok], vv[ok], disc_out[ok]
    root_out = np.sqrt(disc_out)
    lo_out, hi_out = (-bc - root_out) / cc, (-bc + root_out) / cc
    disc_in = bc * bc - cc * (vv - max(k - shell, 0.0) ** 2)
    has_in = disc_in > 0
    root_in = np.sqrt(np.where(has_in, disc_in, 0.0))
    lo_in = np.where(has_in, (-bc - root_in) / cc, hi_out)
    hi_in = np.where(has_in, (-bc + root_in) / cc, hi_out)
    # Interval 1: [lo_out, lo_in]; interval 2: [hi_in, hi_out] (empty when there is no inner chord).
    starts = np.concatenate([np.ceil(lo_out), np.ceil(hi_in)]).astype(np.int64)
    stops = np.concatenate([np.floor(lo_in), np.where(has_in, np.floor(hi_out), np.ceil(hi_in) - 1)]).astype(np.int64)
    counts = np.maximum(stops - starts + 1, 0)
    owner = np.repeat(np.tile(np.arange(mm.size), 2), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    l_idx = np.repeat(starts, counts) + offsets
    hkl = np.empty((l_idx.size, 3), np.int64)
    hkl[:, m_ax] = mm[owner]
    hkl[:, n_ax] = nn[owner]
    hkl[:, col] = l_idx
    return hkl


def predict(lattice: Lattice, beam: Beam, d_min: float, photons_per_a2: float) -> Reflections:
    """Reflections of ``lattice`` within ``N_SIGMA_EPS`` profile widths of the Ewald sphere.

    Args:
        lattice: the crystal lattice.
        beam: wavelength, bandwidth and divergence.
        d_min: resolution limit (Å), e.g. the detector corner.
        photons_per_a2: fluence on the crystal (photons/Å²).

    The expected photons of reflection ``h`` from an illuminated volume ``V`` of mosaic blocks are

    ``N_h = F_0 r_e² P |F_h|² lambda² V / V_cell² · exp(-eps²/(2 sigma²)) / (sigma sqrt(2 pi))``

    where ``|F_h|² = <|F|²>(s) w_h`` is Wilson distributed (``<|F|²> = N_atoms <f²>(s) exp(-2 B s²)``,
    ``s = 1/(2d)``, ``w_h ~ Exp(1)``) and ``1/(sigma sqrt(2 pi))`` is the still-image Lorentz factor.
    """
    lam = beam.wavelength_a
    k = 1.0 / lam
    q_max = 1.0 / d_min
    a_mat = lattice.orientation @ lattice.cell.reciprocal_basis()
    domain_a = lattice.domain_size_um * 1e4
    sigma_max = float(excitation_sigma(np.array([q_max]), np.array([1.0]), beam, domain_a, lattice.mosaicity_rad)[0])
    hkl = _candidates(a_mat, k, q_max, N_SIGMA_EPS * sigma_max)
    g_vec = hkl @ a_mat.T
    g = np.linalg.norm(g_vec, axis=1)
    keep = (g > 0) & (g <= q_max) & allowed_by_centring(lattice.cell.centring, hkl)
    hkl, g_vec, g = hkl[keep], g_vec[keep], g[keep]
    k_vec = g_vec + np.array([0.0, 0.0, k])
    k_len = np.linalg.norm(k_vec, axis=1)
    eps = k_len - k
    sin_theta = np.clip(g * lam / 2.0, 0.0, 1.0)
    cos_theta = np.sqrt(1.0 - sin_theta**2)
    sigma = excitation_sigma(g, cos_theta, beam, domain_a, lattice.mosaicity_rad)
    near = np.abs(eps) <= N_SIGMA_EPS * sigma
    hkl, g, k_vec, k_len, eps, sigma = hkl[near], g[near], k_vec[near], k_len[near], eps[near], sigma[near]
    sin_theta, cos_theta = sin_theta[near], cos_theta[near]
    k_out = k_vec / k_len[:, None]
    partiality = np.exp(-0.5 * (eps / sigma) ** 2)
    s = g / 2.0
    mean_f2 = lattice.cell.n_atoms * protein_mean_f2(s) * np.exp(-2.0 * lattice.b_factor * s * s)
    w = wilson_weights(hkl, cell_key(lattice.cell.name))
    sin2_2t = k_out[:, 0] ** 2 + k_out[:, 1] ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        cos2_phi = np.where(sin2_2t > 0, k_out[:, 0] ** 2 / sin2_2t, 1.0)
    pol = polarisation_factor(sin2_2t, cos2_phi, beam.polarisation)
    lorentz = 1.0 / (sigma * SQRT_2PI)
    photons = photons_per_a2 * R_E2 * pol * mean_f2 * w * lam * lam / lattice.cell.volume**2 * partiality * lorentz
    photons *= lattice.weight
    # Spot widths (rad): shape transform of a block (lambda / (D sqrt(2 pi))) and mosaic rotation
    # (2 sin(theta) eta) tangentially; the spectrum spreads 2 theta radially by 2 tan(theta) bw.
    ang_domain = lam / (domain_a * SQRT_2PI)
    tangential = np.sqrt(ang_domain**2 + (2.0 * sin_theta * lattice.mosaicity_rad) ** 2 + beam.divergence_rad**2)
    radial = np.sqrt(tangential**2 + (2.0 * sin_theta / cos_theta * beam.bandwidth) ** 2)
    return Reflections(
        hkl=hkl,
        k_out=k_out,
        d=1.0 / g,
        eps=eps,
        sigma_eps=sigma,
        partiality=partiality,
        photons_per_a3=photons,
        sigma_radial=radial,
        sigma_tangential=tangential,
    )
