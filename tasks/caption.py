"""Caption committed images into the `captions` table: VLM caption + CLIP attributes, composed.

A caption row is keyed by (image_id, captioner_id, clip_id, config_hash): images already
captioned under the current key are skipped, a changed config or model adds new rows under a
new key, and readers take each image's newest caption (`storage.queries.latest_captions`);
what is left to caption is one anti-join in DuckDB (`storage.queries`). `CaptionWorker` (models
loaded once) turns a batch of images rows into outcome rows and never raises for bad input:
undecodable bytes are quarantined at once; a batch the models fail on is retried, then each of
its rows is tried alone, and only the rows that still fail are quarantined. `tasks.distribute`
runs it serially (`executor="local"`) or as a Ray Data actor pool; the driver alone commits.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel

from model import tiny
from model.attributes import Scores, Vocabulary, accuracy, load_vocabulary, top, truth_from_meta
from model.compose import CaptionTemplate, check_template, compose, named_attributes, object_class
from model.profile_check import preflight
from model.profiles import TINY_SCHEME, Profile, load_profile
from storage.queries import CAPTIONED, images_left, latest_captions, record_mark
from storage.schemas import CAPTIONS
from storage.shards import ShardStore
from tamer.config import CONFIG_DIR, CaptionSettings, RaySettings, config_hash
from tamer.stats import word_count
from tasks.images_dataset import decode_image, iter_images_local, read_images
from tasks.distribute import Executor, Inputs, Placement, distribute
from tasks.stage import Quarantine, ShardWriter, with_retries

ROLES = ["captioner", "clip"]
READ_COLUMNS = ["image_id", "source", "class_name", "image"]
# Settings that change how fast captions are made, not what they say: not in the config hash.
RUNTIME_FIELDS = {"executor", "local_below", "batch_size", "actors", "gpus_per_actor",
                  "batch_retries", "shard_rows"}
OUTCOME_SCHEMA = pa.schema(
    [pa.field("outcome", pa.string()),  # captioned | quarantined
     pa.field("source", pa.string()), pa.field("reason", pa.string()),
     pa.field("detail", pa.string())]
    + [f.with_nullable(True) for f in CAPTIONS if f.name != "created_at"])


@dataclass(frozen=True)
class CaptionJob:
    """Everything a worker needs to load the models and caption (picklable, no loaded state)."""

    profile: str
    settings: CaptionSettings
    vocabulary: Vocabulary
    key: tuple[str, str, str]  # (captioner_id, clip_id, config_hash)
    device: str | None = None  # None: the profile's device
    torch_threads: int | None = None  # None: torch's default


@dataclass
class CaptionReport:
    """What one caption run did, under which models and config."""

    run_id: str
    captioner_id: str
    clip_id: str
    config_hash: str
    todo: int = 0  # images not yet captioned under this key
    skipped: int = 0  # images already captioned under this key, or known undecodable
    captioned: int = 0
    quarantined: int = 0
    shards: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def vocabulary_path(settings: CaptionSettings) -> Path:
    path = Path(settings.attributes).expanduser()
    return path if path.is_absolute() else CONFIG_DIR / path


def template_of(settings: CaptionSettings) -> CaptionTemplate:
    return CaptionTemplate(settings.template, settings.object_phrase, settings.object_token)


def caption_config_hash(settings: CaptionSettings, vocabulary: Vocabulary) -> str:
    """Hash of what decides the captions' text: wording settings plus the whole vocabulary."""
    class Recipe(BaseModel):
        settings: dict
        vocabulary: Vocabulary

    return config_hash(Recipe(settings=settings.model_dump(exclude=RUNTIME_FIELDS),
                              vocabulary=vocabulary))


def model_id(profile: Profile, role: str) -> str:
    """The id recorded with a caption; tiny models add their recipe hash (a new recipe, new id)."""
    ref = profile.roles[role]
    assert ref is not None, role
    if ref.id.startswith(TINY_SCHEME):
        return f"{ref.id}@{tiny.recipe_hash(ref.id[len(TINY_SCHEME):])}"
    return f"{ref.id}@{ref.revision}" if ref.revision else ref.id


