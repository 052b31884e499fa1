"""CrystFEL geometry text (``crystfel_geometry(5)``, 0.9 and 0.10+ syntax) to and from a
:class:`~sfx_cnnhit.detector.DetectorGeometry`: :func:`parse_geometry` and :func:`format_geometry`, pure
functions (files: :func:`sfx_cnnhit.io.geometry.read_geometry` / :func:`~sfx_cnnhit.io.geometry.write_geometry`).

Supported: panels (``min/max_fs/ss``, ``corner_x/y``, ``fs``/``ss`` vectors such as
``-0.0001x +1y``, ``res``, ``coffset``, ``adu_per_photon``/``adu_per_eV``, ``max_adu``, ``data``,
``dimN``, ``no_index``, ``mask_edge_pixels``, ``flag_lessthan/morethan/equal``), top-level values as
defaults for the panels first mentioned after them, one bad-pixel mask (``mask``/``mask_file``/
``mask_good``/``mask_bad`` or ``mask0_data``/``mask0_file``/``mask0_goodbits``/``mask0_badbits``), bad
regions in fs/ss or x/y. ``photon_energy`` (eV, keV), ``wavelength`` (m, A), ``clen`` and
``detector_shift_x/y`` (m, mm) are numbers with an optional unit (``4570eV``, ``95.3 mm``) or HDF5
paths with an optional unit after a space (``/path/x_m m``; without one, a ``clen`` or shift path is in
mm, CrystFEL's rule). Paths are per-frame values: they are kept as written and written back as
written. ``rigid_group*``, ``group_*``, ``peak_list*``, ``bandwidth``, ``photon_energy_bandwidth``,
``electron_voltage`` and the obsolete panel keys ``peak_sep``/``badrow_direction`` are read and
ignored; unknown keys are ignored with a warning naming the line. Geometries whose panels pick a module
with a fixed index dimension (EuXFEL: ``dim1 = 3``) are converted to this package's slab, where the
modules are stacked along ss in index order.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field, replace
from typing import cast

from sfx_cnnhit import __version__
from sfx_cnnhit.detector import (
    BadRegion,
    BadRegionXY,
    DetectorGeometry,
    Panel,
    parse_length,
    parse_photon_energy,
    split_value,
)
from sfx_cnnhit.errors import ConfigError

HC_EV_M = 12398.419843320026e-10  # h*c in eV*m
FLAG_KEYS = ("flag_lessthan", "flag_morethan", "flag_equal")
_INT_KEYS = ("min_fs", "max_fs", "min_ss", "max_ss")
_FLOAT_KEYS = ("corner_x", "corner_y", "res", "coffset", "adu_per_photon", "adu_per_eV", "max_adu")
_MASK_ALIASES = {"mask": "data", "mask_file": "file", "mask_good": "goodbits", "mask_bad": "badbits"}
_MASK_RE = re.compile(r"mask(\d+)_(data|file|goodbits|badbits)")
_IGNORED_TOPLEVEL = (
    "peak_list",
    "peak_list_type",
    "hdf5_peak_path",
    "bandwidth",
    "photon_energy_bandwidth",
    "electron_voltage",
)
_IGNORED_PANEL = ("peak_sep", "badrow_direction")
_TOPLEVEL_ONLY = ("photon_energy", "wavelength", "detector_shift_x", "detector_shift_y")
_VECTOR_TERM = re.compile(r"([+-]?)(\d*\.?\d*(?:[eE][+-]?\d+)?)([xyz])")


@dataclass
class _Line:
    number: int
    key: str
    value: str


@dataclass
class _PanelDraft:
    name: str
    first_line: int
    values: dict[str, _Line] = field(default_factory=dict)
    flags: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _GeometryDraft:
    """The lines of a geometry file, sorted by what they set (see :func:`_read_lines`)."""

    defaults: dict[str, _Line] = field(default_factory=dict)  # top-level panel values so far
    default_flags: dict[str, list[str]] = field(default_factory=dict)
    panels: dict[str, _PanelDraft] = field(default_factory=dict)
    bad: dict[str, dict[str, _Line]] = field(default_factory=dict)  # bad region -> its keys
    toplevel: dict[str, _Line] = field(default_factory=dict)  # _TOPLEVEL_ONLY keys
    unused_default: _Line | None = None  # a top-level panel value after the last panel


def _fail(source: str, line: _Line | int, message: str) -> ConfigError:
    number = line.number if isinstance(line, _Line) else line
    return ConfigError(f"{source} line {number}: {message}")


def _warn(source: str, line: _Line, message: str, *, depth: int = 0) -> None:
    """Warn about ``line`` of ``source`` (stack level: the caller of :func:`parse_geometry`; ``depth``:
    calls between this function's caller and :func:`parse_geometry`)."""
    warnings.warn(f"{source} line {line.number}: {message}", stacklevel=3 + depth)


def parse_vector(text: str) -> tuple[float, float, float]:
    """Parse a CrystFEL direction such as ``-0.0001x +1y`` (or ``x``, ``-y +0.5z``) to ``(x, y, z)``."""
    compact = text.replace(" ", "").replace("\t", "")
    if not compact:
        raise ValueError("empty direction")
    pos, comps = 0, {"x": 0.0, "y": 0.0, "z": 0.0}
    while pos < len(compact):
        m = _VECTOR_TERM.match(compact, pos)
        if m is None or m.end() == pos or (pos > 0 and not m.group(1)):
            raise ValueError(f"invalid direction {text!r}")
        sign, number, axis = m.groups()
        value = float(number) if number not in ("", ".") else 1.0
        comps[axis] += -value if sign == "-" else value
        pos = m.end()
    return comps["x"], comps["y"], comps["z"]


def format_vector(vec: tuple[float, float, float]) -> str:
    """``(x, y, z)`` as CrystFEL writes a direction, exactly (shortest round-trip floats)."""
    return " ".join(f"{float(v):+}{axis}" for v, axis in zip(vec, "xyz", strict=True))


def _as_written(spec: str) -> str:
    """A per-frame value (HDF5 path and optional unit) as written, with its whitespace normalised."""
    return " ".join(spec.split())


def _parse_int(source: str, line: _Line) -> int:
    try:
        value = float(line.value)
    except ValueError:
        raise _fail(source, line, f"{line.key} must be an integer, not {line.value!r}") from None
    if value != int(value):
        raise _fail(source, line, f"{line.key} must be an integer, not {line.value!r}")
    return int(value)


def _parse_float(source: str, line: _Line) -> float:
    try:
        return float(line.value)
    except ValueError:
        raise _fail(source, line, f"{line.key} must be a number, not {line.value!r}") from None


def _parse_bits(source: str, line: _Line) -> int:
    try:
        return int(line.value, 0)
    except ValueError:
        try:
            return int(float(line.value))
        except ValueError:
            raise _fail(source, line, f"{line.key} must be an integer such as 0x0001, not {line.value!r}") from None


def _mask_key(key: str) -> tuple[int, str] | None:
    if key in _MASK_ALIASES:
        return 0, _MASK_ALIASES[key]
    m = _MASK_RE.fullmatch(key)
    return (int(m.group(1)), m.group(2)) if m else None


def _is_panel_key(key: str) -> bool:
    return (
        key in _INT_KEYS
        or key in _FLOAT_KEYS
        or key in ("fs", "ss", "data", "clen", "no_index", "mask_edge_pixels", "saturation_map", "saturation_map_file")
        or key in FLAG_KEYS
        or key.startswith("dim")
        or _mask_key(key) is not None
    )


def _is_consumed(key: str) -> bool:
    """Keys turned into Panel fields (everything else of a panel is kept in ``Panel.extra``)."""
    return (
        key in _INT_KEYS
        or key in _FLOAT_KEYS
        or key in ("fs", "ss", "data", "clen")
        or key.startswith("dim")
        or _mask_key(key) is not None
    )


def parse_geometry(text: str, source: str = "<geometry>") -> DetectorGeometry:
    """Parse CrystFEL geometry text into a :class:`DetectorGeometry` (see the module docstring).

    Raises:
        ConfigError: naming ``source`` and the line for any malformed or inconsistent entry.
    """
    draft = _read_lines(text, source)
    if not draft.panels:
        raise ConfigError(f"{source}: no panels defined (expected lines such as 'p0/min_fs = 0')")
    if draft.unused_default is not None:
        _warn(
            source,
            draft.unused_default,
            f"'{draft.unused_default.key}' comes after the last panel and has no effect "
            "(top-level values apply to panels first mentioned after them)",
        )

    mask = _common_mask(source, draft.panels)
    toplevel = draft.toplevel
    photon_energy = _photon_energy(source, toplevel)
    built = [_build_panel(source, panel, photon_energy) for panel in draft.panels.values()]
    built = _slabify(source, built)
    data_paths = {p.data for p in built}
    if len(data_paths) > 1:
        raise ConfigError(
            f"{source}: panels read from different datasets {sorted(map(str, data_paths))}; "
            "only one data block (slab) is supported"
        )
    regions, regions_xy = _bad_regions(source, draft.bad, built)
    return DetectorGeometry(
        panels=tuple(built),
        photon_energy_ev=photon_energy,
        bad_regions=tuple(regions),
        bad_regions_xy=tuple(regions_xy),
        mask_path=cast("str | None", mask.get("data")),
        mask_file=cast("str | None", mask.get("file")),
        mask_good=cast("int | None", mask.get("goodbits")),
        mask_bad=cast("int | None", mask.get("badbits")),
        data_path=built[0].data or "/data/data",
        detector_shift_x=_as_written(toplevel["detector_shift_x"].value) if "detector_shift_x" in toplevel else None,
        detector_shift_y=_as_written(toplevel["detector_shift_y"].value) if "detector_shift_y" in toplevel else None,
    )


def _read_lines(text: str, source: str) -> _GeometryDraft:
    """Sort the lines of ``text`` into panel values, top-level defaults, top-level-only values and bad
    regions, checking each value where it is read; ignored keys are skipped, unknown ones warned about."""
    draft = _GeometryDraft()
    for number, raw in enumerate(text.splitlines(), start=1):
        content = raw.split(";", 1)[0].strip()
        if not content:
            continue
        if "=" not in content:
            raise _fail(source, number, f"expected 'key = value', got {content!r}")
        key, value = (s.strip() for s in content.split("=", 1))
        line = _Line(number, key, value)
        if not key:
            raise _fail(source, line, "missing key before '='")
        if key in _TOPLEVEL_ONLY:
            _check_toplevel(source, line)
        if "/" in key:
            owner, field_name = key.split("/", 1)
            line.key = field_name
            if owner.startswith("bad"):
                draft.bad.setdefault(owner, {})[field_name] = line
                continue
            if owner.startswith(("group", "rigid_group")):
                raise _fail(source, line, f"panel names must not start with 'group' or 'rigid_group' ({owner!r})")
            if field_name in _IGNORED_PANEL:
                continue
            if not _is_panel_key(field_name):
                _warn(source, line, f"unknown panel key {key!r} ignored", depth=1)
                continue
            panel = draft.panels.get(owner)
            if panel is None:
                panel = draft.panels[owner] = _PanelDraft(
                    owner, number, dict(draft.defaults), {k: list(v) for k, v in draft.default_flags.items()}
                )
                draft.unused_default = None
            _set_panel_value(source, panel.values, panel.flags, line)
        elif key.startswith(("rigid_group", "group_")) or key in _IGNORED_TOPLEVEL or key in _IGNORED_PANEL:
            continue
        elif key in _TOPLEVEL_ONLY:
            draft.toplevel[key] = line
        elif _is_panel_key(key):
            _set_panel_value(source, draft.defaults, draft.default_flags, line)
            draft.unused_default = line
        else:
            _warn(source, line, f"unknown geometry key {key!r} ignored", depth=1)
    return draft


def _set_panel_value(source: str, values: dict[str, _Line], flags: dict[str, list[str]], line: _Line) -> None:
    key = line.key
    if key in FLAG_KEYS:
        _parse_float(source, line)
        flags.setdefault(key, []).append(line.value)
        return
    mask_key = _mask_key(key)
    if mask_key is not None:
        line = _Line(line.number, f"mask{mask_key[0]}_{mask_key[1]}", line.value)
    _validate(source, line)
    values[line.key] = line


def _validate(source: str, line: _Line) -> None:
    """Check one panel value as soon as it is read, so errors name its line."""
    key = line.key
    try:
        if key in _INT_KEYS:
            _parse_int(source, line)
        elif key in _FLOAT_KEYS:
            _parse_float(source, line)
        elif key in ("fs", "ss"):
            parse_vector(line.value)
        elif key == "clen":
            parse_length(line.value)
        elif key.endswith(("_goodbits", "_badbits")):
            _parse_bits(source, line)
        elif key.startswith("dim"):
            _check_dim(source, line)
    except ValueError as err:
        raise _fail(source, line, str(err)) from None


def _check_toplevel(source: str, line: _Line) -> None:
    """Check a top-level-only value (photon energy, wavelength, detector shift) where it is read."""
    try:
        if line.key == "photon_energy":
            parse_photon_energy(line.value)
        elif line.key == "wavelength":
            _, _, unit = split_value(line.value)
            if unit not in ("m", "A"):
                raise ValueError("wavelength needs a unit, e.g. '1.3 A' or '1.3e-10 m'")
        else:
            parse_length(line.value)
    except ValueError as err:
        raise _fail(source, line, str(err)) from None


def _photon_energy(source: str, toplevel: dict[str, _Line]) -> float | str | None:
    """The photon energy in eV, or a per-frame HDF5 path as written (with its unit, if any)."""
    if "photon_energy" in toplevel and "wavelength" in toplevel:
        raise _fail(source, toplevel["wavelength"], "give either photon_energy or wavelength, not both")
    if "photon_energy" in toplevel:
        line = toplevel["photon_energy"]
        value, path, _ = parse_photon_energy(line.value)
        return _as_written(line.value) if path is not None else value
    if "wavelength" in toplevel:
        line = toplevel["wavelength"]
        value, _, unit = split_value(line.value)
        if value is None:
            _warn(
                source, line, "a wavelength from an HDF5 path is not used (give photon_energy); energy unknown", depth=1
            )
            return None
        return HC_EV_M / (value * (1e-10 if unit == "A" else 1.0))
    return None


def _build_panel(source: str, draft: _PanelDraft, photon_energy: float | str | None) -> Panel:
    v = draft.values
    where = f"panel {draft.name} (first at line {draft.first_line})"
    for key in (*_INT_KEYS, "corner_x", "corner_y", "fs", "ss", "res", "clen"):
        if key not in v:
            raise ConfigError(f"{source}: {where}: missing '{key}'")
    ints = {key: _parse_int(source, v[key]) for key in _INT_KEYS}
    floats = {key: _parse_float(source, v[key]) for key in _FLOAT_KEYS if key in v}
    vectors = {}
    for key in ("fs", "ss"):
        try:
            vectors[key] = parse_vector(v[key].value)
        except ValueError as err:
            raise _fail(source, v[key], str(err)) from None
    try:
        clen_m = parse_length(v["clen"].value)[0]
    except ValueError as err:
        raise _fail(source, v["clen"], str(err)) from None
    clen: float | str = clen_m if clen_m is not None else _as_written(v["clen"].value)
    # adu_per_eV and adu_per_photon set the same gain (as in CrystFEL): the later line wins.
    per_ev = floats.get("adu_per_eV")
    if per_ev is not None and "adu_per_photon" in floats and v["adu_per_photon"].number > v["adu_per_eV"].number:
        per_ev = None
    adu = floats.get("adu_per_photon") if per_ev is None else None
    if per_ev is not None and isinstance(photon_energy, float):
        adu = per_ev * photon_energy  # else resolved per input: DetectorGeometry.with_photon_energy
    dims = _dims(source, v)
    extra = {key: line.value for key, line in v.items() if not _is_consumed(key)}
    extra.update({key: " ".join(values) for key, values in draft.flags.items()})
    if "res" in floats and floats["res"] <= 0:
        raise _fail(source, v["res"], "res must be positive (pixels per metre)")
    try:
        return Panel(
            name=draft.name,
            **ints,
            corner_x=floats["corner_x"],
            corner_y=floats["corner_y"],
            fs_vec=vectors["fs"],
            ss_vec=vectors["ss"],
            res=floats["res"],
            clen=clen,
            coffset=floats.get("coffset", 0.0),
            adu_per_photon=adu,
            adu_per_ev=per_ev,
            max_adu=floats.get("max_adu"),
            data=v["data"].value if "data" in v else "/data/data",
            dim_structure=dims,
            extra=extra,
        )
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _check_dim(source: str, line: _Line) -> None:
    if not line.key[3:].isdigit():
        raise _fail(source, line, f"'{line.key}': 'dim' must be followed by a number, e.g. 'dim0'")
    if line.value not in ("%", "ss", "fs") and not line.value.isdigit():
        raise _fail(source, line, f"invalid dimension value {line.value!r} (use %, ss, fs or an index)")


def _dims(source: str, values: dict[str, _Line]) -> tuple[str, ...]:
    dims: dict[int, str] = {}
    for key, line in values.items():
        if key.startswith("dim"):
            _check_dim(source, line)
            dims[int(key[3:])] = line.value
    if not dims:
        return ("ss", "fs")
    if sorted(dims) != list(range(len(dims))):
        first = next(line for key, line in values.items() if key.startswith("dim"))
        raise _fail(source, first, f"dimensions must be numbered 0..n without gaps, got {sorted(dims)}")
    structure = tuple(dims[i] for i in range(len(dims)))
    if structure.count("ss") != 1 or structure.count("fs") != 1 or structure.index("ss") > structure.index("fs"):
        raise ConfigError(f"{source}: dimension structure {structure} needs exactly one ss before one fs")
    return structure


def _slabify(source: str, panels: list[Panel]) -> list[Panel]:
    """Map panels that select a module through a fixed index dimension onto the stacked-module slab."""
    # _build_panel always sets dim_structure.
    fixed = [[i for i, d in enumerate(cast("tuple[str, ...]", p.dim_structure)) if d.isdigit()] for p in panels]
    if not any(fixed):
        return panels
    if any(len(f) != 1 for f in fixed) or len({tuple(f) for f in fixed}) != 1:
        raise ConfigError(f"{source}: every panel must fix exactly one module dimension (EuXFEL style), or none")
    axis = fixed[0][0]
    module_height = max(p.max_ss for p in panels) + 1
    out = []
    for p in panels:
        assert p.dim_structure is not None  # _build_panel always sets it
        module = int(p.dim_structure[axis])
        dims = tuple(d for i, d in enumerate(p.dim_structure) if i != axis)
        out.append(
            replace(
                p,
                min_ss=p.min_ss + module * module_height,
                max_ss=p.max_ss + module * module_height,
                dim_structure=dims,
            )
        )
    return out


def _common_mask(source: str, panels: dict[str, _PanelDraft]) -> dict[str, str | int]:
    specs = []
    for draft in panels.values():
        spec: dict[str, dict[str, _Line]] = {}
        for key, line in draft.values.items():
            m = _MASK_RE.fullmatch(key)
            if m:
                spec.setdefault(m.group(1), {})[m.group(2)] = line
        specs.append(spec)
    flat = [{(n, k): line.value for n, d in spec.items() for k, line in d.items()} for spec in specs]
    if any(f != flat[0] for f in flat):
        raise ConfigError(f"{source}: panels use different bad-pixel masks; only one mask for all panels is supported")
    spec = specs[0]
    with_data = sorted(n for n, d in spec.items() if "data" in d or "file" in d)
    if len(with_data) > 1:
        raise ConfigError(f"{source}: several bad-pixel masks (mask{', mask'.join(with_data)}); only one is supported")
    if not with_data:
        if spec:
            line = next(iter(next(iter(spec.values())).values()))
            raise _fail(source, line, "mask good/bad bits given without a mask location (mask0_data)")
        return {}
    d = spec[with_data[0]]
    if "data" not in d:
        raise _fail(source, d["file"], "a mask file needs a data location too (mask0_data)")
    if not d["data"].value.startswith("/"):
        raise _fail(source, d["data"], f"invalid mask location {d['data'].value!r} (must start with '/')")
    out: dict[str, str | int] = {"data": d["data"].value}
    if "file" in d:
        out["file"] = d["file"].value
    for key in ("goodbits", "badbits"):
        if key in d:
            out[key] = _parse_bits(source, d[key])
    if ("goodbits" in out) != ("badbits" in out):
        out.setdefault("goodbits", 0)
        out.setdefault("badbits", 0)
    return out


def _bad_regions(
    source: str, bad: dict[str, dict[str, _Line]], panels: list[Panel]
) -> tuple[list[BadRegion], list[BadRegionXY]]:
    regions: list[BadRegion] = []
    regions_xy: list[BadRegionXY] = []
    by_name = {p.name: p for p in panels}
    fsss_keys, xy_keys = ("min_fs", "max_fs", "min_ss", "max_ss"), ("min_x", "max_x", "min_y", "max_y")
    for name, values in bad.items():
        first = min(values.values(), key=lambda line: line.number)
        unknown = set(values) - {*fsss_keys, *xy_keys, "panel"}
        if unknown:
            raise _fail(source, values[sorted(unknown)[0]], f"unknown bad-region key {sorted(unknown)[0]!r}")
        is_fsss, is_xy = any(k in values for k in fsss_keys), any(k in values for k in xy_keys)
        if is_fsss and is_xy:
            raise _fail(source, first, f"bad region {name} mixes x/y and fs/ss coordinates")
        needed = fsss_keys if is_fsss else xy_keys
        missing = [k for k in needed if k not in values]
        if missing or not (is_fsss or is_xy):
            raise _fail(source, first, f"bad region {name} is missing {', '.join(missing or needed)}")
        panel_name = values["panel"].value if "panel" in values else None
        if panel_name is not None and panel_name not in by_name:
            raise _fail(source, values["panel"], f"bad region {name}: no such panel {panel_name!r}")
        if is_xy:
            min_x, max_x, min_y, max_y = (_parse_float(source, values[k]) for k in xy_keys)
            regions_xy.append(BadRegionXY(name, min_x, max_x, min_y, max_y, panel_name))
            continue
        if panel_name is None:
            if len(panels) != 1:
                raise _fail(source, first, f"bad region {name} in fs/ss needs '{name}/panel'")
            panel_name = panels[0].name
        min_fs, max_fs, min_ss, max_ss = (_parse_int(source, values[k]) for k in fsss_keys)
        p = by_name[panel_name]
        if min_fs < p.min_fs or max_fs > p.max_fs or min_ss < p.min_ss or max_ss > p.max_ss:
            raise _fail(
                source,
                first,
                f"bad region {name} lies outside panel {panel_name} "
                f"(fs {p.min_fs}..{p.max_fs}, ss {p.min_ss}..{p.max_ss})",
            )
        regions.append(BadRegion(name, min_fs, max_fs, min_ss, max_ss, panel_name))
    return regions, regions_xy


def _fmt(value: float) -> str:
    """A number exactly as Python reads it back (integers without a decimal point)."""
    v = float(value)
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


def format_geometry(
    geometry: DetectorGeometry,
    *,
    data_path: str | None = None,
    stacked: bool = True,
    peak_list: str | None = "/entry_1/result_1",
    photon_energy: float | str | None = None,
    clen: float | str | None = None,
    mask_path: str | None = None,
    mask_file: str | None = None,
) -> str:
    """CrystFEL geometry text for ``geometry`` reading frames from ``data_path``.

    Args:
        data_path: HDF5 path of the frames (default the geometry's ``data_path``).
        stacked: the data is a ``(N, ss, fs)`` stack: write ``dim0 = %``, ``dim1 = ss``, ``dim2 = fs``.
        peak_list: CXI peak-list group (``peak_list_type = cxi``); None writes neither line.
        photon_energy: eV or an HDF5 path; default the geometry's value (a path as it was written).
        clen: metres or an HDF5 path (millimetres there, CrystFEL's rule); default the panels' value.
        mask_path, mask_file: a bad-pixel mask in Cheetah's convention (0 = good), written as
            ``mask0_goodbits = 0x0``, ``mask0_badbits = 0xffff``. Default: the geometry's own mask
            with its ``mask_good``/``mask_bad`` (Cheetah's convention if both are None).
    """
    lines = [f"; CrystFEL geometry written by sfx-cnnhit {__version__}", ""]
    lines += _beam_lines(geometry, photon_energy, clen)
    lines.append("")
    lines.append(f"data = {data_path or geometry.data_path}")
    if stacked:
        lines += ["dim0 = %", "dim1 = ss", "dim2 = fs"]
    else:
        lines += ["dim0 = ss", "dim1 = fs"]
    if peak_list is not None:
        lines += [f"peak_list = {peak_list}", "peak_list_type = cxi"]
    lines += _mask_lines(geometry, mask_path, mask_file)
    lines.append("")
    for p in geometry.panels:
        lines += [f"{p.name}/{key} = {value}" for key, value in _panel_rows(p)]
        lines.append("")
    for r in geometry.bad_regions:
        lines += [f"{r.name}/{k} = {getattr(r, k)}" for k in ("min_fs", "max_fs", "min_ss", "max_ss")]
        if r.panel is not None:
            lines.append(f"{r.name}/panel = {r.panel}")
        lines.append("")
    for rxy in geometry.bad_regions_xy:
        lines += [f"{rxy.name}/{k} = {_fmt(getattr(rxy, k))}" for k in ("min_x", "max_x", "min_y", "max_y")]
        if rxy.panel is not None:
            lines.append(f"{rxy.name}/panel = {rxy.panel}")
        lines.append("")
    return "\n".join(lines)


def _beam_lines(geometry: DetectorGeometry, photon_energy: float | str | None, clen: float | str | None) -> list[str]:
    """The top-level photon energy, clen (the panels' one), detector shifts and, when a panel has no gain,
    a placeholder ``adu_per_photon`` (see :func:`format_geometry` for the arguments)."""
    panels = geometry.panels
    energy = photon_energy if photon_energy is not None else geometry.photon_energy_ev
    lines = []
    if energy is None:
        lines.append("; photon_energy = <unknown: set it (eV) before running CrystFEL>")
    else:
        lines.append(f"photon_energy = {_fmt(energy) if isinstance(energy, float | int) else energy}")
    clens = [clen] * len(panels) if clen is not None else [p.clen for p in panels]
    if any(c != clens[0] for c in clens):
        raise ConfigError("panels have different clen values; CrystFEL needs one clen (use coffset per panel)")
    c = clens[0]
    lines.append(f"clen = {_fmt(c) + ' m' if isinstance(c, float | int) else c}")
    for key in ("detector_shift_x", "detector_shift_y"):
        shift = getattr(geometry, key)
        if shift is not None:
            lines.append(f"{key} = {shift}")
    if any(p.adu_per_photon is None and p.adu_per_ev is None for p in panels):
        lines.append("adu_per_photon = 1  ; not known to sfx-cnnhit: set the real value")
    return lines


def _mask_lines(geometry: DetectorGeometry, mask_path: str | None, mask_file: str | None) -> list[str]:
    """The ``mask0_*`` lines: ``mask_path``/``mask_file`` in Cheetah's convention, else the geometry's own
    mask with its bits (none: no lines)."""
    mpath: str | None
    if mask_path is not None:  # a mask in Cheetah's convention, such as the one CXIWriter stores
        mpath, mfile, good, badbits = mask_path, mask_file, 0, 0xFFFF
    else:
        mpath, mfile = geometry.mask_path, geometry.mask_file
        cheetah = geometry.mask_good is None and geometry.mask_bad is None
        good, badbits = (0, 0xFFFF) if cheetah else (geometry.mask_good or 0, geometry.mask_bad or 0)
    lines = []
    if mpath is not None:
        lines.append(f"mask0_data = {mpath}")
        if mfile is not None:
            lines.append(f"mask0_file = {mfile}")
        lines += [f"mask0_goodbits = {good:#x}", f"mask0_badbits = {badbits:#x}"]
    return lines


def _panel_rows(p: Panel) -> list[tuple[str, str]]:
    """A panel's ``(key, value)`` lines: extent, corner, directions, resolution, gain, ``max_adu``, extras."""
    rows = [
        ("min_fs", str(p.min_fs)),
        ("max_fs", str(p.max_fs)),
        ("min_ss", str(p.min_ss)),
        ("max_ss", str(p.max_ss)),
        ("corner_x", _fmt(p.corner_x)),
        ("corner_y", _fmt(p.corner_y)),
        ("fs", format_vector(p.fs_vec)),
        ("ss", format_vector(p.ss_vec)),
        ("res", _fmt(p.res)),
        ("coffset", _fmt(p.coffset)),
    ]
    if p.adu_per_ev is not None:
        rows.append(("adu_per_eV", _fmt(p.adu_per_ev)))
    elif p.adu_per_photon is not None:
        rows.append(("adu_per_photon", _fmt(p.adu_per_photon)))
    if p.max_adu is not None:
        rows.append(("max_adu", _fmt(p.max_adu)))
    for key, value in p.extra.items():
        if key in FLAG_KEYS:
            rows += [(key, v) for v in value.split()]
        else:
            rows.append((key, value))
    return rows
