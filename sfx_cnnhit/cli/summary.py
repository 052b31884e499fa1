"""How a finished reduction is shown to people."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from sfx_cnnhit.pipeline.reduce import ReduceSummary


def print_summary(summary: ReduceSummary, console: Console) -> None:
    """A short table of what a run did and where its outputs are."""
    table = Table(title=f"{summary.method}: done", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    reduction = f"{summary.data_reduction_factor:.1f}x" if summary.data_reduction_factor else "no hits"
    for key, value in (
        ("frames read", str(summary.frames_read)),
        ("hits", str(summary.hits)),
        ("hit rate", f"{100 * summary.hit_rate:.2f} %"),
        ("data reduction", reduction),
        ("speed", f"{summary.frames_per_second:.1f} frames/s"),
    ):
        table.add_row(key, value)
    for role, path in summary.outputs.items():
        table.add_row(role, path)
    console.print(table)
    if summary.unjudged_frames:
        from sfx_cnnhit.models.guards import FLAG_HELP

        counts = ", ".join(f"{n} {flag} ({FLAG_HELP.get(flag, flag)})" for flag, n in summary.unjudged_frames.items())
        console.print(f"[yellow]warning:[/] frames the model could not judge: {counts}; "
                      f"the 'flag' column of {summary.outputs.get('csv', 'frames.csv')} lists them")
    if summary.failed_frames:
        first = summary.failed_frames[0]
        console.print(f"[red]error:[/] {len(summary.failed_frames)} frames could not be read and were skipped "
                      f"(first: {first['event_id']}: {first['reason']}); summary.json's failed_frames and the "
                      f"'flag' column of {summary.outputs.get('csv', 'frames.csv')} list them; exit status 3")
    if not summary.hits:
        return
    out = summary.outputs
    if "crystfel_recipe" in out:
        console.print(f"Index the hits with CrystFEL:  {out['crystfel_recipe']}  (indexamajig on {out['lst']})")
    for role, path in out.items():
        if role.startswith("geometry_"):
            console.print(f"Heat maps ({role[9:]}):  open {out['cxi']} with the geometry {path} in CrystFEL's viewer")
    console.print(f"Browse everything:  silx view {out['cxi']}")
