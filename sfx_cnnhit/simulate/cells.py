"""Protein unit cells, reciprocal bases and Wilson statistics.

Reciprocal-space vectors use the crystallographic convention ``|g| = 1/d`` (Å⁻¹, no 2π).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.typing import NDArray

#: Cromer-Mann coefficients (a1..a4, b1..b4, c) of C, N, O, S (International Tables Vol. C, 6.1.1.4).
_CROMER_MANN = {
    "C": ((2.31, 1.02, 1.5886, 0.865), (20.8439, 10.2075, 0.5687, 51.6512), 0.2156),
    "N": ((12.2126, 3.1322, 2.0125, 1.1663), (0.0057, 9.8933, 28.9975, 0.5826), -11.529),
    "O": ((3.0485, 2.2868, 1.5463, 0.867), (13.2771, 5.7011, 0.3239, 32.9089), 0.2508),
    "S": ((6.9053, 5.2034, 1.4379, 1.5863), (1.4679, 22.2151, 0.2536, 56.172), 0.8669),
}
#: Non-hydrogen atom fractions of an average protein (C5 N1.35 O1.5 S0.04 per residue-ish unit).
PROTEIN_COMPOSITION = {"C": 0.634, "N": 0.171, "O": 0.190, "S": 0.005}
#: Protein volume per non-hydrogen atom (Å³): 1.23 Å³/Da over ~14.3 Da per non-H atom.
PROTEIN_VOLUME_PER_ATOM = 17.6


def form_factor(element: str, s: NDArray[np.float64]) -> NDArray[np.float64]:
    """Atomic scattering factor (electrons) at ``s = sin(theta)/lambda`` (Å⁻¹)."""
    a, b, c = _CROMER_MANN[element]
    s2 = np.asarray(s, np.float64) ** 2
    return cast("NDArray[np.float64]", sum(ai * np.exp(-bi * s2) for ai, bi in zip(a, b, strict=True)) + c)


def protein_mean_f2(s: NDArray[np.float64]) -> NDArray[np.float64]:
    """Mean squared atomic scattering factor of protein atoms (electrons²) at ``s`` (Å⁻¹)."""
    return cast("NDArray[np.float64]", sum(frac * form_factor(el, s) ** 2 for el, frac in PROTEIN_COMPOSITION.items()))


@dataclass(frozen=True)
class UnitCell:
    """A unit cell: edges (Å), angles (degrees), lattice centring, solvent fraction, space group label."""

    name: str
    a: float
    b: float
    c: float
    alpha: float = 90.0
    beta: float = 90.0
    gamma: float = 90.0
    centring: str = "P"
    solvent_fraction: float = 0.5
    space_group: str = "P1"

    @property
    def volume(self) -> float:
        """Cell volume (Å³)."""
        ca, cb, cg = (math.cos(math.radians(x)) for x in (self.alpha, self.beta, self.gamma))
        return self.a * self.b * self.c * math.sqrt(1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg)

    @property
    def n_atoms(self) -> float:
        """Protein non-hydrogen atoms per cell."""
        return self.volume * (1.0 - self.solvent_fraction) / PROTEIN_VOLUME_PER_ATOM

    def real_basis(self) -> NDArray[np.float64]:
        """Real-space basis, columns ``a, b, c`` (Å), with ``a`` along x and ``b`` in the xy plane."""
        al, be, ga = (math.radians(x) for x in (self.alpha, self.beta, self.gamma))
        a_vec = np.array([self.a, 0.0, 0.0])
        b_vec = self.b * np.array([math.cos(ga), math.sin(ga), 0.0])
        cx = math.cos(be)
        cy = (math.cos(al) - math.cos(be) * math.cos(ga)) / math.sin(ga)
        cz = math.sqrt(max(1.0 - cx * cx - cy * cy, 0.0))
        c_vec = self.c * np.array([cx, cy, cz])
        return np.stack([a_vec, b_vec, c_vec], axis=1)

    def reciprocal_basis(self) -> NDArray[np.float64]:
        """Reciprocal basis ``B``, columns ``a*, b*, c*`` (Å⁻¹): ``g = B @ (h, k, l)``, ``|g| = 1/d``."""
        return cast("NDArray[np.float64]", np.linalg.inv(self.real_basis()).T)

    def scaled(self, factors: tuple[float, float, float]) -> UnitCell:
        """The same cell with its edges multiplied by ``factors``."""
        return UnitCell(
            self.name,
            self.a * factors[0],
            self.b * factors[1],
            self.c * factors[2],
            self.alpha,
            self.beta,
            self.gamma,
            self.centring,
            self.solvent_fraction,
            self.space_group,
        )

    def as_dict(self) -> dict[str, float | str]:
        return {
            "name": self.name,
            "a": self.a,
            "b": self.b,
            "c": self.c,
            "alpha": self.alpha,
            "beta": self.beta,
            "gamma": self.gamma,
            "centring": self.centring,
            "space_group": self.space_group,
        }


def allowed_by_centring(centring: str, hkl: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Reflections (rows of ``hkl``, (N, 3)) not systematically absent because of lattice centring."""
    h, k, l = hkl[:, 0], hkl[:, 1], hkl[:, 2]  # noqa: E741
    if centring == "P":
        return np.ones(h.shape, bool)
    if centring == "C":
        return cast("NDArray[np.bool_]", (h + k) % 2 == 0)
    if centring == "I":
        return cast("NDArray[np.bool_]", (h + k + l) % 2 == 0)
    if centring == "F":
        return cast("NDArray[np.bool_]", ((h + k) % 2 == 0) & ((k + l) % 2 == 0))
    raise ValueError(f"unsupported centring {centring!r}")


