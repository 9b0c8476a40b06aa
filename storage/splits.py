"""Train / held-out split of every dataset, by subject, recorded once in the `splits` table.

Held-out subjects are never trained on, so evaluation always has subjects the model has not
seen. The unit is the subject (`images.subject`); an image without one is its own subject,
keyed by its id. A subject seen for the first time gets the first rule that applies:
1. `meta`: its side metadata (`images.meta`, e.g. synth ground truth) says `"split": ...`.
2. `hash`: held out when sha256(subject) falls in the lowest `fraction` of `BUCKETS`: a pure
   function of the name, so a subject's split never depends on which others exist.
3. `fallback`: "at least one held out whenever there are two subjects" and "stable as data
   grows" conflict on tiny datasets, where the hash rule may select none. Resolution: when,
   after 1-2, two or more subjects are recorded and none is held out, the new hash-ruled
   subject with the smallest hash is held out. Only new subjects are eligible, so nothing
   recorded (and perhaps trained on) ever changes.
A recorded split is never rewritten: a later `fraction` applies to new subjects only, and an
explicit `meta` split wins even when it holds nothing out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pyarrow as pa

from storage.shards import ShardStore

HELD_OUT, TRAIN = "held_out", "train"
HELD_OUT_FRACTION = 0.25
BUCKETS = 1000


def split_key(subject: str | None, image_id: str) -> str:
    """The split unit of an image: its subject, else the image itself."""
    return subject or image_id


def explicit_split(meta: str | None) -> str | None:
    """`"split"` of an image's JSON side metadata when it names a known split."""
    try:
        value = json.loads(meta) if meta else None
    except ValueError:
        return None
    split = value.get("split") if isinstance(value, dict) else None
    return split if split in (HELD_OUT, TRAIN) else None


def subject_hash(subject: str) -> int:
    return int(hashlib.sha256(subject.encode()).hexdigest(), 16)


def assign(new: dict[str, str | None], recorded: dict[str, str],
           fraction: float) -> dict[str, tuple[str, str]]:
    """Splits of `new` subjects ({name: explicit split or None}) given the `recorded` ones
    ({name: split}): {name: (split, rule)}. Pure; the module docstring states the rules."""
    out = {}
    for name, explicit in new.items():
        if explicit:
            out[name] = (explicit, "meta")
        else:
            held = subject_hash(name) % BUCKETS < fraction * BUCKETS
            out[name] = (HELD_OUT if held else TRAIN, "hash")
    splits = [*recorded.values(), *(split for split, _ in out.values())]
    hash_ruled = [name for name, (_, rule) in out.items() if rule == "hash"]
    if len(splits) >= 2 and HELD_OUT not in splits and hash_ruled:
        out[min(hash_ruled, key=subject_hash)] = (HELD_OUT, "fallback")
    return out


def read_splits(store: ShardStore) -> dict[str, dict]:
    """subject -> its first recorded row (split, rule, fraction, created_at)."""
    first: dict[str, dict] = {}
    for row in store.read("splits").to_pylist():
        first.setdefault(row["subject"], row)
    return first


def record_splits(store: ShardStore, fraction: float = HELD_OUT_FRACTION) -> dict[str, dict]:
    """Record the split of every subject in `images` not recorded yet; returns all of them."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
    recorded = read_splits(store)
    new: dict[str, str | None] = {}
    for row in store.read("images", ["image_id", "subject", "meta"]).to_pylist():
        key = split_key(row["subject"], row["image_id"])
        if key not in recorded:
            new[key] = new.get(key) or explicit_split(row["meta"])
    if not new:
        return recorded
    now = dt.datetime.now(dt.UTC)
    rows = [{"subject": name, "split": split, "rule": rule, "fraction": fraction, "created_at": now}
            for name, (split, rule) in sorted(assign(new, {k: r["split"] for k, r in recorded.items()},
                                                     fraction).items())]
    store.write("splits", pa.Table.from_pylist(rows))
    return read_splits(store)
