"""Amorphous scattering (liquid water, air) and the polarisation factor.

Here ``q = 4 pi sin(theta) / lambda`` (Å⁻¹, the 2π convention used for liquid-scattering profiles);
Bragg geometry elsewhere uses ``1/d``. Differential cross-sections are in electron units (multiples of
the Thomson cross-section ``r_e²`` per steradian) per molecule.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.simulate.cells import form_factor

#: Classical electron radius squared (Å²).
R_E2 = (2.8179403262e-5) ** 2
#: Molecules per Å³ of liquid water (ambient) and of air (N2-equivalent at 1 atm, 293 K).
N_WATER = 0.03343
N_AIR = 2.504e-5
#: N-N bond length (Å).
_N2_BOND = 1.0977

#: Room-temperature water: principal maximum, second maximum (shoulder), widths (Å⁻¹), heights (e.u.).
WATER_PEAK_Q = 2.00
_WATER_PEAKS = ((WATER_PEAK_Q, 0.28, 6.0), (2.90, 0.35, 3.0))
_WATER_BASE, _WATER_BASE_Q = 5.5, 6.0


def water_profile(q: NDArray[np.floating]) -> NDArray[np.floating]:
    """Approximate differential cross-section of liquid water per molecule (e.u./sr) versus ``q`` (Å⁻¹).

    A smooth molecular baseline (5.5 e.u. at ``q = 0``, falling as the molecular form factor) plus the
    principal maximum of the O-O structure at 2.0 Å⁻¹ (d ≈ 3.1 Å, FWHM 0.66 Å⁻¹, total 11 e.u.) and
    the second maximum at 2.9 Å⁻¹, which at ambient temperature shows as a shoulder.
    """
    q = np.asarray(q)
    out = _WATER_BASE * np.exp(-((q / _WATER_BASE_Q) ** 2))
    for q0, width, height in _WATER_PEAKS:
        out = out + height * np.exp(-0.5 * ((q - q0) / width) ** 2)
    return cast("NDArray[np.floating]", out)


def air_profile(q: NDArray[np.floating]) -> NDArray[np.floating]:
    """Differential cross-section of an N2 molecule (e.u./sr) versus ``q`` (Å⁻¹).

    Coherent two-atom Debye term ``2 f_N² (1 + sin(q r)/(q r))`` plus incoherent (Compton) scattering
    approximated by ``2 (Z - f_N²/Z)``; it falls roughly as 1/q over the detector.
    """
    q = np.asarray(q, np.float64)
    f = form_factor("N", cast("NDArray[np.float64]", q / (4.0 * math.pi)))  # q is float64 here
    qr = np.maximum(q * _N2_BOND, 1e-6)
    coherent = 2.0 * f * f * (1.0 + np.sin(qr) / qr)
    incoherent = 2.0 * (7.0 - f * f / 7.0)
    return cast("NDArray[np.floating]", coherent + incoherent)


def polarisation_factor(
    sin2_two_theta: NDArray[np.floating], cos2_phi: NDArray[np.floating], fraction: float
) -> NDArray[np.floating]:
    """Polarisation factor for a beam polarised along lab x by ``fraction``.

    ``P = f (1 - sin²2θ cos²φ) + (1 - f)(1 - sin²2θ sin²φ)`` with ``φ`` the azimuth from x.
    """
    return 1.0 - sin2_two_theta * (fraction * cos2_phi + (1.0 - fraction) * (1.0 - cos2_phi))
