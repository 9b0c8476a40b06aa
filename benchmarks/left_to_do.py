"""What is left to do, before and after it became one DuckDB anti-join (issue 15, item 7).

    python benchmarks/left_to_do.py [--sizes 10000 100000 1000000] [--new 100] [--repeats 5]
    python benchmarks/left_to_do.py --quick      # seconds: tiny sizes, for the test suite

For each size N: a root whose `images` (tiny placeholder bytes), `captions` and `embeddings`
(image and text vectors of 8 dimensions) hold N rows, all done under the tiny profile's keys,
in files of `--rows-per-file` rows. Timed, interleaved after a warm-up round:
- `caption_noop_*`, `embed_noop_*`: the stage itself with nothing left (a re-run), its "what is
  left" being the old Python scans (`before`) or `storage.queries` (`after`: the warm-up run
  answers in full and records the stage's mark, as the first run on a root does; the timed
  runs read from the mark);
- then `--new` images nobody has done are committed, and `caption_left_*`, `embed_left_*`
  time the "what is left" computation alone. Before and after must return the same ids.
Then the latency of one commit to `captions` and to the keyed `images` (its dedupe included),
each from a fresh store as a scheduled run's one commit, on tables with 1 and with `--versions`
(default 1,000) existing versions (and as many data files).
Writes `benchmarks/results/left_to_do.json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmarks import stats_queries  # noqa: E402
from benchmarks.common import (interleaved, parse_quick, print_summaries, summaries, summary,  # noqa: E402
                               timed, write_result)

PROFILE = "tiny"
DIM = 8  # vector width: the scans read ids and keys, never vectors


# ---- the "before": the Python scans the stages used until storage/queries.py ----------------
def images_left_before(store, stage: str, done, params: dict[str, str]):
    """The old scan: done ids and quarantine into Python sets, then every images file's ids."""
    from storage.queries import ImagesLeft

    rows = store.read(done.table, ["image_id", *_keys(done.table)]).to_pylist()
    finished = {row["image_id"] for row in rows if _matches(done.table, row, params)}
    quarantined = store.read("quarantine", ["stage", "content_sha256", "reason"]).to_pylist()
    finished |= {row["content_sha256"] for row in quarantined
                 if row["stage"] == stage and row["reason"] == "undecodable"}
    files = {}
    for path in store.shard_paths("images"):
        with store.fs.open(path, "rb") as handle:
            ids = pq.read_table(handle, columns=["image_id"]).column("image_id").to_pylist()
        missing = [image_id for image_id in ids if image_id not in finished]
        if missing:
            files[path] = missing
    return ImagesLeft(files, store.row_count("images"))


def _keys(table: str) -> list[str]:
    return ["captioner_id", "clip_id", "config_hash"] if table == "captions" else [
        "kind", "config_hash"]


def _matches(table: str, row: dict, params: dict[str, str]) -> bool:
    if table == "captions":
        return all(row[key] == params[key] for key in _keys(table))
    return row["kind"] == "image" and row["config_hash"] == params["config_hash"]


def texts_left_before(store, text_hash: Callable[[str], str], key: str = ""):
    """The old scan: every embedding key and every caption into Python, last caption wins."""
    from storage.queries import TextsLeft

    done = {(r["image_id"], r["kind"], r["config_hash"]) for r in
            store.read("embeddings", ["image_id", "kind", "config_hash"]).to_pylist()}
    rows = store.read("captions", ["image_id", "config_hash", "composed_caption"]).to_pylist()
    latest = {r["image_id"]: (r["composed_caption"], r["config_hash"])
              for r in rows if r["composed_caption"]}
    return TextsLeft([{"image_id": i, "text": text, "config_hash": text_hash(h)}
                      for i, (text, h) in sorted(latest.items()) if (i, "text", text_hash(h)) not in done])


@contextmanager
def old_scans() -> Iterator[None]:
    """The caption and embed stages with their "what is left" swapped for the old scans."""
    with mock.patch("tasks.caption.images_left", images_left_before), \
            mock.patch("tasks.embed.images_left", images_left_before), \
            mock.patch("tasks.embed.texts_left", texts_left_before):
        yield


# ---- the stages' keys and the synthetic rows ------------------------------------------------
@functools.cache
def keys() -> dict[str, str]:
    """The tiny profile's caption key and embedding model, as the stages compute them."""
    from model import embedding
    from model.profiles import load_profile
    from tamer.config import CaptionSettings
    from tasks.caption import caption_config_hash, load_vocabulary, model_id, vocabulary_path
    from tasks.embed import image_config_hash

    profile, settings = load_profile(PROFILE), CaptionSettings()
    return {"captioner_id": model_id(profile, "captioner"), "clip_id": model_id(profile, "clip"),
            "config_hash": caption_config_hash(settings, load_vocabulary(vocabulary_path(settings))),
            "model_id": embedding.model_id(profile), "image_hash": image_config_hash(profile)}


