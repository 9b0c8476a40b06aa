"""Embed images and composed captions with CLIP on Ray Data; the driver commits `embeddings`.

Each image also gets an identity vector from the profile's `dino` role (kind "identity", in the
same pass over the decoded images): what identity groups cluster (`tasks.pairs`).

Reading runs as Ray tasks; decoding, preprocessing and the model run in an actor pool (the
model loaded once per actor, preprocessing overlapped with it). The same `Encoder` runs in
process with `executor="local"`; `tasks.distribute` runs both. A vector is identified by
(image_id, kind, config_hash): the hash covers the model, the embedding recipe and, for text,
the caption config (images: the dino role's id too), so a re-run with the same models and
captions embeds nothing. What is left to embed, and the newest vectors, are named
queries in DuckDB (`storage.queries`).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray.data as ray_data
import torch

from model import embedding
from model.profiles import Profile, load_profile
from storage.queries import EMBEDDED, images_left, latest_embeddings, record_mark, texts_left
from storage.shards import ShardStore
from tamer.config import EmbedSettings, RaySettings
from tasks.distribute import Executor, Inputs, Placement, distribute
from tasks.images_dataset import decode_image, iter_images_local, read_images
from tasks.ray_runtime import cluster_address
from tasks.stage import Quarantine, ShardWriter, with_retries

IMAGE, TEXT, IDENTITY = "image", "text", "identity"
IMAGE_COLUMNS = ["image_id", "source", "image"]
PIPELINE_DEPTH = 4  # model batches per Ray batch: preparing one overlaps the model on another
Batch = dict[str, np.ndarray]  # {"image_id": (N,), "vector": (N, D)[, "identity": (N, Di)]}


@dataclass
class EmbedReport:
    """What one embed run added; `fingerprint` is the embeddings table's version after it."""

    run_id: str
    model_id: str
    images: int = 0  # new image vectors (each with its identity vector where the profile has a dino role)
    texts: int = 0  # new caption vectors
    skipped: int = 0  # already embedded with this model and config, or known undecodable
    quarantined: int = 0  # images whose stored bytes did not decode (new this run)
    shards: int = 0
    fingerprint: str = ""
    executor: str = ""  # where the model ran: "local" (this process) or "ray"; "" = nothing to do


def config_hash(model_id: str, caption_hash: str | None = None, identity_id: str | None = None) -> str:
    """What decides whether a stored vector is still valid."""
    key = f"{model_id}|recipe={embedding.EMBEDDING_RECIPE}|caption={caption_hash or '-'}"
    key += f"|identity={identity_id}@{embedding.IDENTITY_RECIPE}" if identity_id else ""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def identity_model_id(profile: Profile, settings: EmbedSettings | None = None) -> str | None:
    """The id identity vectors are stored under: the dino role's; None for a profile without one
    or a run that turned them off."""
    wanted = (settings or EmbedSettings()).identity_vectors
    return embedding.model_id(profile, "dino") if wanted and profile.roles.get("dino") else None


def image_config_hash(profile: Profile, settings: EmbedSettings | None = None) -> str:
    """The hash of a profile's image and identity vectors: one pass writes both."""
    return config_hash(embedding.model_id(profile), identity_id=identity_model_id(profile, settings))


def current_vectors(store: ShardStore, kind: str, model_id: str) -> tuple[list[str], np.ndarray]:
    """(image ids, (N, D) unit vectors): each image's newest `kind` vector from `model_id`."""
    table = latest_embeddings(store, kind, model_id, ["image_id", "vector"])
    if table.num_rows == 0:
        return [], np.zeros((0, 0), np.float32)
    flat = pc.list_flatten(table["vector"]).to_numpy(zero_copy_only=False)
    return table["image_id"].to_pylist(), flat.reshape(table.num_rows, -1).astype(np.float32)


# ---- the worker (shared by both executors) -------------------------------------------------
@functools.lru_cache(maxsize=4)
def _image_processor(profile_name: str):
    return embedding.load_image_processor(load_profile(profile_name))


