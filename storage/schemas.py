"""Every shard table's pyarrow schema, in one place, versioned.

A table's version is bumped whenever its columns change meaning or type; readers use
`union_by_name`, so adding a nullable column is backwards compatible.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION_KEY = b"tamer.schema_version"

IMAGES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),  # sha256 of the original bytes
        pa.field("subject", pa.string()),  # identity group from the layout, if any
        pa.field("class_name", pa.string()),  # class noun ("backpack"), if known
        pa.field("source", pa.string(), nullable=False),  # where the bytes came from
        pa.field("source_kind", pa.string(), nullable=False),  # folder | tar | parquet
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("format", pa.string(), nullable=False),  # original format (JPEG, PNG, ...)
        pa.field("mode", pa.string(), nullable=False),  # original PIL mode before RGB conversion
        pa.field("num_bytes", pa.int64(), nullable=False),  # size of the original bytes
        pa.field("flags", pa.list_(pa.string())),  # soft warnings, e.g. "tiny"
        pa.field("image", pa.binary(), nullable=False),  # RGB image bytes (original or PNG)
        pa.field("mask", pa.binary()),  # optional foreground mask (PNG, L mode)
        pa.field("text", pa.string()),  # caption shipped with the source, if any
        pa.field("meta", pa.string()),  # JSON side data (e.g. synth ground truth)
        pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

QUARANTINE = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),  # ingest | caption | embed ...
        pa.field("source", pa.string(), nullable=False),
        pa.field("content_sha256", pa.string()),  # null when the bytes could not be read
        pa.field("reason", pa.string(), nullable=False),  # short machine-readable code
        pa.field("detail", pa.string()),  # human-readable message
        pa.field("quarantined_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

DUPLICATES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # the skipped copy
        pa.field("kept_source", pa.string(), nullable=False),  # the copy already in `images`
        pa.field("seen_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

INGEST_RUNS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("started_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("finished_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("seen", pa.int64(), nullable=False),
        pa.field("ingested", pa.int64(), nullable=False),
        pa.field("unchanged", pa.int64(), nullable=False),  # same source already ingested
        pa.field("duplicates", pa.int64(), nullable=False),  # same bytes under another source
        pa.field("quarantined", pa.int64(), nullable=False),
        pa.field("fingerprint", pa.string(), nullable=False),  # dataset version after the run
        pa.field("total_images", pa.int64()),  # images in that version (retrain policy)
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

EMBEDDINGS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # image | text (of the composed caption) | identity
        pa.field("model_id", pa.string(), nullable=False),  # the clip role's weights (identity: the dino role's)
        pa.field("config_hash", pa.string(), nullable=False),  # models + recipe (+ caption config)
        pa.field("vector", pa.list_(pa.float32()), nullable=False),  # L2-normalized
        pa.field("embedded_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

NEAR_DUPLICATES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),  # the smaller id of the pair
        pa.field("other_id", pa.string(), nullable=False),
        pa.field("cosine", pa.float32(), nullable=False),  # of the image embeddings
        pa.field("threshold", pa.float32(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),  # of the image embeddings
        pa.field("found_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

# Derived snapshots: a re-run with the same `snapshot` (a hash of the inputs and settings)
# adds nothing; readers take the rows of the newest snapshot.
SUBJECT_GROUPS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("group_id", pa.string()),  # the subject, or "knn-..." for a proposed group
        pa.field("origin", pa.string(), nullable=False),  # label | knn | none (ungrouped)
        pa.field("snapshot", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

PAIRS = pa.schema(
    [
        pa.field("subject", pa.string(), nullable=False),  # group id from subject_groups
        pa.field("reference_id", pa.string(), nullable=False),  # encoder input
        pa.field("target_id", pa.string(), nullable=False),  # denoising target, != reference
        pa.field("snapshot", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

INDEXES = pa.schema(
    [
        pa.field("index_path", pa.string(), nullable=False),  # folder clip-retrieval back serves
        pa.field("fingerprint", pa.string(), nullable=False),  # embeddings version it covers
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("images", pa.int64(), nullable=False),  # rows of the image index
        pa.field("texts", pa.int64(), nullable=False),  # rows of the text index (0: none)
        pa.field("seconds", pa.float64(), nullable=False),  # build time
        pa.field("built_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

CAPTIONS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("captioner_id", pa.string(), nullable=False),  # the captioner role's weights
        pa.field("clip_id", pa.string(), nullable=False),  # the attribute scorer's weights
        pa.field("config_hash", pa.string(), nullable=False),  # caption settings + vocabulary
        pa.field("class_name", pa.string(), nullable=False),  # images.class_name, else top category
        pa.field("raw_caption", pa.string(), nullable=False),  # the VLM's own words
        pa.field("composed_caption", pa.string(), nullable=False),  # names class + attributes
        pa.field("object_caption", pa.string(), nullable=False),  # with the object placeholder
        # words in raw_caption / composed_caption (tamer.stats.word_count), counted once when
        # written so `tamer stats` does not split a million strings; null in older rows
        pa.field("raw_words", pa.int32()),
        pa.field("composed_words", pa.int32()),
        # top value of every attribute group; `named`: above threshold, so in the captions
        pa.field("attributes", pa.list_(pa.struct([
            pa.field("attribute", pa.string()), pa.field("value", pa.string()),
            pa.field("probability", pa.float32()), pa.field("named", pa.bool_())]))),
        pa.field("scores", pa.string(), nullable=False),  # JSON {group: {value: probability}}
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

# Train / held-out split per subject (storage/splits.py): written once when a subject is first
# seen, never rewritten; readers keep a subject's first row, so a concurrent double write is
# harmless.
SPLITS = pa.schema(
    [
        pa.field("subject", pa.string(), nullable=False),  # images.subject, else the image id
        pa.field("split", pa.string(), nullable=False),  # train | held_out
        pa.field("rule", pa.string(), nullable=False),  # meta | hash | fallback
        pa.field("fraction", pa.float32(), nullable=False),  # the hash rule's held-out share
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

# Training runs. Append-only like every table: a run writes a "running" row when it starts
# and a "completed"/"failed" row when it ends; readers take the newest `recorded_at` per run_id.
RUNS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # running | completed | failed
        pa.field("dataset_fingerprint", pa.string(), nullable=False),  # what it trained on
        pa.field("config_hash", pa.string(), nullable=False),  # of the train settings + profile
        pa.field("code_version", pa.string(), nullable=False),  # git commit, else package version
        pa.field("started_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("ended_at", pa.timestamp("us", tz="UTC")),  # null while running
        pa.field("step", pa.int64()),  # last checkpointed step
        pa.field("final_metrics", pa.string()),  # JSON: loss terms, lr, samples/s
        pa.field("checkpoint_uri", pa.string()),  # latest Ray Train checkpoint directory
        pa.field("pipeline_uri", pa.string()),  # exported TamerPipeline (completed runs)
        pa.field("error", pa.string()),  # why a failed run failed
        pa.field("config", pa.string(), nullable=False),  # the full resolved TamerConfig, JSON
        pa.field("recorded_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

# The table versions a training run read (one row per table, written when the run registers):
# its data plan, resume and evaluation read exactly these versions (Delta time travel).
RUN_VERSIONS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("table_name", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),  # -1: the table had no commit yet
        pa.field("recorded_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

# Events announced for a table version (flows/events.py): an event fires whenever the table
# advanced past the last version announced, so a run killed between its commit and its event
# is announced by the next run.
ANNOUNCEMENTS = pa.schema(
    [
        pa.field("event", pa.string(), nullable=False),  # e.g. tamer.dataset.committed
        pa.field("table_name", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),  # the version announced
        pa.field("announced_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

# A stage's watermark (storage/queries.py): every row of its source table (`images`; `captions`
# for text vectors) at `source_version` was done under the stage's key, or quarantined by it as
# undecodable, by a run that read the done table at `done_version` and quarantine at
# `quarantine_version` before it read the source. "What is left" then only reads the files
# committed after those versions.
STAGE_MARKS = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),  # caption, embed, embed-text
        pa.field("key", pa.string(), nullable=False),  # hash of the stage's done query and parameters
        pa.field("source_version", pa.int64(), nullable=False),
        pa.field("done_version", pa.int64(), nullable=False),  # -1: no commit yet
        pa.field("quarantine_version", pa.int64(), nullable=False),  # -1: not read
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("marked_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

# Per-step training metrics, committed by rank 0 together with each checkpoint; a restart
# may write a step twice, so readers keep the newest `recorded_at` per (run_id, step).
TRAIN_METRICS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("step", pa.int64(), nullable=False),
        pa.field("loss", pa.float64(), nullable=False),  # total, mean over ranks
        pa.field("diffusion", pa.float64(), nullable=False),
        pa.field("identity", pa.float64(), nullable=False),
        pa.field("lr", pa.float64(), nullable=False),
        pa.field("grad_norm", pa.float64()),  # before clipping; null when clipping is off
        pa.field("samples_per_s", pa.float64(), nullable=False),  # all ranks together
        pa.field("data_share", pa.float64(), nullable=False),  # step time spent waiting on data
        pa.field("recorded_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

# Decisions of the retrain gate (orchestration): one row per evaluation, so debouncing and
# "why did (not) it retrain" are answerable from the catalog.
RETRAIN_DECISIONS = pa.schema(
    [
        pa.field("decided_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("fingerprint", pa.string(), nullable=False),  # the dataset version judged
        pa.field("trained_fingerprint", pa.string()),  # of the latest completed run, if any
        pa.field("images", pa.int64(), nullable=False),
        pa.field("added", pa.int64(), nullable=False),  # images since the trained version
        pa.field("fraction", pa.float64(), nullable=False),
        pa.field("retrain", pa.bool_(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

# One row per generated image of an evaluation run: (method, subject, prompt, seed) and its
# metrics; per-subject costs repeat on every row of the subject. Metrics are null where they do
# not apply (clip_t of real images; a real subject with a single image has no other to compare).
EVAL_RESULTS = pa.schema(
    [
        pa.field("eval_run_id", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),  # a registered method: tasks/methods (ours, textual_inversion, ...)
        pa.field("subject", pa.string(), nullable=False),
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("prompt_index", pa.int32(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),  # with the class noun (what CLIP-T reads)
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("clip_i", pa.float64()),
        pa.field("clip_t", pa.float64()),
        pa.field("dino", pa.float64()),
        # synth subjects with a profile oracle: share of identity attributes read right, and of
        # the prompt's scene attributes (null elsewhere; added later: older files read null)
        pa.field("identity_acc", pa.float64()),
        pa.field("prompt_acc", pa.float64()),
        pa.field("prepare_s", pa.float64()),  # seconds to customize the method to the subject
        pa.field("generate_s", pa.float64()),  # seconds to generate this image
        pa.field("subject_bytes", pa.int64()),  # bytes the method stores per subject
        pa.field("image_path", pa.string(), nullable=False),  # relative to the report folder
        pa.field("data_source", pa.string(), nullable=False),  # dreambench:<dir> | synth:<dir> | dataset:<root>
        pa.field("dataset_fingerprint", pa.string(), nullable=False),  # of the evaluated subjects
        pa.field("model_run_id", pa.string()),  # training run evaluated; null: a given pipeline
        pa.field("pipeline_uri", pa.string()),  # the TamerPipeline evaluated (null without ours)
        pa.field("profile", pa.string(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),  # of the eval settings + profile
        pa.field("code_version", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

# Table name -> schema. Later stages register their tables here too.
TABLES: dict[str, pa.Schema] = {
    "images": IMAGES,
    "quarantine": QUARANTINE,
    "duplicates": DUPLICATES,
    "ingest_runs": INGEST_RUNS,
    "captions": CAPTIONS,
    "embeddings": EMBEDDINGS,
    "near_duplicates": NEAR_DUPLICATES,
    "subject_groups": SUBJECT_GROUPS,
    "pairs": PAIRS,
    "splits": SPLITS,
    "indexes": INDEXES,
    "runs": RUNS,
    "run_versions": RUN_VERSIONS,
    "announcements": ANNOUNCEMENTS,
    "stage_marks": STAGE_MARKS,
    "train_metrics": TRAIN_METRICS,
    "retrain_decisions": RETRAIN_DECISIONS,
    "eval_results": EVAL_RESULTS,
}

# What training runs and the orchestration write: never an input a run pins.
RUN_OUTPUT_TABLES: tuple[str, ...] = ("runs", "run_versions", "train_metrics",
                                      "retrain_decisions", "eval_results", "announcements",
                                      "stage_marks")

# Tables whose content defines the dataset version (fingerprint).
DATASET_TABLES: tuple[str, ...] = ("images",)


def schema_for(table: str) -> pa.Schema:
    try:
        return TABLES[table]
    except KeyError:
        raise KeyError(f"unknown table {table!r}; known: {sorted(TABLES)}") from None


def empty(table: str) -> pa.Table:
    return schema_for(table).empty_table()