# ---- the worker ----------------------------------------------------------------------------
class CaptionWorker:
    """Both models, loaded once; `__call__(batch)` -> outcome rows (a pa.Table)."""

    def __init__(self, job: CaptionJob) -> None:
        import torch

        from model.attributes import AttributeScorer
        from model.captioning import Captioner, GenerationSettings
        from model.profiles import load_role

        if job.torch_threads:
            torch.set_num_threads(job.torch_threads)
        profile = load_profile(job.profile)
        settings = job.settings
        model, processor = load_role(profile, "captioner", device=job.device, shared=True)
        self.captioner = Captioner(model, processor, GenerationSettings(
            settings.max_new_tokens, settings.num_beams, settings.prompt))
        clip, clip_processor = load_role(profile, "clip", device=job.device, shared=True)
        self.scorer = AttributeScorer(clip, clip_processor, job.vocabulary)
        self.job, self.template, self.min_side = job, template_of(settings), profile.resolution

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows, images, out = [], [], []
        for row in batch.to_pylist():
            try:
                images.append(decode_image(row["image"], self.min_side))
                rows.append(row)
            except Exception as exc:  # noqa: BLE001 - bad bytes quarantine the row, not the batch
                out.append(_failed(row, "undecodable", exc))
        if rows:
            out += with_retries(list(zip(rows, images)), self._caption_pairs,
                                self.job.settings.batch_retries,
                                lambda item, exc: _failed(item[0], "caption_failed", exc))
        return pa.Table.from_pylist(out, schema=OUTCOME_SCHEMA)

    def _caption_pairs(self, pairs) -> list[dict]:
        return self.caption([row for row, _ in pairs], [image for _, image in pairs])

    def caption(self, rows: list[dict], images: list) -> list[dict]:
        """Outcome rows for decoded images: one generate and one CLIP call for the batch."""
        raws = self.captioner(images)
        scores = self.scorer(images)
        captioner_id, clip_id, hash_ = self.job.key
        return [{"outcome": "captioned", "image_id": row["image_id"], "source": row["source"],
                 "captioner_id": captioner_id, "clip_id": clip_id, "config_hash": hash_,
                 "raw_caption": raw, "raw_words": word_count(raw),
                 **self._composed(row["class_name"], raw, score)}
                for row, raw, score in zip(rows, raws, scores)]

    def _composed(self, class_name: str | None, raw: str, scores: Scores) -> dict:
        vocabulary = self.job.vocabulary
        noun = object_class(class_name, scores)
        named = named_attributes(scores, vocabulary)
        composed, object_caption = compose(raw, noun, named, self.template)
        attributes = [{"attribute": group, "value": value, "probability": probability,
                       "named": probability >= vocabulary.threshold_of(group)}
                      for group, (value, probability) in top(scores).items()]
        return {"class_name": noun, "composed_caption": composed, "composed_words": word_count(composed),
                "object_caption": object_caption, "attributes": attributes,
                "scores": json.dumps(scores, sort_keys=True)}


def _failed(row: dict, reason: str, exc: Exception | None) -> dict:
    return {"outcome": "quarantined", "image_id": row["image_id"], "source": row["source"],
            "reason": reason, "detail": f"{type(exc).__name__}: {exc}"}


