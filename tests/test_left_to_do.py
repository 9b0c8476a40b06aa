"""What is left to do and the latest rows, as named DuckDB queries (storage/queries.py), on
hand-made rows: every rule of the old Python scans, pinned versions, and bad input."""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa
import pytest

from storage import duck, queries
from storage.pinned import PinnedStore
from storage.schemas import CAPTIONS, EMBEDDINGS
from storage.shards import ShardStore
from test_storage import image_rows

KEY = {"captioner_id": "cap", "clip_id": "clip", "config_hash": "cfg"}
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def caption_rows(ids: list[str], minutes: int, text: str = "a thing", **key) -> pa.Table:
    key = {**KEY, **key}
    return pa.Table.from_pylist([
        {"image_id": i, **key, "class_name": "thing", "raw_caption": "raw",
         "composed_caption": text, "object_caption": "<obj>", "attributes": [], "scores": "{}",
         "created_at": T0 + dt.timedelta(minutes=minutes)} for i in ids], CAPTIONS)


def quarantined(stage: str, image_id: str | None, reason: str = "undecodable") -> pa.Table:
    return pa.Table.from_pylist([{"stage": stage, "source": "s", "content_sha256": image_id,
                                  "reason": reason, "detail": "", "quarantined_at": T0}])


def vector_rows(ids: list[str], kind: str, config: str, minutes: int, value: float,
                model: str = "m") -> pa.Table:
    return pa.Table.from_pylist([
        {"image_id": i, "kind": kind, "model_id": model, "config_hash": config,
         "vector": [value, 0.0], "embedded_at": T0 + dt.timedelta(minutes=minutes)}
        for i in ids], EMBEDDINGS)


def three_files(root: str) -> ShardStore:
    """A root whose images are three files of 3 ids each."""
    store = ShardStore(root)
    for start in (0, 3, 6):
        store.write("images", image_rows(3, start=start))
    return store


@pytest.fixture
def store(tmp_path) -> ShardStore:
    return three_files(str(tmp_path / "root"))


@pytest.fixture(params=["local", "s3"])
def any_store(request, tmp_path) -> ShardStore:
    """Local, and on a real S3 endpoint (views name files by URL there)."""
    return three_files(str(tmp_path / "root") if request.param == "local"
                       else request.getfixturevalue("s3_root"))


def ids(n: int) -> list[str]:
    return [f"id{i:05d}" for i in range(n)]


def test_captions_left_is_images_minus_done_under_the_key_minus_undecodable(any_store):
    store = any_store
    store.write("captions", caption_rows(ids(3), 0))  # the whole first file: omitted
    store.write("captions", caption_rows(["id00003"], 1, config_hash="other"))  # another key
    store.write("captions", caption_rows(["id00004"], 2))
    store.write("quarantine", quarantined("caption", "id00005"))
    store.write("quarantine", quarantined("embed", "id00006"))  # another stage's: still to do
    store.write("quarantine", quarantined("caption", "id00007", reason="caption_failed"))
    store.write("quarantine", quarantined("ingest", None, reason="empty"))  # no id at all
    left = queries.images_left(store, "caption", queries.CAPTIONED, KEY)
    first, second, third = store.shard_paths("images")
    assert left.files == {second: ["id00003"], third: ["id00006", "id00007", "id00008"]}
    assert (left.count, left.total) == (4, 9)


def test_image_vectors_left_ignore_text_vectors_and_other_hashes(store):
    store.write("embeddings", vector_rows(ids(2), "image", "h", 0, 1.0))
    store.write("embeddings", vector_rows(["id00002"], "text", "h", 0, 1.0))
    store.write("embeddings", vector_rows(["id00003"], "image", "old", 0, 1.0))
    store.write("quarantine", quarantined("embed", "id00008"))
    left = queries.images_left(store, "embed", queries.EMBEDDED, {"config_hash": "h"})
    assert sorted(i for found in left.files.values() for i in found) == [
        f"id{i:05d}" for i in (2, 3, 4, 5, 6, 7)]


def test_an_empty_root_has_nothing_left_and_no_latest_rows(tmp_path):
    empty = ShardStore(str(tmp_path / "empty"))
    left = queries.images_left(empty, "caption", queries.CAPTIONED, KEY)
    assert (left.files, left.total) == ({}, 0)
    assert queries.latest_captions(empty, ["image_id"]).num_rows == 0
    assert queries.texts_left(empty, lambda h: h).rows == []
    assert queries.latest_snapshot(empty, "pairs") == []


