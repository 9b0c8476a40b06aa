"""Prefect events that tie the stages together (deployment triggers match on these names)."""

from __future__ import annotations

import hashlib

from prefect.events import emit_event

DATASET_COMMITTED = "tamer.dataset.committed"


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