def prepare_images(images: list[bytes], profile_name: str, identity: embedding.IdentityEmbedder | None = None
                   ) -> tuple[torch.Tensor | None, torch.Tensor | None, list[str]]:
    """Stored bytes -> CLIP pixels (M, 3, H, W) of the decodable ones, as the service
    preprocesses queries, the `identity` embedder's pixels of the same M (None without one), and
    one error per image ("" = fine): bad bytes are quarantined by the driver instead of failing
    the batch."""
    decoded, errors = [], []
    for data in images:
        try:
            decoded.append(decode_image(data))
            errors.append("")
        except Exception as exc:  # noqa: BLE001 - bad bytes quarantine the row, not the batch
            errors.append(f"{type(exc).__name__}: {exc}")
    if not decoded:
        return None, None, errors
    return (embedding.preprocess(_image_processor(profile_name), decoded),
            identity.preprocess(decoded) if identity else None, errors)


class Encoder:
    """Ray actor (or local object): the CLIP model (and the dino role, for identity vectors),
    loaded once; images or texts -> vectors.

    An image batch is cut into model batches of `batch_size`; a helper thread decodes and
    preprocesses the next one while the model runs the current one (PIL, numpy and torch
    release the GIL), so one actor keeps a second core busy without a second CPU stage (whose
    resource reservation stalled Ray Data on 2 CPUs).
    """

    def __init__(self, profile_name: str, torch_threads: int, batch_size: int,
                 retries: int, identity_vectors: bool = True) -> None:
        self.threads_before = torch.get_num_threads()  # in-process, the caller's count comes back on close
        torch.set_num_threads(torch_threads)
        self.profile_name, self.batch_size, self.retries = profile_name, batch_size, retries
        profile = load_profile(profile_name)
        self.embedder = embedding.ClipEmbedder.from_profile(profile, shared=True)
        self.identity = (embedding.IdentityEmbedder.from_profile(profile, shared=True)
                         if identity_model_id(profile, EmbedSettings(identity_vectors=identity_vectors)) else None)
        # torch's thread count is per OS thread under OpenMP: set it in the helper too
        self.preparer = ThreadPoolExecutor(1, thread_name_prefix="prepare", initializer=torch.set_num_threads,
                                           initargs=(torch_threads,))

    def __call__(self, batch: Batch) -> Batch:
        """Vectors with one reason and error per row ("" = embedded; failed rows are zeros)."""
        if "image" not in batch:
            texts = [str(t) for t in batch["text"]]
            vectors, errors = self._embed(
                lambda idx: self.embedder.embed_texts([texts[i] for i in idx]), len(texts))
            return _outcomes(batch["image_id"], batch["image_id"], vectors,
                             ["embed_failed" if error else "" for error in errors], errors)
        images = list(batch["image"])
        starts = range(0, len(images), self.batch_size)
        prepared = [self.preparer.submit(prepare_images, images[i:i + self.batch_size], self.profile_name,
                                         self.identity)
                    for i in starts]  # queued in order; the helper thread runs ahead of the model
        width = self.embedder.dim + (self.identity.dim if self.identity else 0)
        vectors, reasons, errors = [], [], []
        for future in prepared:
            pixels, identity_pixels, chunk_errors = future.result()
            chunk = np.zeros((len(chunk_errors), width), np.float32)
            chunk_reasons = ["undecodable" if error else "" for error in chunk_errors]
            if pixels is not None:  # (M, 3, H, W) of the M decoded images
                decoded = [i for i, error in enumerate(chunk_errors) if not error]
                embedded, model_errors = self._embed(
                    lambda idx, p=pixels, q=identity_pixels: self._image_vectors(p[idx], q if q is None else q[idx]),
                    len(decoded), width)
                chunk[decoded] = embedded
                for i, error in zip(decoded, model_errors):
                    if error:
                        chunk_errors[i], chunk_reasons[i] = error, "embed_failed"
            vectors.append(chunk)
            reasons += chunk_reasons
            errors += chunk_errors
        both = np.concatenate(vectors)
        outcomes = _outcomes(batch["image_id"], batch["source"], both[:, :self.embedder.dim], reasons, errors)
        return outcomes | ({"identity": both[:, self.embedder.dim:]} if self.identity else {})

    def _image_vectors(self, pixels: torch.Tensor, identity_pixels: torch.Tensor | None) -> np.ndarray:
        """CLIP vectors, then identity vectors, side by side in one row per image: a row is
        embedded, or retried, or quarantined, as a whole."""
        vectors = self.embedder.embed_pixels(pixels)
        if identity_pixels is None:
            return vectors
        return np.concatenate([vectors, self.identity.embed_pixels(identity_pixels)], axis=1)

    def _embed(self, model, count: int, width: int | None = None) -> tuple[np.ndarray, list[str]]:
        """(count, width) vectors of `model(indices)` and one error per input ("" = embedded): a
        failing call is retried, then each input alone; inputs that still fail stay zeros."""
        rows = with_retries(list(range(count)), lambda idx: list(model(idx)), self.retries,
                            lambda _, exc: f"{type(exc).__name__}: {exc}")
        errors = [row if isinstance(row, str) else "" for row in rows]
        vectors = np.zeros((count, width or self.embedder.dim), np.float32)
        if any(not error for error in errors):
            vectors[[not error for error in errors]] = np.stack(
                [row for row in rows if not isinstance(row, str)])
        return vectors, errors

    def close(self) -> None:
        self.preparer.shutdown()
        torch.set_num_threads(self.threads_before)