def caption_rows(start: int, rows: int) -> pa.Table:
    from storage.schemas import CAPTIONS
    from tamer.stats import word_count

    k = keys()
    ids = stats_queries._ids(start, rows)
    return pa.table({
        "image_id": ids, "captioner_id": [k["captioner_id"]] * rows,
        "clip_id": [k["clip_id"]] * rows, "config_hash": [k["config_hash"]] * rows,
        "class_name": ["thing"] * rows, "raw_caption": ["a thing"] * rows,
        "composed_caption": ["a photo of a thing"] * rows, "object_caption": ["<obj>"] * rows,
        "raw_words": [word_count("a thing")] * rows, "composed_words": [word_count("a photo of a thing")] * rows,
        "attributes": pa.nulls(rows, CAPTIONS.field("attributes").type),
        "scores": ["{}"] * rows, "created_at": [dt.datetime.now(dt.UTC)] * rows}).cast(CAPTIONS)


def vector_rows(start: int, rows: int, kind: str) -> pa.Table:
    from storage.schemas import EMBEDDINGS
    from tasks.embed import config_hash

    k = keys()
    hash_ = k["image_hash"] if kind == "image" else config_hash(k["model_id"], k["config_hash"])
    vectors = np.zeros((rows, DIM), np.float32)
    return pa.table({
        "image_id": stats_queries._ids(start, rows), "kind": [kind] * rows,
        "model_id": [k["model_id"]] * rows, "config_hash": [hash_] * rows,
        "vector": pa.ListArray.from_arrays(np.arange(0, rows * DIM + 1, DIM, dtype=np.int32),
                                           pa.array(vectors.ravel())),
        "embedded_at": [dt.datetime.now(dt.UTC)] * rows}).cast(EMBEDDINGS)


def filled_root(folder: str, size: int, rows_per_file: int):
    """A root holding `size` images, each captioned and embedded (image and text)."""
    from storage.shards import ShardStore

    store = ShardStore(folder)
    rng = np.random.default_rng(size)
    for start in range(0, size, rows_per_file):
        rows = min(rows_per_file, size - start)
        store.write("images", stats_queries.images(start, rows, rng))
        store.write("captions", caption_rows(start, rows))
        store.write("embeddings", vector_rows(start, rows, "image"))
        store.write("embeddings", vector_rows(start, rows, "text"))
    store.write("quarantine", stats_queries.quarantine(size, 100, rng))  # other ids
    return store


# ---- measurements -----------------------------------------------------------------------------
def measure_size(size: int, new: int, rows_per_file: int, repeats: int) -> dict:
    """No-op stages, then "what is left" after `new` images arrive, before vs after."""
    from storage.queries import CAPTIONED, EMBEDDED, images_left, texts_left
    from tasks.caption import caption_images
    from tasks.embed import config_hash, embed_dataset

    folder = tempfile.mkdtemp(prefix=f"tamer-bench-left-{size}-")
    store = filled_root(folder, size, rows_per_file)

    def noop(stage: Callable, before: bool, did: Callable[[object], int]) -> Callable[[], float]:
        def run() -> float:
            with old_scans() if before else nullcontext():
                seconds, report = timed(lambda: stage(store, PROFILE))
            if did(report):
                raise SystemExit(f"size {size}: {stage.__name__} found work in a full root")
            return seconds
        return run

    captioned, embedded = (lambda r: r.todo), (lambda r: r.images + r.texts)
    noops = interleaved({"caption_noop_before": noop(caption_images, True, captioned),
                         "caption_noop_after": noop(caption_images, False, captioned),
                         "embed_noop_before": noop(embed_dataset, True, embedded),
                         "embed_noop_after": noop(embed_dataset, False, embedded)},
                        repeats=repeats)

    store.write("images", stats_queries.images(size, new, np.random.default_rng(0)))
    k = keys()
    caption_params = {key: k[key] for key in ("captioner_id", "clip_id", "config_hash")}
    embed_params = {"config_hash": config_hash(k["model_id"])}
    text_hash = functools.partial(config_hash, k["model_id"])
    answers: dict[str, object] = {}

    def left(name: str, function: Callable[[], object]) -> Callable[[], float]:
        def run() -> float:
            seconds, answers[name] = timed(function)
            return seconds
        return run

    lefts = interleaved({
        "caption_left_before": left("caption_before", lambda: images_left_before(
            store, "caption", CAPTIONED, caption_params).files),
        "caption_left_after": left("caption_after", lambda: images_left(
            store, "caption", CAPTIONED, caption_params).files),
        "embed_left_before": left("embed_before", lambda: (images_left_before(
            store, "embed", EMBEDDED, embed_params).files, texts_left_before(store, text_hash).rows)),
        "embed_left_after": left("embed_after", lambda: (images_left(
            store, "embed", EMBEDDED, embed_params).files, texts_left(store, text_hash, k["model_id"]).rows)),
    }, repeats=repeats)
    agree = (_same(answers["caption_before"], answers["caption_after"])
             and _same(*answers["embed_before"][:1], *answers["embed_after"][:1])
             and answers["embed_before"][1] == answers["embed_after"][1])
    found = sum(len(ids) for ids in answers["caption_after"].values())
    shutil.rmtree(folder, ignore_errors=True)
    if not agree or found != new:
        raise SystemExit(f"size {size}: before and after disagree, or {found} left != {new}")
    return {**noops, **lefts}


