"""The machine a benchmark ran on: CPU, cores, torch's threads and device, the reference tools, load."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from .process import usable_cores


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """Cores, CPU, torch (version, threads, device) and the reference tools present."""
    import torch

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "ondamonitor": _version("ondamonitor"),
        "load_average": list(os.getloadavg()),
    }