def _outcomes(image_ids, sources, vectors: np.ndarray, reasons: list[str],
              errors: list[str]) -> Batch:
    return {"image_id": image_ids, "source": sources, "vector": vectors,
            "reason": np.array(reasons, dtype=object), "error": np.array(errors, dtype=object)}


def _vectors(store: ShardStore, todo: dict[str, list[str]], texts: list[dict], profile_name: str,
             settings: EmbedSettings, executor: Executor,
             ray_settings: RaySettings | None) -> Iterator[tuple[str, Batch]]:
    """(kind, vectors) of every to-do image, then of every to-do caption: two passes of
    `Encoder`, run by the one distributor (on Ray, an actor pool of `settings.actors`)."""
    rows = settings.batch_size * PIPELINE_DEPTH
    passes = [(IMAGE, todo, Inputs(lambda: _image_batches(store, todo, rows),
                                   lambda: read_images(store, todo, IMAGE_COLUMNS, rows))),
              (TEXT, texts, Inputs(lambda: _text_batches(texts, settings.batch_size),
                                   lambda: ray_data.from_items(texts)))]
    placement = Placement(settings.actors, batch_size=rows, batch_format="numpy")
    args = (profile_name, settings.torch_threads, settings.batch_size, settings.batch_retries,
            settings.identity_vectors)
    for kind, left, inputs in passes:
        if left:
            for batch in distribute(Encoder, args, inputs, executor=executor, placement=placement,
                                    ray_settings=ray_settings):
                yield kind, batch


def _image_batches(store: ShardStore, todo: dict[str, list[str]], rows: int) -> Iterator[Batch]:
    """The to-do images rows in this process, as the numpy batches Ray Data would hand over."""
    for chunk in iter_images_local(store, todo, IMAGE_COLUMNS, rows):
        yield {name: np.array(chunk[name].to_pylist(), dtype=object) for name in IMAGE_COLUMNS}


def _text_batches(texts: list[dict], size: int) -> Iterator[Batch]:
    """The to-do captions in this process, `size` at a time."""
    for start in range(0, len(texts), size):
        chunk = texts[start:start + size]
        yield {"image_id": np.array([r["image_id"] for r in chunk]),
               "text": np.array([r["text"] for r in chunk], dtype=object)}


