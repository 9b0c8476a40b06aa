"""`tamer.dataset.committed` fires for every `images` version not announced yet, even when the
run that committed it died before its event (events read back from the real Prefect server)."""

from __future__ import annotations

import time

from storage.shards import ShardStore
from tamer.config import IngestSettings
from tamer.synth import generate
from tasks.ingest import ingest_source


def _events(root: str) -> list:
    """The committed events the server stored for this root's resource."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    from flows.events import DATASET_COMMITTED, dataset_resource

    resource = dataset_resource(root)["prefect.resource.id"]
    with get_client(sync_client=True) as client:
        return client.read_events(EventFilter(
            event=EventNameFilter(name=[DATASET_COMMITTED]),
            resource=EventResourceFilter(id=[resource])), limit=50).events


def _wait_for_events(root: str, count: int, deadline_s: float = 60) -> list:
    """Events are stored asynchronously: poll until `count` arrived (or the deadline)."""
    end = time.monotonic() + deadline_s
    events = _events(root)
    while len(events) < count and time.monotonic() < end:
        time.sleep(0.5)
        events = _events(root)
    return events


def test_a_commit_whose_event_was_lost_is_announced_by_the_next_run_once(tmp_path, prefect_server):
    from flows.events import DATASET_COMMITTED, last_announced
    from flows.ingest import ingest_flow

    generate(tmp_path / "src", n_objects=2, views=2, size=32, seed=0)
    root = str(tmp_path / "data")
    store = ShardStore(root)
    # a run killed between its commit and its event: shards committed, nothing announced
    ingest_source(str(tmp_path / "src"), store, IngestSettings(executor="local"))
    assert store.row_count("images") == 4 and _events(root) == []

    config = tmp_path / "local.yaml"
    config.write_text("ingest:\n  executor: local\n")
    first = ingest_flow(str(tmp_path / "src"), root=root, config_file=str(config))
    assert first["ingested"] == 0  # nothing new this run, yet the lost event is sent
    assert first["announced"] == {"root": root, "fingerprint": store.fingerprint(), "added": 4,
                                  "total": 4, "version": store.version("images")}
    assert last_announced(store, DATASET_COMMITTED, "images") == store.version("images")

    second = ingest_flow(str(tmp_path / "src"), root=root, config_file=str(config))
    assert second["ingested"] == 0 and second["announced"] is None
    [event] = _wait_for_events(root, 1)
    assert event.payload["added"] == 4 and event.payload["version"] == store.version("images")

    generate(tmp_path / "more", n_objects=1, views=2, size=32, seed=5)
    third = ingest_flow(str(tmp_path / "more"), root=root, config_file=str(config))
    assert third["ingested"] == 2 and third["announced"]["added"] == 2
    assert [e.payload["total"] for e in _wait_for_events(root, 2)] in ([6, 4], [4, 6])