#: Protein-like unit cells (PDB-typical values).
CELLS: dict[str, UnitCell] = {
    c.name: c
    for c in (
        UnitCell("lysozyme", 79.1, 79.1, 37.9, centring="P", solvent_fraction=0.39, space_group="P43212"),
        UnitCell("thermolysin", 92.8, 92.8, 128.5, 90, 90, 120, "P", 0.55, "P6122"),
        UnitCell("insulin", 78.9, 78.9, 78.9, centring="I", solvent_fraction=0.65, space_group="I213"),
        UnitCell("myoglobin", 64.2, 30.9, 34.9, 90, 105.8, 90, "P", 0.40, "P21"),
        UnitCell("photosystem", 117.0, 223.0, 311.0, centring="P", solvent_fraction=0.60, space_group="P212121"),
    )
}


def random_rotation(rng: np.random.Generator) -> NDArray[np.float64]:
    """A rotation matrix drawn uniformly from SO(3) (normalised Gaussian quaternion)."""
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def wilson_weights(hkl: NDArray[np.int64], key: int) -> NDArray[np.float64]:
    """Acentric Wilson intensity ratios ``I/<I>`` (exponentially distributed, mean 1) of rows of ``hkl``.

    Deterministic in ``(h, k, l, key)`` and equal for Friedel mates, so every crystal of one cell shares
    one set of structure-factor amplitudes, as crystals of one protein do.
    """
    h, k, l = hkl[:, 0], hkl[:, 1], hkl[:, 2]  # noqa: E741
    sign = np.where((h < 0) | ((h == 0) & ((k < 0) | ((k == 0) & (l < 0)))), -1, 1)
    off = np.int64(1 << 20)
    packed = (((sign * h + off) << 42) | ((sign * k + off) << 21) | (sign * l + off)).astype(np.uint64)
    x = packed ^ np.uint64(key & 0xFFFFFFFFFFFFFFFF)
    # splitmix64 finaliser
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    u = ((x >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))
    return -np.log(u)


def cell_key(name: str) -> int:
    """A stable 64-bit key of a cell name for :func:`wilson_weights`."""
    key = 1469598103934665603
    for byte in name.encode():
        key = ((key ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return key