# ---- the driver ------------------------------------------------------------------------
def embed_dataset(store: ShardStore, profile_name: str, settings: EmbedSettings | None = None,
                  ray_settings: RaySettings | None = None,
                  progress: Callable[[int, int], None] | None = None) -> EmbedReport:
    """Embed every image (and caption) not yet embedded with this model and config."""
    settings = settings or EmbedSettings()
    profile = load_profile(profile_name)
    model_id, identity_id = embedding.model_id(profile), identity_model_id(profile, settings)
    started = dt.datetime.now(dt.UTC)
    report = EmbedReport(f"embed-{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}", model_id)
    image_hash = image_config_hash(profile, settings)
    left = images_left(store, "embed", EMBEDDED, {"config_hash": image_hash})
    texts_todo = texts_left(store, functools.partial(config_hash, model_id), model_id)
    texts = texts_todo.rows
    todo, image_todo = left.files, left.count
    report.skipped = left.total - image_todo
    if not todo and not texts:  # a no-op loads no model and starts no Ray
        record_mark(store, left, report.run_id)
        record_mark(store, texts_todo, report.run_id)
        report.fingerprint = store.fingerprint(("embeddings",))
        return report
    text_hashes = {r["image_id"]: r["config_hash"] for r in texts}
    report.executor = executor = _executor(settings, ray_settings or RaySettings(), image_todo + len(texts))
    batches = _vectors(store, todo, texts, profile_name, settings, executor, ray_settings)
    writer = ShardWriter(store, "embeddings", settings.shard_rows, report.run_id,
                         metadata={"model_id": model_id})
    quarantine, total, done = Quarantine(store, "embed"), image_todo + len(texts), 0
    for kind, batch in batches:
        done += len(batch["image_id"])
        batch = _split_failures(batch, quarantine)
        hashes = [image_hash if kind == IMAGE else text_hashes[str(image_id)]
                  for image_id in batch["image_id"]]
        if hashes:
            writer.add(_rows(batch["image_id"], batch["vector"], kind, model_id, hashes, started))
            if "identity" in batch:
                writer.add(_rows(batch["image_id"], batch["identity"], IDENTITY, identity_id, hashes, started))
        setattr(report, f"{kind}s", getattr(report, f"{kind}s") + len(batch["image_id"]))
        if progress:
            progress(done, total)
    writer.flush()
    report.shards, report.quarantined = writer.shards, quarantine.new
    quarantine.commit(report.run_id)
    if report.images + quarantine.reasons.get("undecodable", 0) == image_todo:  # nothing to retry
        record_mark(store, left, report.run_id)
    if report.texts == len(texts):
        record_mark(store, texts_todo, report.run_id)
    report.fingerprint = store.fingerprint(("embeddings",))
    return report


def _executor(settings: EmbedSettings, ray_settings: RaySettings, todo: int) -> Executor:
    """Where the model runs: `settings.local_below` when set; else (auto) on Ray only when Ray
    adds workers. With one actor on a local Ray the actor runs the same `Encoder` (model plus a
    decoding helper thread) that this process would, after Ray's start-up and the actor's: on
    2,000 images on 2 CPUs, 53 s on Ray vs 37 s in-process (the README's embed figures)."""
    if settings.executor == "local":
        return "local"
    if settings.local_below is not None:
        return "ray" if todo >= settings.local_below else "local"
    return "ray" if settings.actors > 1 or cluster_address(ray_settings) else "local"


def _split_failures(batch: Batch, quarantine: Quarantine) -> Batch:
    """Quarantine rows that did not decode or that the model kept failing on; return the
    embedded rows."""
    failed = batch["error"] != ""
    for image_id, source, reason, error in zip(batch["image_id"][failed], batch["source"][failed],
                                               batch["reason"][failed], batch["error"][failed]):
        quarantine.add(str(source), str(image_id), str(reason), str(error))
    return {key: value[~failed] for key, value in batch.items()}


def _rows(image_ids: np.ndarray, vectors: np.ndarray, kind: str, model_id: str, hashes: list[str],
          embedded_at: dt.datetime) -> pa.Table:
    """Embeddings rows of one batch; vectors as a list<float32> column."""
    vectors = np.stack(list(vectors)).astype(np.float32)  # (N, D)
    table = pa.table({"image_id": pa.array([str(i) for i in image_ids], pa.string()),
                      "kind": pa.array([kind] * len(hashes), pa.string()),
                      "model_id": pa.array([model_id] * len(hashes), pa.string()),
                      "config_hash": pa.array(hashes, pa.string()),
                      "embedded_at": pa.array([embedded_at] * len(hashes),
                                              pa.timestamp("us", tz="UTC"))})
    return table.append_column("vector", pa.ListArray.from_arrays(
        pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32)),
        pa.array(vectors.ravel())))
