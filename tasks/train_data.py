"""Training data: committed shards -> the two Ray datasets the train loop consumes.

- `domain`: cross-reference rows: a target image, a *different* reference image of the same
  subject, and the target's caption. Pairs come from the `pairs` table's newest snapshot, else
  every ordered pair of distinct images within `images.subject`.
- `general`: every image with its caption and no reference (the text-only rows of joint
  training, which keep the text-to-image prior).
Captions: each image's newest caption (`storage.queries.latest_captions`), else the image's own
`text`, else "a photo of a {class_name}".
Held out of both: the held-out split's subjects (storage/splits.py, recorded here for subjects
seen for the first time) and images that would leak them (`tasks.pairs.leaked_images`).
Every read goes through the store it is given: a training run passes the `PinnedStore` of the
versions it pinned (tasks/runs.py), so its plan is the same rows whenever it is rebuilt.

The plan (ids and captions) is joined on the driver from metadata columns only. The image bytes
go to the object store once; Ray Data tasks decode and preprocess each block into the tensors
`model.batching.collate` documents, so the train loop only consumes its shard. The bytes table
must fit the object store; beyond that, replace the lookup with a Ray Data join.
"""

from __future__ import annotations

import functools
import io
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from model import batching
from model.base_family import FAMILIES, token_ids
from model.embedding import load_image_processor, preprocess
from model.generate import DEFAULT_NOUN
from model.profiles import load_profile, load_role
from storage.images import load_rgb
from storage.queries import latest_captions, latest_snapshot
from storage.shards import ShardStore
from storage.splits import HELD_OUT, record_splits, split_key

FALLBACK_CAPTION = "a photo of a {}"
DOMAIN, GENERAL = "domain", "general"
# Rows per Ray Data block: enough to amortize a task's start-up, few enough to spread the work.
ROWS_PER_BLOCK = 256
PLAN_SCHEMA = pa.schema([("target_id", pa.string()), ("reference_id", pa.string()),
                         ("caption", pa.string())])


@dataclass(frozen=True)
class TrainingPlan:
    """Which rows each dataset holds, and where captions and pairs came from (for lineage)."""

    domain: pa.Table  # PLAN_SCHEMA: one row per (reference, target) pair
    general: pa.Table  # PLAN_SCHEMA with reference_id null: one row per image
    caption_source: str  # captions | fallback
    pair_source: str  # pairs | subjects


def captions_by_image(store: ShardStore, images: list[dict]) -> tuple[dict[str, str], str]:
    """image id -> training caption, and which source gave them."""
    fallback = {row["image_id"]: row["text"] or FALLBACK_CAPTION.format(row["class_name"] or DEFAULT_NOUN)
                for row in images}
    if not _has_rows(store, "captions"):
        return fallback, "fallback"
    composed = {row["image_id"]: row["composed_caption"]
                for row in latest_captions(store, ["image_id", "composed_caption"]).to_pylist()}
    return {image_id: composed.get(image_id) or caption for image_id, caption in fallback.items()}, "captions"


def cross_reference_pairs(store: ShardStore, images: list[dict]) -> tuple[list[tuple[str, str]], str]:
    """(reference_id, target_id) pairs of distinct images of one subject, and their source."""
    known = {row["image_id"] for row in images}
    if _has_rows(store, "pairs"):
        pairs = [(r["reference_id"], r["target_id"])
                 for r in latest_snapshot(store, "pairs", ["reference_id", "target_id"])
                 if r["reference_id"] in known and r["target_id"] in known]
        return pairs, "pairs"
    by_subject: dict[str, list[str]] = defaultdict(list)
    for row in images:
        if row["subject"]:
            by_subject[row["subject"]].append(row["image_id"])
    return [pair for subject in sorted(by_subject)
            for pair in batching.cross_reference_pairs(by_subject[subject])], "subjects"


def build_plan(store: ShardStore) -> TrainingPlan:
    """Join images, captions and pairs (metadata only) into the rows of both datasets."""
    rows = store.read("images", ["image_id", "subject", "class_name", "text"]).to_pylist()
    excluded = held_out_images(store, rows)  # kept for evaluation
    images = [row for row in rows if row["image_id"] not in excluded]
    if not images:
        raise ValueError(f"no trainable images under {store.location.uri}: ingest data first "
                         f"({len(rows)} held out or showing held-out objects)")
    captions, caption_source = captions_by_image(store, images)
    pairs, pair_source = cross_reference_pairs(store, images)
    if not pairs:
        raise ValueError("no cross-reference pairs: need a subject with two or more images")
    domain = [{"target_id": t, "reference_id": r, "caption": captions[t]} for r, t in pairs]
    general = [{"target_id": i, "reference_id": None, "caption": captions[i]} for i in sorted(captions)]
    return TrainingPlan(pa.Table.from_pylist(domain, PLAN_SCHEMA),
                        pa.Table.from_pylist(general, PLAN_SCHEMA), caption_source, pair_source)


def held_out_images(store: ShardStore, images: list[dict]) -> set[str]:
    """Ids of the held-out split's images and of the images that would leak them."""
    from tasks.pairs import leaked_images  # the pairs stage's reader: one definition

    splits = record_splits(store)
    held_out = {row["image_id"] for row in images
                if splits[split_key(row["subject"], row["image_id"])]["split"] == HELD_OUT}
    return held_out | leaked_images(store, held_out)


def _has_rows(store: ShardStore, table: str) -> bool:
    from storage.schemas import TABLES

    return table in TABLES and store.row_count(table) > 0


