"""The main job, `pipeline`: each stage is its own flow, run in order, each incremental.

1. sample data (synth) when no source is given   2. ingest
Later stages (caption, embed/index/pairs, train, evaluate, report) join this recipe.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from flows.ingest import ingest_flow
from storage.catalog import CATALOG_FILE
from storage.fs import open_location
from tamer.config import load_config


@task
def synthesize_sample(root: str, config_file: str | None) -> str:
    """Render the embedded sample dataset next to the shards (no-op when already there)."""
    from tamer.synth import generate

    config = load_config(config_file, root=root)
    location = open_location(config.root)
    out = Path(location.join("sources", "synth")) if location.is_local else Path("tamer-synth")
    s = config.synth
    generate(out, n_objects=s.objects, views=s.views, size=s.size, seed=s.seed,
             held_out_fraction=s.held_out_fraction, workers=1, progress=True)
    return str(out)


@flow(name="pipeline", log_prints=True)
def pipeline_flow(data: str | None = None, root: str | None = None,
                  config_file: str | None = None, profile: str | None = None) -> dict:
    config = load_config(config_file, root=root, profile=profile)
    source = data or synthesize_sample(config.root, config_file)
    report = ingest_flow(source, root=config.root, config_file=config_file)
    location = open_location(config.root)
    catalog = location.join(CATALOG_FILE) if location.is_local else "(in memory: remote root)"
    return {"ingest": report, "locations": {"dataset root": config.root, "catalog": catalog}}
