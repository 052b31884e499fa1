"""Placeholder for commands whose issue has not landed yet: they say so and exit non-zero."""

from __future__ import annotations

import typer

from sfx_cnnhit.cli.common import handle_errors
from sfx_cnnhit.errors import NotAvailableError


def register_pending(app: typer.Typer, name: str, summary: str) -> None:
    """Register ``name`` as a command that reports "not available yet" (no fake behaviour)."""

    @app.command(
        name,
        help=f"{summary} [not available yet]",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    @handle_errors
    def _pending(ctx: typer.Context) -> None:
        raise NotAvailableError(f"'{name}' is not available yet in this version of sfx-cnnhit")
