"""Near-duplicates, identity groups and cross-reference pairs, from the image embeddings.

- `near_duplicate_pairs`: every pair above a cosine threshold (faiss range search).
- `propose_groups`: identity groups for unlabeled images: connected components of the
  mutual-kNN graph whose edges are above a threshold; small components stay ungrouped. They
  cluster the identity vectors (the `dino` role's), near-duplicates the CLIP image vectors:
  a near-duplicate is the same object in the same scene, an identity the object in any.
- `grouping_quality`: purity and pairwise recall of a grouping against true identities.
- `sample_pairs`: (subject, reference, target) with reference != target, capped per subject,
  a pure function of (seed, subject, members).
The `record_*` functions store them; groups and pairs are snapshots keyed by a hash of their
inputs and settings, so a re-run on unchanged data adds nothing (the newest snapshot:
`storage.queries.latest_snapshot`). `leaked_images` reads them back
to keep copies of held-out objects out of training.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import posixpath
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from model.batching import cross_reference_pairs
from model.embedding import model_id as clip_model_id
from model.profiles import load_profile
from storage.queries import latest_snapshot
from storage.shards import ShardStore
from tamer.config import EmbedSettings
from tasks.embed import IDENTITY, IMAGE, current_vectors, identity_model_id, image_config_hash


# ---- pure functions ------------------------------------------------------------------------
def near_duplicate_pairs(vectors: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """(i, j, cosine) with i < j for unit vectors whose cosine is >= threshold."""
    import faiss

    if len(vectors) < 2:
        return []
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    limits, scores, rows = index.range_search(vectors, threshold)
    found = []
    for i in range(len(vectors)):
        for j, score in zip(rows[limits[i]:limits[i + 1]], scores[limits[i]:limits[i + 1]]):
            if i < j:
                found.append((i, int(j), float(score)))
    return found


def augmented(vectors: np.ndarray, count: int) -> np.ndarray:
    """Each unit vector replaced by the unit mean of its `count` nearest (itself first):
    database-side augmentation (Arandjelovic & Zisserman 2012). Views of one object that are
    each other's neighbours move toward their common centre, so the edges between them rise
    above those to other objects; on the synth dino's vectors, with 4 and the threshold chosen
    on other renders, pair recall went from 0.56 to 0.88 (README, "Recipe v11")."""
    import faiss

    if count <= 1 or len(vectors) == 0:
        return vectors
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    _, rows = index.search(vectors, min(count, len(vectors)))
    means = vectors[rows].mean(axis=1)
    return (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)


def propose_groups(vectors: np.ndarray, threshold: float, neighbors: int,
                   min_size: int, augment: int = 1) -> np.ndarray:
    """A group label per row (-1: ungrouped), from the mutual-kNN graph above `threshold`, on
    the vectors `augmented` over `augment` neighbours (1: as they are)."""
    import faiss

    count = len(vectors)
    if count == 0:
        return np.zeros(0, np.int64)
    vectors = augmented(vectors, augment)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    scores, rows = index.search(vectors, min(neighbors + 1, count))  # +1: itself
    knn = [{int(j) for j, s in zip(rows[i], scores[i]) if j != i and j >= 0 and s >= threshold}
           for i in range(count)]
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(count):
        for j in knn[i]:
            if i in knn[j]:  # mutual: hubs cannot chain unrelated identities together
                parent[root(i)] = root(j)
    components: dict[int, list[int]] = defaultdict(list)
    for i in range(count):
        components[root(i)].append(i)
    labels = np.full(count, -1, np.int64)
    kept = sorted((m for m in components.values() if len(m) >= min_size), key=lambda m: m[0])
    for label, members in enumerate(kept):
        labels[members] = label
    return labels


def grouping_quality(predicted: Sequence[object], truth: Sequence[object]) -> dict:
    """Purity (grouped images in their group's majority identity) and pairwise recall.

    `predicted` holds a group per image (None or -1: ungrouped), `truth` the identity.
    Recall is the share of same-identity image pairs that end up in one predicted group.
    """
    grouped = [(p, t) for p, t in zip(predicted, truth) if p is not None and p != -1]
    by_group: dict[object, Counter] = defaultdict(Counter)
    for p, t in grouped:
        by_group[p][t] += 1
    majority = sum(c.most_common(1)[0][1] for c in by_group.values())
    same_truth = Counter(truth)
    true_pairs = sum(n * (n - 1) // 2 for n in same_truth.values())
    found_pairs = sum(n * (n - 1) // 2 for c in by_group.values() for n in c.values())
    return {"purity": majority / len(grouped) if grouped else 0.0,
            "recall": found_pairs / true_pairs if true_pairs else 0.0,
            "groups": len(by_group), "identities": len(same_truth),
            "grouped_fraction": len(grouped) / len(truth) if len(truth) else 0.0}


def sample_pairs(groups: dict[str, list[str]], cap: int, seed: int) -> list[tuple[str, str, str]]:
    """(subject, reference, target), reference != target, at most `cap` per subject."""
    return [(subject, reference, target) for subject in sorted(groups)
            for reference, target in cross_reference_pairs(
                groups[subject], cap, np.random.default_rng([seed, int(_digest(subject), 16)]))]


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


# ---- recording -------------------------------------------------------------------------------
def _image_vectors(store: ShardStore, profile_name: str, settings: EmbedSettings,
                   kind: str = IMAGE) -> tuple[list[str], np.ndarray, str]:
    """(image ids, unit vectors, their config hash) of `kind`: CLIP's (IMAGE) or the dino
    role's (IDENTITY; CLIP's where the profile or the run has no identity vectors)."""
    profile = load_profile(profile_name)
    model = identity_model_id(profile, settings) if kind == IDENTITY else None
    ids, vectors = current_vectors(store, IDENTITY, model) if model else current_vectors(store, IMAGE, clip_model_id(profile))
    return ids, vectors, image_config_hash(profile, settings)


def record_near_duplicates(store: ShardStore, profile_name: str,
                           settings: EmbedSettings | None = None) -> dict:
    """Add near-duplicate pairs not recorded yet; returns new and total counts."""
    settings = settings or EmbedSettings()
    threshold = load_profile(profile_name).own("near_duplicate_threshold", settings.near_duplicate_threshold)
    ids, vectors, image_hash = _image_vectors(store, profile_name, settings)
    known = {(r["image_id"], r["other_id"], r["config_hash"]) for r in
             store.read("near_duplicates", ["image_id", "other_id", "config_hash"]).to_pylist()}
    now = dt.datetime.now(dt.UTC)
    rows = []
    for i, j, score in near_duplicate_pairs(vectors, threshold):
        a, b = sorted((ids[i], ids[j]))
        if (a, b, image_hash) not in known:
            rows.append({"image_id": a, "other_id": b, "cosine": score, "found_at": now,
                         "threshold": threshold,
                         "config_hash": image_hash})
    store.write("near_duplicates", pa.Table.from_pylist(rows))
    return {"new": len(rows), "total": store.row_count("near_duplicates")}


def record_groups(store: ShardStore, profile_name: str,
                  settings: EmbedSettings | None = None) -> dict:
    """Subjects from labels where the source has them; kNN proposals for the rest."""
    settings = settings or EmbedSettings()
    ids, vectors, image_hash = _image_vectors(store, profile_name, settings, IDENTITY)
    threshold = group_threshold(profile_name, settings)
    snapshot = _digest(store.fingerprint(("images", "embeddings")), image_hash,
                       threshold, settings.group_neighbors, settings.group_min_size, settings.group_augment)
    current = latest_snapshot(store, "subject_groups", ["group_id", "origin", "snapshot"])
    if current and current[0]["snapshot"] == snapshot:
        return _group_summary(current, skipped=True)
    subjects = {r["image_id"]: r["subject"] for r in
                store.read("images", ["image_id", "subject"]).to_pylist()}
    unlabeled = [i for i, image_id in enumerate(ids) if not subjects.get(image_id)]
    labels = propose_groups(vectors[unlabeled], threshold, settings.group_neighbors, settings.group_min_size,
                            settings.group_augment)
    members: dict[int, list[str]] = defaultdict(list)
    for row, label in zip(unlabeled, labels):
        members[int(label)].append(ids[row])
    proposed = {image_id: f"knn-{_digest(*sorted(group))[:10]}"
                for label, group in members.items() if label >= 0 for image_id in group}
    now = dt.datetime.now(dt.UTC)
    rows = [{"image_id": image_id, "snapshot": snapshot, "created_at": now,
             **({"group_id": subjects[image_id], "origin": "label"} if subjects.get(image_id)
                else {"group_id": proposed.get(image_id),
                      "origin": "knn" if image_id in proposed else "none"})}
            for image_id in ids]
    store.write("subject_groups", pa.Table.from_pylist(rows))
    return _group_summary(rows, skipped=False)


def group_threshold(profile_name: str, settings: EmbedSettings) -> float:
    """The run's identity-edge cosine, else the profile's (a property of its dino role)."""
    return load_profile(profile_name).own("group_threshold", settings.group_threshold)


def _group_summary(rows: list[dict], skipped: bool) -> dict:
    origins = Counter(r["origin"] for r in rows)
    return {"images": len(rows), "groups": len({r["group_id"] for r in rows if r["group_id"]}),
            "labeled": origins["label"], "proposed": origins["knn"],
            "ungrouped": origins["none"], "skipped": skipped}


def evaluate_grouping(store: ShardStore, profile_name: str,
                      settings: EmbedSettings | None = None) -> dict | None:
    """Cluster every image as if unlabeled and score it against ground-truth identities.

    Ground truth is `meta.identity` (synth); None when no image carries one.
    """
    settings = settings or EmbedSettings()
    ids, vectors, _ = _image_vectors(store, profile_name, settings, IDENTITY)
    truth = {}
    for row in store.read("images", ["image_id", "meta"]).to_pylist():
        identity = json.loads(row["meta"]).get("identity") if row["meta"] else None
        if identity is not None:
            truth[row["image_id"]] = json.dumps(identity, sort_keys=True)
    rows = [i for i, image_id in enumerate(ids) if image_id in truth]
    if not rows:
        return None
    labels = propose_groups(vectors[rows], group_threshold(profile_name, settings), settings.group_neighbors,
                            settings.group_min_size, settings.group_augment)
    return grouping_quality(labels.tolist(), [truth[ids[i]] for i in rows])


def record_pairs(store: ShardStore, settings: EmbedSettings | None = None) -> dict:
    """Cross-reference pairs from the newest groups snapshot; a no-op when unchanged."""
    settings = settings or EmbedSettings()
    groups_rows = latest_snapshot(store, "subject_groups", ["image_id", "group_id", "snapshot"])
    snapshot = _digest(groups_rows[0]["snapshot"] if groups_rows else "-",
                       settings.pairs_per_subject, settings.seed)
    current = latest_snapshot(store, "pairs", ["subject", "snapshot"])
    if current and current[0]["snapshot"] == snapshot:
        return _pairs_summary(current, skipped=True)
    groups: dict[str, list[str]] = defaultdict(list)
    for row in groups_rows:
        if row["group_id"]:
            groups[row["group_id"]].append(row["image_id"])
    now = dt.datetime.now(dt.UTC)
    rows = [{"subject": s, "reference_id": r, "target_id": t, "snapshot": snapshot,
             "created_at": now}
            for s, r, t in sample_pairs(groups, settings.pairs_per_subject, settings.seed)]
    store.write("pairs", pa.Table.from_pylist(rows))
    return _pairs_summary(rows, skipped=False)


def _pairs_summary(rows: list[dict], skipped: bool) -> dict:
    return {"pairs": len(rows), "subjects": len({r["subject"] for r in rows}),
            "skipped": skipped}


# ---- held-out leakage ------------------------------------------------------------------------
def leaked_images(store: ShardStore, held_out: set[str]) -> set[str]:
    """Images outside `held_out` that would still show a held-out object to training.

    - images whose closest recorded near-duplicate (any embedding model) is a held-out image,
      e.g. a re-encoded copy filed under another subject. Closest, not any: on an embedding
      that tells little apart (the tiny profile's random CLIP puts most of the synth sample
      within the threshold of each other) "any" would drop nearly all training data;
    - exact copies: ingest keeps one row per content hash, so a copy listed before the held-out
      original is the row kept, under the other subject. The skipped original is recorded in
      `duplicates`; when its folder holds only held-out images, the kept row leaks;
    - every member of a proposed (kNN) identity group holding one of the above or a held-out
      image: the group is a guess at one identity.
    """
    closest: dict[str, tuple[float, set[str]]] = {}  # image -> (cosine, its closest images)
    for row in store.read("near_duplicates", ["image_id", "other_id", "cosine"]).to_pylist():
        for image, other in ((row["image_id"], row["other_id"]), (row["other_id"], row["image_id"])):
            best, others = closest.get(image, (-1.0, set()))
            if row["cosine"] > best:
                closest[image] = (row["cosine"], {other})
            elif row["cosine"] == best:
                others.add(other)
    leaked = {image for image, (_, others) in closest.items() if others & held_out}
    folders: dict[str, bool] = {}  # folder -> holds only held-out images
    for row in store.read("images", ["image_id", "source"]).to_pylist():
        folder = posixpath.dirname(row["source"])
        folders[folder] = folders.get(folder, True) and row["image_id"] in held_out
    leaked |= {row["image_id"] for row in store.read("duplicates", ["image_id", "source"]).to_pylist()
               if folders.get(posixpath.dirname(row["source"]))}
    groups: dict[str, set[str]] = defaultdict(set)
    for row in latest_snapshot(store, "subject_groups", ["image_id", "group_id", "origin"]):
        if row["origin"] == "knn":
            groups[row["group_id"]].add(row["image_id"])
    for members in groups.values():
        if members & (leaked | held_out):
            leaked |= members
    return leaked - held_out
