"""What the main job finds already done, and its sample data: the pipeline flow asks these
before running a stage, so a second run with nothing new redoes no stage's work."""

from __future__ import annotations

import os
from pathlib import Path

from storage.fs import open_location
from storage.shards import ShardStore
from tamer.config import SynthSettings, config_hash
from tasks import evaluate as protocol
from tasks.runs import COMPLETED, list_runs


def synthesize_sample(root: str, settings: SynthSettings) -> str:
    """Render the embedded sample dataset (no-op when already there); returns its folder.

    A local root keeps it next to the shards (`<root>/sources/synth`). A remote root cannot
    hold a folder ingest reads, so the sample goes to the local synth cache,
    `$TAMER_SYNTH_CACHE` (default `~/.cache/tamer/synth`), one folder per synth settings:
    never into the working folder.
    """
    from tamer.synth import generate

    location = open_location(root)
    if location.is_local:
        out = Path(location.join("sources", "synth"))
    else:
        cache = Path(os.environ.get("TAMER_SYNTH_CACHE", "~/.cache/tamer/synth")).expanduser()
        out = cache / config_hash(settings)
    generate(out, n_objects=settings.objects, views=settings.views, size=settings.size,
             seed=settings.seed, held_out_fraction=settings.held_out_fraction, workers=1,
             progress=True)
    return str(out)


def trained_run(store: ShardStore) -> dict | None:
    """The completed run that trained on the current dataset version, if there is one."""
    fingerprint = store.fingerprint()
    return next((run for run in list_runs(store) if run["status"] == COMPLETED
                 and run["dataset_fingerprint"] == fingerprint and run["pipeline_uri"]), None)


def evaluated_report(store: ShardStore, run_id: str) -> str | None:
    """The report of an evaluation already made of this training run, if there is one."""
    rows = store.read("eval_results", ["eval_run_id", "model_run_id", "created_at"]).to_pylist()
    done = sorted((r for r in rows if r["model_run_id"] == run_id), key=lambda r: r["created_at"])
    return f"{protocol.report_dir(store, done[-1]['eval_run_id'])}/index.html" if done else None
