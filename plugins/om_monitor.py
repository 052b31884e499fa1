"""Start OM's monitor with the CNN hit finder available as ``CnnCrystallographyProcessing``.

    python -m sfx_cnnhit.plugins.om_monitor SOURCE [--config monitor.yaml] [--node-pool-size N]
    mpirun -n N python -m sfx_cnnhit.plugins.om_monitor SOURCE --config monitor.yaml

The options are OM's own (``om_monitor.py --help``). The YAML names ``processing_layer:
CnnCrystallographyProcessing`` in its ``om`` group and holds a ``cnn_hit_detection`` group (see
:mod:`sfx_cnnhit.plugins.om`). OM 23.8.3 looks layer classes up by name, first in any importable
top-level ``processing_layer`` module (and then finds nothing), else in ``om.processing_layer``: this
launcher puts our class into the latter and refuses to start when the former exists.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.plugins.om import register_with_om


def check_no_shadowing_layer() -> None:
    """Raise if a top-level ``processing_layer`` module would hide OM's own from OM's loader."""
    spec = importlib.util.find_spec("processing_layer")
    if spec is not None:
        raise ConfigError(
            f"{spec.origin}: a module named processing_layer is importable here; OM 23.8.3 would load no "
            "processing class from it. Rename it or start the monitor from another folder"
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Register ``CnnCrystallographyProcessing`` and run OM's command line (``om.monitor.main``)."""
    try:
        check_no_shadowing_layer()
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    register_with_om()
    from om.monitor import main as om_main

    om_main.main(args=None if argv is None else list(argv), prog_name="python -m sfx_cnnhit.plugins.om_monitor")


if __name__ == "__main__":
    main()