def test_latest_caption_is_each_images_newest_with_text(store):
    store.write("captions", caption_rows(["id00000", "id00001"], 5, "new", config_hash="b"))
    store.write("captions", caption_rows(["id00000", "id00001", "id00002"], 1, "old"))
    store.write("captions", caption_rows(["id00001"], 9, ""))  # no composed caption: ignored
    latest = queries.latest_captions(store, ["image_id", "composed_caption", "config_hash"])
    assert sorted(latest.to_pylist(), key=lambda r: r["image_id"]) == [
        {"image_id": "id00000", "composed_caption": "new", "config_hash": "b"},
        {"image_id": "id00001", "composed_caption": "new", "config_hash": "b"},
        {"image_id": "id00002", "composed_caption": "old", "config_hash": "cfg"}]
    assert latest.schema.field("image_id").type == pa.string()


def test_stats_count_the_words_and_lengths_of_each_images_latest_caption_only(store):
    from storage.catalog import connect
    from tamer import stats

    def raw(image_id: str, minutes: int, text: str) -> pa.Table:
        rows = caption_rows([image_id], minutes).to_pylist()
        return pa.Table.from_pylist([{**rows[0], "raw_caption": text}], CAPTIONS)

    store.write("captions", raw("id00000", 1, "Zebra zebra zebra zebra zebra"))  # superseded below
    store.write("captions", raw("id00000", 2, "A dog's bone,\tnear THE wall-side 42x cafe"))
    store.write("captions", raw("id00001", 1, "  dogs:dog!! the wall  "))
    with connect(store) as con:
        result = stats.collect(store, con)
    # words are the runs of a-z in the lower-cased text, longer than 2 letters, stop words out
    assert {r["word"]: r["uses"] for r in result["caption_words"]} == {
        "dog": 2, "bone": 1, "near": 1, "wall": 2, "side": 1, "cafe": 1, "dogs": 1}
    lengths = {r["kind"]: (r["captions"], r["min"], r["max"]) for r in result["caption_lengths"]}
    assert lengths == {"raw": (2, 3, 7), "composed": (2, 2, 2)}  # space-separated, as written


HOSTILE_TEXTS = ["", " ", "one", "  two  words ", "tab\tinside word", "double  space", "a\nb c",
                 "ünïcödé wörds ✓", " lead", "trail ", "x" * 500]


def test_stored_word_counts_follow_the_rule_stats_apply_to_older_rows():
    from tamer.stats import WORDS_SQL, word_count

    with duckdb.connect() as con:
        by_sql = [con.execute(f"SELECT {WORDS_SQL.format('?')}", [text]).fetchone()[0] for text in HOSTILE_TEXTS]
    assert [word_count(text) for text in HOSTILE_TEXTS] == by_sql


def test_stats_read_stored_word_counts_and_count_rows_older_than_the_columns(store):
    from storage import delta
    from storage.catalog import connect
    from tamer import stats

    def captions(image_id: str, minutes: int, raw: str, composed: str, **counts) -> pa.Table:
        rows = caption_rows([image_id], minutes, composed).to_pylist()
        return pa.Table.from_pylist([{**rows[0], "raw_caption": raw, **counts}], CAPTIONS)

    # a captions table written before the word-count columns existed: its files lack them
    old = pa.schema([f for f in CAPTIONS if not f.name.endswith("_words")], metadata=CAPTIONS.metadata)
    delta.commit(store.location, "captions", captions("id00000", 1, "three raw words", "two words").select(old.names)
                 .cast(old), schema=old, metadata={}, row_group_rows=100)
    with connect(store) as con:
        before = stats.collect(store, con)
    assert {r["kind"]: (r["min"], r["max"]) for r in before["caption_lengths"]} == {"raw": (3, 3), "composed": (2, 2)}
    # newer rows carry their counts (the table widens); stats take them as stored
    store.write("captions", captions("id00001", 2, "raw", "composed", raw_words=7, composed_words=9))
    with connect(store) as con:
        after = stats.collect(store, con)
    assert {r["kind"]: (r["captions"], r["min"], r["max"]) for r in after["caption_lengths"]} == {
        "raw": (2, 3, 7), "composed": (2, 2, 9)}
    assert {r["words"]: r["captions"] for r in after["caption_length_histogram"]} == {"0-4": 1, "5-9": 1}


def test_texts_left_hash_each_latest_caption_and_skip_those_embedded(any_store):
    store = any_store
    store.write("captions", caption_rows(["id00000", "id00001", "id00002"], 1, "old"))
    store.write("captions", caption_rows(["id00001"], 5, "new", config_hash="b"))
    store.write("embeddings", vector_rows(["id00000"], "text", "t-cfg", 0, 1.0))
    store.write("embeddings", vector_rows(["id00001"], "text", "t-cfg", 0, 1.0))  # stale hash
    store.write("embeddings", vector_rows(["id00002"], "image", "t-cfg", 0, 1.0))  # an image
    assert queries.texts_left(store, lambda caption_hash: f"t-{caption_hash}").rows == [
        {"image_id": "id00001", "text": "new", "config_hash": "t-b"},
        {"image_id": "id00002", "text": "old", "config_hash": "t-cfg"}]


