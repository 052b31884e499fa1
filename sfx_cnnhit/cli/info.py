"""`sfx-cnnhit info`: what the readers find in input files (a table for people, ``--json`` for machines)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sfx_cnnhit.cli.common import handle_errors
from sfx_cnnhit.cli.inputs import InputOptions, Inputs, with_option_groups


def _bad_pixel_rules(mask: dict[str, Any]) -> list[str]:
    rules = ["NaN/inf"]
    if mask["floor"] is not None:
        rules.append(f"< {mask['floor']:g}")
    if mask["saturation"] is not None:
        sat = mask["saturation"]
        rules.append(f">= {sat:g}" if isinstance(sat, float) else f">= {sat}")
    return rules + list(mask["flags"])


def _table(entry: dict[str, Any]) -> Table:
    table = Table(title=entry["path"], show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    mask = entry["mask"]
    rows = [
        ("format", entry["format"]),
        ("data path", entry["data_path"] or "-"),
        ("layout", entry["layout"]),
        (
            "frames",
            f"{entry['n_frames']}"
            + (f" of {entry['n_frames_in_file']}" if entry["n_frames"] != entry["n_frames_in_file"] else ""),
        ),
        ("frame shape (ss, fs)", " x ".join(map(str, entry["frame_shape"]))),
        ("stored shape", " x ".join(map(str, entry["stored_frame_shape"]))),
        ("dtype", entry["dtype"]),
        ("compression", ", ".join(entry["compression"]) or "none"),
        ("ASIC layout", json.dumps(entry["layout_info"]) if entry["layout_info"] else "unknown"),
        (
            "mask",
            f"{mask['source']} ({'per frame, ' if mask['per_frame'] else ''}{mask['convention']})"
            if mask["source"]
            else "none stored",
        ),
        ("static bad pixels", str(mask["static_bad_pixels"])),
        ("bad if", ", ".join(_bad_pixel_rules(mask))),
        (
            "event ids",
            f"{entry['event_ids']['first']} ... {entry['event_ids']['last']} (from {entry['event_ids']['source']})",
        ),
    ]
    for key, meta in entry["metadata"].items():
        rows.append((key, f"{meta['first']} (from {meta['source']})"))
    if not entry["metadata"]:
        rows.append(("metadata", "no photon energy or detector distance found"))
    for key, value in rows:
        table.add_row(key, str(value))
    return table


def register(app: typer.Typer) -> None:
    @app.command("info")
    @handle_errors
    @with_option_groups
    def info(
        files: Inputs,
        read: InputOptions = InputOptions(),
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    ) -> None:
        """Describe frames, datasets, masks, event ids and metadata in input files."""
        entries: list[dict[str, Any]] = []
        for file in files:  # one source per argument: unrelated files may differ in shape
            source = read.open([file])
            entries += source.describe()
        summary = {"n_frames": sum(e["n_frames"] for e in entries), "files": entries}
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
            return
        out = Console()
        for entry in entries:
            out.print(_table(entry))
        out.print(f"[bold]{summary['n_frames']}[/bold] frames in {len(entries)} file(s)")
