"""Prefect events that tie the stages together (deployment triggers match on these names)."""

from __future__ import annotations

import hashlib

from prefect.events import emit_event

DATASET_COMMITTED = "tamer.dataset.committed"  # ingest added images
RETRAIN_REQUESTED = "tamer.retrain.requested"  # the retrain gate found enough new data
TRAINING_COMPLETED = "tamer.training.completed"  # a training run finished and exported


def dataset_resource(root: str) -> dict[str, str]:
    """The Prefect resource that stands for one dataset root."""
    digest = hashlib.sha256(root.encode()).hexdigest()[:12]
    return {"prefect.resource.id": f"tamer.dataset.{digest}", "prefect.resource.name": root,
            "tamer.root": root}


def emit_dataset_committed(root: str, fingerprint: str, added: int, total: int) -> None:
    emit_event(
        event=DATASET_COMMITTED,
        resource=dataset_resource(root),
        payload={"root": root, "fingerprint": fingerprint, "added": added, "total": total},
    )


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
