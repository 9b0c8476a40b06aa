"""Shared bits of the benchmark scripts: timing, the machine's description, JSON results."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def synth_workdir(name: str, images: int, size: int, workers: int = 1) -> Path:
    """A fresh temporary folder whose `src/` holds about `images` synth renders (8 views)."""
    from tamer.synth import generate

    work = Path(tempfile.mkdtemp(prefix=f"tamer-bench-{name}-"))
    views = 8
    generate(work / "src", n_objects=max(1, images // views), views=views, size=size,
             workers=workers)
    return work


def machine() -> dict[str, Any]:
    import torch

    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(),
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **result}
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {path}")
    return path