# ---- preprocessing (Ray Data tasks) ------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _processors(profile_name: str):
    """({ids key: tokenizer} of each text tower, CLIP image processor, target resolution): no
    weights, cached per process."""
    profile = load_profile(profile_name)
    tokenizers = {key: load_role(profile, tokenizer) for tokenizer, _, key in FAMILIES[profile.family].text_parts}
    return tokenizers, load_image_processor(profile), profile.resolution


@functools.lru_cache(maxsize=2)
def _image_lookup(ref_hex: str, ref) -> dict[str, tuple[bytes, bytes | None]]:
    import ray

    table = ray.get(ref)
    return {i: (image, mask) for i, image, mask in zip(
        table["image_id"].to_pylist(), table["image"].to_pylist(), table["mask"].to_pylist())}


def preprocess_rows(batch: pa.Table, images: list, profile_name: str) -> dict[str, np.ndarray]:
    """Plan rows -> numpy tensors; references (and their masks) only in the domain dataset."""
    from diffusers.image_processor import VaeImageProcessor

    tokenizers, clip_processor, resolution = _processors(profile_name)
    lookup = _image_lookup(images[0].hex(), images[0])
    rows = batch.to_pylist()
    targets = [load_rgb(lookup[row["target_id"]][0]) for row in rows]
    out = {
        "target_id": np.array([row["target_id"] for row in rows], dtype=object),
        # (N, 3, H, W) in [-1, 1]: the VAE's input
        "pixel_values": VaeImageProcessor().preprocess(targets, height=resolution, width=resolution).numpy(),
        # (N, L) per text tower
        **{key: token_ids(tokenizer, [row["caption"] for row in rows]).numpy() for key, tokenizer in tokenizers.items()},
    }
    if rows and rows[0]["reference_id"] is not None:
        references = [lookup[row["reference_id"]] for row in rows]
        clip_pixels = preprocess(clip_processor, [image for image, _ in references])  # (N, 3, h, w)
        side = clip_pixels.shape[-2:]
        out["reference_id"] = np.array([row["reference_id"] for row in rows], dtype=object)
        out["reference_pixel_values"] = clip_pixels.numpy()
        out["reference_mask"] = np.stack([_mask(mask, side) for _, mask in references])  # (N, 1, h, w)
        out["has_mask"] = np.array([mask is not None for _, mask in references])  # (N,)
    return out


def _mask(data: bytes | None, side: tuple[int, int]) -> np.ndarray:
    """A stored L-mode PNG -> (1, h, w) float 0/1 at the reference's size (ones when absent)."""
    if data is None:
        return np.ones((1, *side), np.float32)
    mask = Image.open(io.BytesIO(data)).convert("L").resize(side[::-1], Image.Resampling.NEAREST)
    return (np.asarray(mask, np.float32) > 127).astype(np.float32)[None]


def build_datasets(store: ShardStore, plan: TrainingPlan, profile_name: str, data_cpus: float) -> dict:
    """{"domain": Dataset, "general": Dataset} of preprocessed rows, materialized once."""
    import ray

    images = ray.put(store.read("images", ["image_id", "image", "mask"]))
    datasets = {}
    for name, table in ((DOMAIN, plan.domain), (GENERAL, plan.general)):
        blocks = max(1, -(-table.num_rows // ROWS_PER_BLOCK))
        dataset = ray.data.from_arrow(table).repartition(blocks).map_batches(
            preprocess_rows, fn_kwargs={"images": [images], "profile_name": profile_name},
            batch_format="pyarrow", batch_size=None, num_cpus=data_cpus)
        # Preprocessed once: every epoch (and every restart) re-reads the object store.
        datasets[name] = dataset.materialize()
    return datasets


# ---- the worker side ---------------------------------------------------------------------
class Pool:
    """Endless rows from one dataset shard: re-iterates the shard (a new epoch) when drained."""

    def __init__(self, shard, batch_size: int, seed: int):
        self.shard, self.batch_size, self.seed = shard, batch_size, seed
        self.epoch, self.buffer = 0, deque()
        self._batches: Iterator | None = None

    def take(self, count: int) -> list[dict]:
        """`count` rows as collate examples (tensors), each with its ids under "key"."""
        while len(self.buffer) < count:
            batch = next(self._batches, None) if self._batches is not None else None
            if batch is None:
                self._batches = iter(self.shard.iter_batches(
                    batch_size=self.batch_size, batch_format="numpy", prefetch_batches=2,
                    local_shuffle_buffer_size=4 * self.batch_size,
                    local_shuffle_seed=self.seed + self.epoch))
                self.epoch += 1
                continue
            self.buffer.extend(_rows(batch))
        return [self.buffer.popleft() for _ in range(count)]


def _rows(batch: dict[str, np.ndarray]) -> Iterator[dict]:
    has_reference = "reference_id" in batch
    for i in range(len(batch["target_id"])):
        example = {"key": str(batch["target_id"][i]),
                   "pixel_values": torch.from_numpy(batch["pixel_values"][i]),
                   **{key: torch.from_numpy(batch[key][i]) for key in batch if key.startswith("input_ids")},
                   "reference_pixel_values": None, "reference_mask": None}
        if has_reference:
            example["key"] = f"{batch['reference_id'][i]}>{example['key']}"
            example["reference_pixel_values"] = torch.from_numpy(batch["reference_pixel_values"][i])
            if batch["has_mask"][i]:
                example["reference_mask"] = torch.from_numpy(batch["reference_mask"][i])
        yield example
