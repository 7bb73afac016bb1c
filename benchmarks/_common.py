"""What the benchmark scripts share."""

from __future__ import annotations

import os
import platform


def machine_description() -> str:
    """One line naming the platform, CPUs, Python, torch and the current load."""
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.platform()}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
            f"Python {platform.python_version()}, torch {torch.__version__}, load average at start {load:.1f}")