def _same(files: dict[str, list[str]], other: dict[str, list[str]]) -> bool:
    """The same files with the same ids to do (in any order within a file)."""
    return {path: sorted(ids) for path, ids in files.items()} == {
        path: sorted(ids) for path, ids in other.items()}


def measure_commits(versions: int, repeats: int) -> dict:
    """One commit to `captions` and to the keyed `images` on tables of `versions` versions."""
    from storage import delta
    from storage.schemas import IMAGES
    from storage.shards import DEFAULT_ROW_GROUP_ROWS, ShardStore

    folder = tempfile.mkdtemp(prefix=f"tamer-bench-commit-{versions}-")
    store = ShardStore(folder)
    rng = np.random.default_rng(versions)
    for i in range(versions):  # set-up: plain appends (the dedupe is what is timed below)
        delta.commit(store.location, "images", stats_queries.images(i, 1, rng), schema=IMAGES,
                     metadata={}, row_group_rows=DEFAULT_ROW_GROUP_ROWS)
        store.write("captions", caption_rows(i, 1))
    counter = iter(range(versions, 10**9))

    # Each append from a fresh store, as a scheduled run's single commit: cold caches.
    def captions() -> float:
        return timed(lambda: ShardStore(folder).write("captions", caption_rows(next(counter), 1)))[0]

    def images() -> float:
        return timed(lambda: ShardStore(folder).write("images", stats_queries.images(
            next(counter), 1, rng)))[0]

    seconds = interleaved({f"commit_captions_at_{versions}_versions": captions,
                           f"commit_images_at_{versions}_versions": images}, repeats=repeats)
    shutil.rmtree(folder, ignore_errors=True)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--new", type=int, default=100, help="new images left to do")
    parser.add_argument("--rows-per-file", type=int, default=10_000)
    parser.add_argument("--versions", type=int, default=1_000)
    args = parse_quick(parser, argv, dict(sizes=[100, 400], new=10, rows_per_file=100, versions=10, repeats=1),
                       "seconds: sizes 100 and 400, files of 100 rows, 10 versions, 1 round")

    seconds: dict[str, dict[str, list[float]]] = {}
    for size in args.sizes:
        print(f"{size:,} rows ({args.new} new), seconds over {args.repeats} interleaved rounds:")
        seconds[str(size)] = measure_size(size, args.new, args.rows_per_file, args.repeats)
        print_summaries(seconds[str(size)], "s")
    commits: dict[str, list[float]] = {}
    for versions in (1, args.versions):
        commits.update(measure_commits(versions, args.repeats))
    print("one commit, seconds:")
    print_summaries(commits, "s")
    medians = {size: {name: summary(values)["median"] for name, values in figures.items()}
               for size, figures in seconds.items()}
    smallest, largest = str(min(args.sizes)), str(max(args.sizes))
    growth = {name: medians[largest][name] / medians[smallest][name]
              for name in medians[largest]} if smallest != largest else {}
    if growth:
        print(f"growth {smallest} -> {largest} rows (median ratio): "
              + ", ".join(f"{name} x{ratio:.1f}" for name, ratio in growth.items()))
    # a quick run never replaces the committed figures: it writes where asked, else to a temp folder
    quick_out = None if not args.quick or os.environ.get("TAMER_BENCH_RESULTS") else Path(tempfile.gettempdir())
    write_result("left_to_do", {
        "sizes": args.sizes, "new": args.new, "rows_per_file": args.rows_per_file,
        "versions": args.versions, "repeats": args.repeats, "quick": args.quick,
        "seconds": {size: summaries(figures)
                    for size, figures in seconds.items()},
        "commit_seconds": summaries(commits),
        "growth": growth, "before_and_after_agree": True}, quick_out)


if __name__ == "__main__":
    main()
