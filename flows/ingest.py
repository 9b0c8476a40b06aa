"""The `ingest` flow: 1. ingest a source into shards, 2. refresh the catalog, 3. announce every
`images` version not announced yet (this run's, or a killed run's: flows/events.py)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, task

from flows.events import announce_dataset_committed
from storage.catalog import connect
from storage.shards import ShardStore
from tamer.config import TamerConfig, load_config
from tamer.progress import stage_progress
from tasks.ingest import ingest_source


@task(retries=2, retry_delay_seconds=5)
def ingest(source: str, config: TamerConfig) -> dict:
    """Decode and commit everything new; safe to retry because ingest is idempotent."""
    store = ShardStore(config.root, row_group_rows=config.ingest.row_group_rows)
    with stage_progress(f"ingest {source}") as update:
        report = ingest_source(source, store, config.ingest, config.ray,
                               metadata={"config": config.model_dump_json()}, progress=update)
    return asdict(report)


@task
def refresh_catalog(root: str) -> None:
    """Rebuild the DuckDB views so `tamer sql` sees the new shards."""
    connect(ShardStore(root)).close()


@task
def announce(root: str) -> dict | None:
    """Fire `tamer.dataset.committed` for unannounced commits; nothing new stays silent."""
    return announce_dataset_committed(root)


def ingest_stage(source: str, config: TamerConfig) -> dict:
    """The stage's tasks, in the calling flow (`ingest_flow`, or the pipeline's own run)."""
    report = ingest(source, config)
    refresh_catalog(config.root)
    return report | {"announced": announce(config.root)}


@flow(name="ingest", log_prints=True)
def ingest_flow(source: str, root: str | None = None, config_file: str | None = None,
                overrides: dict[str, Any] | None = None) -> dict:
    """`overrides` are dotted keys ({"ingest.executor": "local"}), as every flow takes them."""
    return ingest_stage(source, load_config(config_file, root=root, **(overrides or {})))
