"""The `maintain` flow (nightly): compact small files and vacuum what no version within the
retention needs, on every table under the root (storage/delta_maintain.py)."""

from __future__ import annotations

from prefect import flow, task

from storage.delta_maintain import DEFAULT_RETENTION_HOURS, maintain
from storage.shards import ShardStore
from tamer.config import load_config


@task
def compact_and_vacuum(root: str, retention_hours: int) -> dict:
    """Per table: files compacted, files added, files vacuumed."""
    return maintain(ShardStore(root), retention_hours)


@flow(name="maintain", log_prints=True)
def maintain_flow(root: str | None = None, config_file: str | None = None,
                  retention_hours: int = DEFAULT_RETENTION_HOURS) -> dict:
    return compact_and_vacuum(load_config(config_file, root=root).root, retention_hours)
