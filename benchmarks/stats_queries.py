"""`tamer stats` queries over 1,000,000 rows in every table they read (issue 2).

    python benchmarks/stats_queries.py [--rows 1000000] [--shards 20] [--repeats 5]

Writes synthetic rows as committed shards into every table a stats section reads (`images`
with tiny placeholder bytes, `quarantine`, `duplicates`, `captions` with six attributes per
row, `near_duplicates`, `subject_groups` and `pairs`, the last two over two snapshots), then
times the catalog refresh, the overview, the temporary table of latest captions (filled once
per `tamer stats`), every stats query through DuckDB, and all of it as `tamer stats` runs it
(`whole_stats`): median [min, max] of `--repeats` interleaved rounds after a warm-up round.
Target: each step < 1 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from benchmarks.common import (clocked, interleaved, print_summaries, summaries, summary,  # noqa: E402
                               timed, write_result)
from tamer.stats import word_count  # noqa: E402

ATTRIBUTES = {"color": ["red", "blue", "green", "black", "white", "yellow"],
              "material": ["metal", "plastic", "wood", "fabric", "glass"],
              "shape": ["round", "square", "long", "flat"],
              "texture": ["smooth", "striped", "dotted", "rough"],
              "category": ["toy", "bag", "can", "shoe", "cup"],
              "scene": ["indoors", "outdoors", "on a table", "on grass"]}
WORDS = np.array("a photo of small large object sitting standing near the window table floor "
                 "with bright dark light shadow beside wall grass sand snow".split())


def _ids(start: int, rows: int) -> list[str]:
    return [f"{i:064x}" for i in range(start, start + rows)]


def _times(rows: int, rng: np.random.Generator) -> pa.Array:
    base = int(dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp() * 1e6)
    return pa.array(base + rng.integers(0, 30 * 86_400 * 10**6, rows), pa.timestamp("us", tz="UTC"))


def _sentences(rows: int, rng: np.random.Generator, low: int, high: int) -> list[str]:
    lengths = rng.integers(low, high, rows)
    words = WORDS[rng.integers(0, len(WORDS), lengths.sum())]
    ends = np.cumsum(lengths)
    return [" ".join(words[e - n:e]) for e, n in zip(ends, lengths)]


def images(start: int, rows: int, rng: np.random.Generator) -> pa.Table:
    subjects = rng.integers(0, 20_000, rows)
    sides = rng.choice([64, 128, 256, 512, 1024], rows)
    return pa.table({
        "image_id": _ids(start, rows), "subject": [f"subject{s:05d}" for s in subjects],
        "class_name": [f"class{s % 200:03d}" for s in subjects],
        "source": [f"/data/{start + i}.jpg" for i in range(rows)],
        "source_kind": rng.choice(["folder", "tar", "parquet"], rows),
        "width": sides.astype("int32"), "height": sides.astype("int32"),
        "format": rng.choice(["JPEG", "PNG", "WEBP"], rows, p=[0.7, 0.25, 0.05]),
        "mode": np.full(rows, "RGB"), "num_bytes": rng.integers(1_000, 500_000, rows),
        "flags": [["tiny"] if s == 64 else [] for s in sides],
        "image": [b""] * rows, "mask": pa.nulls(rows, pa.binary()),
        "text": pa.nulls(rows, pa.string()), "meta": pa.nulls(rows, pa.string()),
        "ingested_at": _times(rows, rng)})


def quarantine(start: int, rows: int, rng: np.random.Generator) -> pa.Table:
    return pa.table({
        "stage": rng.choice(["ingest", "caption", "embed"], rows, p=[0.8, 0.1, 0.1]),
        "source": [f"/bad/{start + i}.jpg" for i in range(rows)],
        "content_sha256": _ids(start, rows),
        "reason": rng.choice(["truncated", "not_an_image", "too_large", "unsafe_member",
                              "decompression_bomb", "empty"], rows),
        "detail": ["synthetic"] * rows, "quarantined_at": _times(rows, rng)})


def duplicates(start: int, rows: int, rng: np.random.Generator) -> pa.Table:
    kept = rng.integers(0, 500_000, rows)
    return pa.table({"image_id": [f"{k:064x}" for k in kept],
                     "source": [f"/copy/{start + i}.jpg" for i in range(rows)],
                     "kept_source": [f"/data/{k}.jpg" for k in kept], "seen_at": _times(rows, rng)})


def captions(start: int, rows: int, rng: np.random.Generator) -> pa.Table:
    per_row = len(ATTRIBUTES)
    names = np.tile(np.array(list(ATTRIBUTES)), rows)
    values = [ATTRIBUTES[n][i % len(ATTRIBUTES[n])]
              for n, i in zip(names, rng.integers(0, 6, rows * per_row))]
    probability = rng.random(rows * per_row).astype(np.float32)
    attributes = pa.ListArray.from_arrays(
        pa.array(np.arange(0, rows * per_row + 1, per_row, dtype=np.int32)),
        pa.StructArray.from_arrays(
            [pa.array(names), pa.array(values), pa.array(probability), pa.array(probability > 0.5)],
            ["attribute", "value", "probability", "named"]))
    raw = _sentences(rows, rng, 4, 16)
    composed = [f"a photo of a red thing. {r}" for r in raw]
    config = rng.choice(["cfg-old", "cfg-new"], rows)  # two caption configs; the newest is read
    return pa.table({
        "image_id": _ids(start, rows), "captioner_id": ["tiny:captioner"] * rows,
        "clip_id": ["tiny:clip"] * rows, "config_hash": config,
        "class_name": [f"class{s % 200:03d}" for s in rng.integers(0, 20_000, rows)],
        "raw_caption": raw, "composed_caption": composed,
        "object_caption": [f"a photo of <obj>. {r}" for r in raw],
        "raw_words": [word_count(r) for r in raw], "composed_words": [word_count(c) for c in composed],
        "attributes": attributes,
        "scores": ["{}"] * rows,
        "created_at": _times(rows, rng)}).cast(_schema("captions"))


def near_duplicates(start: int, rows: int, rng: np.random.Generator) -> pa.Table:
    first = rng.integers(0, 1_000_000, rows)
    return pa.table({
        "image_id": [f"{i:064x}" for i in first],
        "other_id": [f"{i + 1 + j:064x}" for i, j in zip(first, rng.integers(0, 50, rows))],
        "cosine": (0.95 + 0.05 * rng.random(rows)).astype(np.float32),
        "threshold": np.full(rows, 0.95, np.float32), "config_hash": ["emb"] * rows,
        "found_at": _times(rows, rng)})


def subject_groups(start: int, rows: int, rng: np.random.Generator) -> pa.Table:
    origin = rng.choice(["label", "knn", "none"], rows, p=[0.7, 0.2, 0.1])
    groups = rng.integers(0, 20_000, rows)
    return pa.table({
        "image_id": _ids(start, rows),
        "group_id": [None if o == "none" else f"{o}-{g:05d}" for o, g in zip(origin, groups)],
        "origin": origin, "snapshot": rng.choice(["snap-1", "snap-2"], rows),
        "created_at": _times(rows, rng)})


def pairs(start: int, rows: int, rng: np.random.Generator) -> pa.Table:
    return pa.table({
        "subject": [f"subject{s:05d}" for s in rng.integers(0, 20_000, rows)],
        "reference_id": _ids(start, rows), "target_id": _ids(start + rows, rows),
        "snapshot": rng.choice(["snap-1", "snap-2"], rows), "created_at": _times(rows, rng)})


FILLERS: dict[str, Callable[[int, int, np.random.Generator], pa.Table]] = {
    "images": images, "quarantine": quarantine, "duplicates": duplicates, "captions": captions,
    "near_duplicates": near_duplicates, "subject_groups": subject_groups, "pairs": pairs}


def _schema(table: str) -> pa.Schema:
    from storage.schemas import TABLES

    return TABLES[table]


def tables_read(sql: str) -> set[str]:
    """The catalog tables a query names after FROM or JOIN (the stats' temporary table of
    latest captions read as the query that fills it)."""
    from tamer.stats import LATEST_CAPTIONS, LATEST_TABLE

    sql = re.sub(rf"\b{LATEST_TABLE}\b", LATEST_CAPTIONS, sql)
    return set(re.findall(r"\b(?:FROM|JOIN)\s+([a-z_]+)", sql)) - {"SELECT"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in every table")
    parser.add_argument("--shards", type=int, default=20, help="shards per table")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from storage.catalog import connect
    from storage.shards import ShardStore
    from tamer.stats import SECTIONS, collect, latest_table, overview

    missing = set().union(*(tables_read(s.sql) for s in SECTIONS)) - set(FILLERS)
    if missing:
        raise SystemExit(f"stats reads tables this benchmark does not fill: {sorted(missing)}")
    folder = tempfile.mkdtemp(prefix="tamer-bench-stats-")
    store = ShardStore(folder, row_group_rows=100_000)
    rng = np.random.default_rng(0)
    per_shard = args.rows // args.shards

    def fill() -> None:
        for table, filler in FILLERS.items():
            for i in range(args.shards):
                store.write(table, filler(i * per_shard, per_shard, rng))

    write_s, _ = timed(fill)
    con = connect(store)
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in FILLERS}
    contenders = {"catalog_refresh": clocked(lambda: connect(store).close()),
                  "overview": clocked(lambda: overview(store, con)),
                  "latest_captions": clocked(lambda: latest_table(con)),  # once per `tamer stats`
                  "whole_stats": clocked(lambda: collect(store, con))}
    latest_table(con)
    for section in SECTIONS:
        contenders[section.key] = clocked(lambda s=section: con.execute(s.sql).fetchall())
    seconds = interleaved(contenders, repeats=args.repeats)
    con.close()
    medians = {name: summary(values)["median"] for name, values in seconds.items() if name != "whole_stats"}
    slowest = max(medians, key=medians.get)
    print(f"rows per table: {counts} ({args.shards} shards each, written in {write_s:.1f} s); "
          f"seconds over {args.repeats} interleaved rounds:")
    print_summaries(seconds, "s")
    print(f"slowest (median): {slowest} {medians[slowest]:.3f} s (target: each < 1 s)")
    write_result("stats_queries", {
        "rows": counts, "shards": args.shards, "repeats": args.repeats,
        "seconds": summaries(seconds),
        "slowest": slowest, "all_under_1s": all(m < 1 for m in medians.values())})
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
