"""Per-frame metadata of any input kind: photon energy and camera length, from the geometry (a value or
a dataset path) or from a dataset the file is known to record them in."""

from __future__ import annotations

import h5py

from sfx_cnnhit.detector import DetectorGeometry, parse_length, parse_photon_energy
from sfx_cnnhit.io.sources.base import _exists, _MetaSource

JOULE_PER_EV = 1.602176634e-19

#: File datasets read as photon energy, with the factor to eV (None: a wavelength in Å).
PHOTON_ENERGY_SOURCES: tuple[tuple[str, float | None], ...] = (
    ("/LCLS/photon_energy_eV", 1.0),
    ("/instrument/photon_energy_eV", 1.0),
    ("/entry_1/instrument_1/source_1/energy", 1.0 / JOULE_PER_EV),
    ("/entry/instrument/beam/incident_wavelength", None),
)
#: File datasets read as detector distance, with the factor to metres.
CLEN_SOURCES = (
    ("/LCLS/detector_1/EncoderValue", 1e-3),
    ("/instrument/detector_1/EncoderValue", 1e-3),
    ("/entry_1/instrument_1/detector_1/distance", 1.0),
    ("/entry/instrument/detector/detector_distance", 1.0),
)


def _metadata_sources(f: h5py.File | None, n_total: int, geometry: DetectorGeometry | None) -> dict[str, _MetaSource]:
    """Photon energy and camera length: the geometry's value or path first (as CrystFEL does), else a
    dataset the file is known to record them in (``f`` None: geometry constants only)."""

    def usable(path: str | None) -> bool:
        return (
            f is not None
            and path is not None
            and _exists(f, path)
            and isinstance(f[path], h5py.Dataset)
            and f[path].size in (1, n_total)
            and f[path].dtype.kind in "iuf"
        )

    meta: dict[str, _MetaSource] = {}
    specs = (
        (
            "photon_energy_ev",
            geometry.photon_energy_ev if geometry else None,
            parse_photon_energy,
            PHOTON_ENERGY_SOURCES,
        ),
        ("clen_m", geometry.panels[0].clen if geometry else None, parse_length, CLEN_SOURCES),
    )
    for key, spec, parse, fallbacks in specs:
        if isinstance(spec, float | int):
            meta[key] = _MetaSource(f"geometry ({key})", constant=float(spec))
        elif isinstance(spec, str):
            _, path, scale = parse(spec)
            if usable(path):
                meta[key] = _MetaSource(f"{path} (geometry)", dataset=path, factor=scale)
        if key not in meta:
            for path, factor in fallbacks:
                if usable(path):
                    meta[key] = _MetaSource(path, dataset=path, factor=factor or 1.0, wavelength=factor is None)
                    break
    return meta
