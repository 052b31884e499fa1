"""Options every command that reads frames shares, and the one place that opens them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sfx_cnnhit.io.geometry import DetectorGeometry
from sfx_cnnhit.io.masks import parse_mask_argument
from sfx_cnnhit.io.sources import FrameSource, open_frames

Inputs = Annotated[list[Path], typer.Argument(help="CXI/HDF5 files, CBF/SMV/EDF/TIFF images or .lst lists.")]
DataPath = Annotated[str | None, typer.Option("--data-path", help="HDF5 dataset of the frames (may use CrystFEL's %).")]
MaskPath = Annotated[
    str | None, typer.Option("--mask-path", help="Mask: a file, file.h5:/dataset, or /dataset in each input.")
]
MaskGoodbits = Annotated[
    str | None, typer.Option("--mask-goodbits", help="Read masks with CrystFEL good bits, e.g. 0x1.")
]
MaskBadbits = Annotated[
    str | None, typer.Option("--mask-badbits", help="Read masks with CrystFEL bad bits, e.g. 0xffff.")
]
GeometryFile = Annotated[Path | None, typer.Option("--geometry", "-g", help="CrystFEL geometry file.")]
OutDir = Annotated[Path, typer.Option("--output", "-o", help="Output folder (created if missing).")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Frames per batch (bounds memory).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace a completed run in the output folder.")]


def parse_bits(value: str | None) -> int | None:
    """An integer option given in any base (``0x1``, ``1``)."""
    if value is None:
        return None
    try:
        return int(value, 0)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an integer such as 0x0001") from None


def open_inputs(
    inputs: list[Path],
    *,
    data_path: str | None = None,
    mask_path: str | None = None,
    mask_goodbits: str | None = None,
    mask_badbits: str | None = None,
    geometry: Path | None = None,
) -> FrameSource:
    """Open the inputs of a command with its shared options."""
    mask_file, mask_dataset = parse_mask_argument(mask_path) if mask_path else (None, None)
    return open_frames(
        [str(p) for p in inputs],
        data_path=data_path,
        mask_path=mask_dataset,
        mask_file=mask_file,
        mask_goodbits=parse_bits(mask_goodbits),
        mask_badbits=parse_bits(mask_badbits),
        geometry=DetectorGeometry.from_file(geometry) if geometry else None,
    )
