"""`sfx-cnnhit simulate`: serial-crystallography frames with ground truth, written as reduced CXI."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import h5py
import numpy as np
import typer

from sfx_cnnhit.cli.common import console, handle_errors, progress_bar
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.simulate import CLASS_NAMES, DETECTORS, NAMED_CONFIGS, SimulationConfig
from sfx_cnnhit.simulate.cells import CELLS
from sfx_cnnhit.simulate.output import simulate_to_file


def parse_range(text: str, option: str) -> tuple[float, float]:
    """``"9500"`` -> (9500, 9500); ``"9000,10000"`` -> (9000, 10000)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{option} must be a number or 'low,high', got {text!r}") from None
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) == 2:
        return (values[0], values[1])
    raise ConfigError(f"{option} must be a number or 'low,high', got {text!r}")


def parse_fractions(text: str) -> list[float]:
    """Five comma-separated class shares."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--class-fractions must be {len(CLASS_NAMES)} numbers, got {text!r}") from None
    if len(values) != len(CLASS_NAMES):
        raise ConfigError(f"--class-fractions needs {len(CLASS_NAMES)} numbers ({','.join(CLASS_NAMES)}), got {text!r}")
    return values


def _config_values(path: Path) -> dict[str, Any]:
    """The sections of a JSON/YAML simulation config; ``extends: NAME`` starts from a shipped config's
    sections and overrides them key by key."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the simulation config ({err.strerror})") from None
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text)
    except (ValueError, ImportError) as err:
        raise ConfigError(f"{path}: not a valid simulation config ({err})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the simulation config must be a mapping of sections")
    base = values.pop("extends", None)
    if base is None:
        return values
    if base not in NAMED_CONFIGS:
        raise ConfigError(f"{path}: extends {base!r}, not a shipped config ({', '.join(NAMED_CONFIGS)})")
    merged = _config_values(NAMED_CONFIGS[base])
    for section, keys in values.items():
        merged[section] = {**merged.get(section, {}), **keys} if isinstance(keys, dict) else keys
    return merged


def load_config(path: Path | None) -> SimulationConfig:
    """A config from a JSON or YAML file holding :meth:`SimulationConfig.to_dict`'s nested layout, or a
    shipped config by name (:data:`sfx_cnnhit.simulate.NAMED_CONFIGS`, e.g. ``randomised``)."""
    if path is None:
        return SimulationConfig()
    path = NAMED_CONFIGS.get(str(path), path)
    values = _config_values(path)
    try:
        return SimulationConfig.from_dict(values)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def build_config(
    base: SimulationConfig,
    *,
    detector: str | None,
    size: int | None,
    photon_energy: str | None,
    clen: str | None,
    cells: Sequence[str] | None,
) -> SimulationConfig:
    """Apply the command-line overrides to ``base``."""
    overrides: dict[str, Any] = {}
    if detector is not None:
        overrides["detector__name"] = detector
    if size is not None:
        overrides["detector__size"] = size
    if photon_energy is not None:
        overrides["beam__photon_energy_ev"] = parse_range(photon_energy, "--photon-energy")
    if clen is not None:
        overrides["detector__clen_m"] = parse_range(clen, "--clen")
    if cells:
        overrides["crystal__cells"] = tuple(cells)
    return base.with_overrides(**overrides) if overrides else base


def detector_config(spec: str, base: SimulationConfig | None = None) -> SimulationConfig:
    """``base`` (default: the default simulation) on the detector ``NAME`` or ``NAME:SIZE`` (``simulate -d NAME
    --size SIZE``)."""
    name, _, size = spec.partition(":")
    try:
        side = int(size) if size else None
    except ValueError:
        raise ConfigError(f"detector {spec!r}: the size after ':' must be an integer") from None
    return build_config(
        base or SimulationConfig(), detector=name, size=side, photon_energy=None, clen=None, cells=None
    )


