"""Connect to Ray: the cluster at RAY_ADDRESS when set, else a local Ray started once."""

from __future__ import annotations

import logging
import os

import ray

from tamer.config import RaySettings


def ensure_ray(settings: RaySettings | None = None) -> None:
    """Initialize Ray once per process; a Ray already running (tests, Prefect) is reused."""
    if ray.is_initialized():
        return
    settings = settings or RaySettings()
    address = os.environ.get("RAY_ADDRESS") or settings.address
    common = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(num_cpus=settings.num_cpus, include_dashboard=False, **common)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
