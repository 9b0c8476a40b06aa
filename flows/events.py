"""Prefect events that tie the stages together (deployment triggers match on these names).

`tamer.dataset.committed` is announced by table version, not by what one run added: it fires
whenever `images` advanced past the last version announced (recorded in `announcements` after
the event), so commits of a run killed before its event still trigger the refresh. Two runs
announcing at once may both fire; the refresh they trigger skips finished work.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pyarrow as pa
from prefect.events import emit_event

from storage.pinned import NO_COMMIT, PinnedStore
from storage.shards import ShardStore

DATASET_COMMITTED = "tamer.dataset.committed"  # `images` has a version not announced yet
RETRAIN_REQUESTED = "tamer.retrain.requested"  # the retrain gate found enough new data
TRAINING_COMPLETED = "tamer.training.completed"  # a training run finished and exported


def dataset_resource(root: str) -> dict[str, str]:
    """The Prefect resource that stands for one dataset root."""
    digest = hashlib.sha256(root.encode()).hexdigest()[:12]
    return {"prefect.resource.id": f"tamer.dataset.{digest}", "prefect.resource.name": root,
            "tamer.root": root}


def announce_dataset_committed(root: str) -> dict | None:
    """Emit DATASET_COMMITTED if `images` advanced past the last announced version; its payload
    (counts since that version), or None when there was nothing to announce."""
    store = ShardStore(root)
    version = store.version("images")
    announced = last_announced(store, DATASET_COMMITTED, "images")
    if version <= announced:
        return None
    now = PinnedStore(store, {"images": version})
    total = now.row_count("images")
    added = total - PinnedStore(store, {"images": announced}).row_count("images")
    payload = {"root": root, "fingerprint": now.fingerprint(), "added": added, "total": total,
               "version": version}
    emit_event(event=DATASET_COMMITTED, resource=dataset_resource(root), payload=payload)
    store.write("announcements", pa.Table.from_pylist([{
        "event": DATASET_COMMITTED, "table_name": "images", "version": version,
        "announced_at": dt.datetime.now(dt.UTC)}]))
    return payload


def last_announced(store: ShardStore, event: str, table: str) -> int:
    """The newest version of `table` announced with `event`; NO_COMMIT if none was."""
    return max((row["version"] for row in store.read("announcements").to_pylist()
                if row["event"] == event and row["table_name"] == table), default=NO_COMMIT)


def emit_retrain_requested(root: str, fingerprint: str, added: int, fraction: float,
                           reason: str) -> None:
    emit_event(
        event=RETRAIN_REQUESTED,
        resource=dataset_resource(root),
        payload={"root": root, "fingerprint": fingerprint, "added": added,
                 "fraction": fraction, "reason": reason},
    )


def emit_training_completed(root: str, run_id: str, fingerprint: str, pipeline_uri: str) -> None:
    emit_event(
        event=TRAINING_COMPLETED,
        resource=dataset_resource(root),
        payload={"root": root, "run_id": run_id, "fingerprint": fingerprint,
                 "pipeline_uri": pipeline_uri},
    )