# ---- execution -------------------------------------------------------------------------------
def ray_placement(job: CaptionJob, ray_settings: RaySettings) -> tuple[CaptionJob, Placement]:
    """The actor pool for this cluster: one actor per `gpus_per_actor` GPUs when the profile
    runs on cuda, else CPU actors that leave one CPU to the read tasks."""
    import ray

    from tasks.ray_runtime import ensure_ray

    ensure_ray(ray_settings)
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), resources.get("CPU", 1.0)
    settings = job.settings
    batch = {"batch_size": settings.batch_size, "schema": OUTCOME_SCHEMA}
    if job.device is not None and job.device.startswith("cuda") and gpus:
        actors = settings.actors or max(1, int(gpus / settings.gpus_per_actor))
        # Ray sets CUDA_VISIBLE_DEVICES per actor
        return replace(job, device="cuda"), Placement(actors, 1, settings.gpus_per_actor, **batch)
    actors = settings.actors or max(1, int(cpus))
    # Leave one CPU for the read, filter and repartition tasks (the latter asks for a whole
    # CPU): actors holding it would starve them and the job would stall.
    job = replace(job, device="cpu", torch_threads=max(1, int(cpus // actors)))
    return job, Placement(actors, max(0.1, (cpus - 1) / actors), **batch)


def caption_outcomes(store: ShardStore, todo: dict[str, list[str]], job: CaptionJob,
                     executor: Executor, ray_settings: RaySettings) -> Iterator[pa.Table]:
    """Outcome rows of every to-do image, `CaptionWorker` run by the one distributor."""
    size = job.settings.batch_size
    placement = Placement(batch_size=size, schema=OUTCOME_SCHEMA)
    if executor == "ray":
        job, placement = ray_placement(job, ray_settings)
    inputs = Inputs(lambda: iter_images_local(store, todo, READ_COLUMNS, size),
                    lambda: read_images(store, todo, READ_COLUMNS, size))
    return distribute(CaptionWorker, (job,), inputs, executor=executor, placement=placement,
                      ray_settings=ray_settings)


# ---- the driver ------------------------------------------------------------------------------
def caption_images(
    store: ShardStore,
    profile_name: str,
    settings: CaptionSettings | None = None,
    ray_settings: RaySettings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CaptionReport:
    """Caption every image not yet captioned under the current models + config.

    Fails (ModelLoadError, ValueError) before reading any data when a model id cannot be
    loaded or the template names an unknown slot. `progress(done, total)` counts images.
    """
    settings = settings or CaptionSettings()
    vocabulary = load_vocabulary(vocabulary_path(settings))
    check_template(template_of(settings), vocabulary.groups)
    profile = load_profile(profile_name)
    preflight(profile, ROLES)
    key = (model_id(profile, "captioner"), model_id(profile, "clip"),
           caption_config_hash(settings, vocabulary))
    started = dt.datetime.now(dt.UTC)
    report = CaptionReport(f"caption-{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}", *key)
    left = images_left(store, "caption", CAPTIONED, dict(zip(("captioner_id", "clip_id", "config_hash"), key)))
    todo, report.todo, report.skipped = left.files, left.count, left.total - left.count
    if not todo:
        record_mark(store, left, report.run_id)
        return report
    job = CaptionJob(profile_name, settings, vocabulary, key, device=profile.device)
    on_ray = settings.executor == "ray" and report.todo >= settings.local_below
    executor = "ray" if on_ray else "local"
    outcomes = caption_outcomes(store, todo, job, executor, ray_settings or RaySettings())
    committer = _Committer(store, settings.shard_rows, report)
    committer.consume(outcomes, lambda done: progress(done, report.todo) if progress else None)
    committer.finish()
    if report.captioned + report.reasons.get("undecodable", 0) == report.todo:  # nothing to retry
        record_mark(store, left, report.run_id)
    return report


class _Committer:
    """Routes outcome rows: captions into shards of `shard_rows`, failures into quarantine."""

    def __init__(self, store: ShardStore, shard_rows: int, report: CaptionReport) -> None:
        self.report = report
        self.captions = ShardWriter(store, "captions", shard_rows, report.run_id)
        self.quarantine = Quarantine(store, "caption")

    def consume(self, outcomes: Iterable[pa.Table], on_progress: Callable[[int], None]) -> None:
        done = 0
        for table in outcomes:
            now = dt.datetime.now(dt.UTC)
            captioned = []
            for row in table.to_pylist():
                if row.pop("outcome") == "captioned":
                    captioned.append({**row, "created_at": now})
                else:
                    self.quarantine.add(row["source"], row["image_id"], row["reason"],
                                        f"config {self.report.config_hash}: {row['detail']}")
            self.captions.add(pa.Table.from_pylist(captioned, schema=CAPTIONS))
            done += table.num_rows
            on_progress(done)

    def finish(self) -> None:
        self.captions.flush()
        report = self.report
        report.captioned, report.shards = self.captions.rows, self.captions.shards
        report.quarantined, report.reasons = self.quarantine.new, self.quarantine.reasons
        self.quarantine.commit(report.run_id)


# ---- readers ---------------------------------------------------------------------------------
def attribute_accuracy(store: ShardStore, vocabulary: Vocabulary) -> dict[str, dict[str, float]]:
    """Per-group top-1 accuracy of the latest captions against ground truth in `images.meta`."""
    truth = {row["image_id"]: truth_from_meta(json.loads(row["meta"]), vocabulary)
             for row in store.read("images", ["image_id", "meta"]).to_pylist() if row["meta"]}
    predicted = {row["image_id"]: {a["attribute"]: a["value"] for a in row["attributes"]}
                 for row in latest_captions(store, ["image_id", "attributes"]).to_pylist()}
    return accuracy(predicted, truth, vocabulary)