def test_latest_embeddings_per_image_for_one_kind_and_model(store):
    store.write("embeddings", vector_rows(["id00001", "id00000"], "image", "a", 0, 1.0))
    store.write("embeddings", vector_rows(["id00001"], "image", "b", 5, 2.0))
    store.write("embeddings", vector_rows(["id00000"], "text", "c", 9, 3.0))
    store.write("embeddings", vector_rows(["id00000"], "image", "d", 9, 4.0, model="other"))
    latest = queries.latest_embeddings(store, "image", "m", ["image_id", "vector"]).to_pylist()
    assert latest == [{"image_id": "id00000", "vector": [1.0, 0.0]},
                      {"image_id": "id00001", "vector": [2.0, 0.0]}]


def test_latest_snapshot_and_bad_input(store):
    def pairs(snapshot: str, minutes: int, n: int) -> pa.Table:
        return pa.Table.from_pylist([
            {"subject": "s", "reference_id": f"r{i}", "target_id": f"t{i}", "snapshot": snapshot,
             "created_at": T0 + dt.timedelta(minutes=minutes)} for i in range(n)])

    store.write("pairs", pairs("new", 5, 2))
    store.write("pairs", pairs("old", 1, 3))  # committed later, made earlier
    rows = queries.latest_snapshot(store, "pairs", ["reference_id", "snapshot"])
    assert sorted(rows, key=lambda r: r["reference_id"]) == [
        {"reference_id": "r0", "snapshot": "new"}, {"reference_id": "r1", "snapshot": "new"}]
    with pytest.raises(ValueError, match="not a snapshot table"):
        queries.latest_snapshot(store, "images")
    with pytest.raises(KeyError):
        queries.latest_captions(store, ["image_id", "no_such_column"])
    with pytest.raises(KeyError):
        queries.latest_snapshot(store, "no_such_table")


def test_a_pinned_store_answers_as_of_its_versions(store):
    pinned = PinnedStore(store, {"images": store.version("images"), "captions": -1})
    store.write("images", image_rows(2, start=9))
    store.write("captions", caption_rows(ids(9), 0))
    assert queries.images_left(pinned, "caption", queries.CAPTIONED, KEY).count == 9
    assert queries.images_left(store, "caption", queries.CAPTIONED, KEY).count == 2
    assert queries.latest_captions(pinned, ["image_id"]).num_rows == 0


def test_what_is_left_never_reads_the_image_bytes(tmp_path):
    """Every images file's bytes column is overwritten in place with garbage (same size, so the
    log still matches): reading that column fails, deciding what is left does not."""
    import pyarrow.parquet as pq

    from storage.shards import BrokenTable

    store = three_files(str(tmp_path / "root"))
    for path in store.shard_paths("images"):
        metadata = pq.read_metadata(path)
        column = metadata.schema.names.index("image")
        with open(path, "r+b") as handle:
            for group in range(metadata.num_row_groups):
                chunk = metadata.row_group(group).column(column)
                handle.seek(chunk.dictionary_page_offset or chunk.data_page_offset)
                handle.write(b"\xff" * chunk.total_compressed_size)
    with pytest.raises(BrokenTable):
        store.read("images", ["image_id", "image"])
    store.write("captions", caption_rows(["id00008"], 0))
    left = queries.images_left(store, "caption", queries.CAPTIONED, KEY)
    assert (left.count, left.total) == (8, 9)


def test_an_embed_with_nothing_left_loads_no_model_and_starts_no_ray(store, monkeypatch):
    from model import embedding
    from model.profiles import load_profile
    from tamer.config import EmbedSettings
    from tasks import embed

    model = embedding.model_id(load_profile("tiny"))
    store.write("embeddings", vector_rows(ids(9), "image", embed.image_config_hash(load_profile("tiny")), 0, 1.0,
                                          model=model))
    monkeypatch.setattr(embed.Encoder, "__init__", lambda *args: pytest.fail("model loaded"))
    monkeypatch.setattr("tasks.ray_runtime.ensure_ray", lambda *args: pytest.fail("Ray started"))
    report = embed.embed_dataset(store, "tiny", EmbedSettings(executor="ray", local_below=0))
    assert (report.images, report.texts, report.skipped) == (0, 0, 9)
    assert report.fingerprint == store.fingerprint(("embeddings",))


def _garble(paths: list[str]) -> None:
    """Overwrite files in place with garbage of the same size: reading one fails."""
    for path in paths:
        with open(path, "r+b") as handle:
            size = handle.seek(0, 2)
            handle.seek(0)
            handle.write(b"\xff" * size)


