"""Machine and library description recorded in every benchmark's JSON output."""

import datetime
import os
import platform
import sys
from importlib import metadata
from typing import Any

import jax


def load_average() -> float | None:
    """One-minute load average, or None where the platform has none.

    Other work on the machine slows every timing, so each result records it.
    """
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def version(dist: str) -> str | None:
    """Installed version of a distribution, or None when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info(*dists: str) -> dict[str, Any]:
    """Hardware, platform, jax configuration and the versions of ``dists`` (pip names)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = None
    return {
        "timestamp_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "load_average_1min": load_average(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "jax_enable_x64": bool(jax.config.read("jax_enable_x64")),
        "versions": {d: version(d) for d in ("jax", "jaxlib", "numpy", "jcausal", *dists)},
        "env": {
            k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "XLA_FLAGS", "OMP_NUM_THREADS")
        },
    }