Output = Annotated[Path, typer.Argument(help="Output reduced-CXI file (ground truth under /truth).")]
NFrames = Annotated[int, typer.Option("--n-frames", "-n", min=1, help="Number of frames.")]
Seed = Annotated[int, typer.Option("--seed", "-s", min=0, help="Base random seed.")]
Detector = Annotated[
    str | None, typer.Option("--detector", "-d", help=f"Layout: {', '.join(DETECTORS)} (default square512).")
]
Size = Annotated[
    int | None,
    typer.Option("--size", help="Square side (square512, rayonix) or nearest Pilatus/Eiger model width."),
]
HitRate = Annotated[
    float | None, typer.Option("--hit-rate", help="Share of hits (weak+good+strong); misses split evenly.")
]
ClassFractions = Annotated[
    str | None, typer.Option("--class-fractions", help="Five shares, e.g. 0.2,0.2,0.2,0.2,0.2 (default).")
]
Split = Annotated[str, typer.Option("--split", help="train, val or test: splits never share random streams.")]
PhotonEnergy = Annotated[
    str | None, typer.Option("--photon-energy", help="Photon energy in eV, or a range 'low,high'.")
]
Clen = Annotated[str | None, typer.Option("--clen", help="Detector distance in m, or a range 'low,high'.")]
Cell = Annotated[list[str] | None, typer.Option("--cell", help=f"Unit cell(s), repeatable: {', '.join(CELLS)}.")]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="JSON/YAML file with simulation settings (sections of SimulationConfig), or the name of a "
        "shipped one: randomised (the wide domain-randomised training distribution) or compact (randomised with "
        "the one-to-four-pixel spots of stills from large mosaic blocks).",
    ),
]
Workers = Annotated[
    int, typer.Option("--workers", "-j", min=1, help="Simulator processes (results do not depend on it).")
]
Chunk = Annotated[int, typer.Option("--chunk", min=1, help="Frames simulated and written per step.")]
Compression = Annotated[str, typer.Option("--compression", help="gzip, bitshuffle-lz4, zstd or none.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue an interrupted OUTPUT.inprogress.")]


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    @handle_errors
    def simulate(
        output: Output,
        n_frames: NFrames,
        seed: Seed,
        detector: Detector = None,
        size: Size = None,
        hit_rate: HitRate = None,
        class_fractions: ClassFractions = None,
        split: Split = "train",
        photon_energy: PhotonEnergy = None,
        clen: Clen = None,
        cell: Cell = None,
        config: ConfigFile = None,
        workers: Workers = 1,
        chunk: Chunk = 64,
        compression: Compression = "gzip",
        resume: Resume = False,
    ) -> None:
        """Simulate serial-crystallography frames (DiffraNet's five classes) with ground truth."""
        cells = [c.strip() for item in cell or () for c in item.split(",") if c.strip()]
        cfg = build_config(
            load_config(config), detector=detector, size=size, photon_energy=photon_energy, clen=clen, cells=cells
        )
        fractions = parse_fractions(class_fractions) if class_fractions is not None else None
        started = time.perf_counter()
        with progress_bar() as bar:
            task = bar.add_task("simulating", total=n_frames, rate="")

            def report(done: int, total: int) -> None:
                elapsed = time.perf_counter() - started
                bar.update(task, completed=done, rate=f"{done / elapsed:.1f} frames/s" if elapsed > 0 and done else "")

            path = simulate_to_file(
                output,
                n_frames,
                seed,
                cfg,
                class_fractions=fractions,
                hit_rate=hit_rate,
                split=split,
                chunk=chunk,
                progress=report,
                workers=workers,
                compression=compression,
                resume=resume,
            )
        elapsed = time.perf_counter() - started
        with h5py.File(path, "r") as f:
            counts = np.bincount(f["/truth/label"][()], minlength=len(CLASS_NAMES))
            shape = f["/entry_1/data_1/data"].shape
        summary = ", ".join(f"{name} {n}" for name, n in zip(CLASS_NAMES, counts, strict=True))
        console.print(f"wrote {path} ({shape[0]} frames of {shape[1]}x{shape[2]}; {summary}) in {elapsed:.1f} s")
        console.print(f"geometry: {path.with_suffix('.geom')}")