def test_after_a_mark_only_files_committed_since_are_read(store):
    """Everything done and marked, then new images and a caption for one of them: the answer
    is the new images minus that one, and it holds with every older file garbled."""
    store.write("captions", caption_rows(ids(9), 0))
    first = queries.images_left(store, "caption", queries.CAPTIONED, KEY)
    assert first.count == 0 and first.reading.since is None
    queries.record_mark(store, first, "run-1")
    old = store.shard_paths("images") + store.shard_paths("captions")
    store.write("images", image_rows(3, start=9))
    store.write("captions", caption_rows(["id00010"], 5))
    store.write("quarantine", quarantined("caption", "id00011"))
    full = queries.images_left(store, "caption", queries.CAPTIONED, KEY)
    _garble(old)
    left = queries.images_left(store, "caption", queries.CAPTIONED, KEY)
    assert left.reading.since == first.reading.at and left.files == full.files
    assert list(left.files.values()) == [["id00009"]] and left.total == 12
    with pytest.raises(duckdb.Error):  # another key has no mark: it must read the garbled files
        queries.images_left(store, "caption", queries.CAPTIONED, {**KEY, "config_hash": "other"})


def test_a_mark_is_not_moved_by_a_run_over_an_unchanged_root(store):
    store.write("captions", caption_rows(ids(9), 0))
    queries.record_mark(store, queries.images_left(store, "caption", queries.CAPTIONED, KEY), "run-1")
    versions = store.version("stage_marks")
    again = queries.images_left(store, "caption", queries.CAPTIONED, KEY)
    queries.record_mark(store, again, "run-2")
    assert again.reading.at == again.reading.since and store.version("stage_marks") == versions


def test_a_compacted_images_table_is_answered_in_full(store):
    """Compaction rewrites images files the mark covered: the mark no longer says which rows
    are new, so the answer reads everything (and stays right)."""
    from storage import delta

    store.write("captions", caption_rows(ids(6), 0))
    mark = queries.images_left(store, "caption", queries.CAPTIONED, KEY)
    assert mark.count == 3
    queries.record_mark(store, mark, "run-1")  # as if all were done
    delta.open_table(store.location, "images").optimize.compact()
    left = queries.images_left(store, "caption", queries.CAPTIONED, KEY)
    assert left.reading.since is None and sorted(i for v in left.files.values() for i in v) == ids(9)[6:]


def test_a_pinned_store_older_than_the_mark_is_answered_in_full(store):
    pinned = PinnedStore(store, {"images": store.version("images"), "captions": -1})
    store.write("images", image_rows(2, start=9))
    store.write("captions", caption_rows(ids(11), 0))
    queries.record_mark(store, queries.images_left(store, "caption", queries.CAPTIONED, KEY), "run-1")
    left = queries.images_left(pinned, "caption", queries.CAPTIONED, KEY)
    assert left.reading.since is None and left.count == 9


def test_after_a_text_mark_only_images_captioned_since_are_candidates(store):
    """Text vectors marked done; then a new latest caption for id00001, and for id00002 a row
    committed later but made earlier (not its latest): only id00001 is left, and the answer
    holds with every older vector file garbled (they are not read)."""
    def text_hash(caption_hash: str) -> str:
        return f"t-{caption_hash}"

    store.write("captions", caption_rows(ids(3), 5, "old"))
    store.write("embeddings", vector_rows(ids(3), "text", "t-cfg", 0, 1.0))
    done = queries.texts_left(store, text_hash, "m")
    assert done.rows == [] and done.reading.since is None
    queries.record_mark(store, done, "run-1")
    _garble(store.shard_paths("embeddings"))
    store.write("captions", caption_rows(["id00001"], 9, "new", config_hash="b"))
    store.write("captions", caption_rows(["id00002"], 1, "older", config_hash="c"))
    left = queries.texts_left(store, text_hash, "m")
    assert left.reading.since == done.reading.at
    assert left.rows == [{"image_id": "id00001", "text": "new", "config_hash": "t-b"}]


def test_views_opened_at_once_in_threads_each_read_their_own_files(store):
    """`views` hands out cursors on one in-memory database per process: the views a caller
    creates are its cursor's own, so callers in other threads with the same table names over
    other files never see them."""
    from concurrent.futures import ThreadPoolExecutor

    names = [p.rsplit("/", 1)[-1] for p in store.shard_paths("images")]

    def count(files: list[str]) -> tuple[int, int]:
        with queries.views(store, "images", files={"images": files}) as (con, _):
            return len(files), con.execute("SELECT count(*) FROM images").fetchone()[0]

    subsets = [names[:n] for n in (1, 2, 3)] * 20
    with ThreadPoolExecutor(4) as pool:
        assert [rows for _, rows in pool.map(count, subsets)] == [3 * len(files) for files in subsets]
    with duck.cursor(store.location) as con:  # the views ended with their cursors
        assert con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'images'").fetchone() == (0,)
