"""clip-retrieval index, the real `back` service on loopback, ClipClient and direct faiss search."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from storage.shards import ShardStore
from tamer.cli import app
from tamer.config import EmbedSettings
from tasks import index as knn
from tasks.embed import IMAGE, TEXT, current_vectors, embed_dataset
from sockets import exposed, tree
from synth_data import ingested_synth

CAPTIONS = {0: "a small red star on green grass", 4: "a blue striped ring in the sky"}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> ShardStore:
    """12 synth images, two of them captioned, embedded and indexed."""
    store = ingested_synth(tmp_path_factory.mktemp("index"), 4, 3, size=32, seed=5)
    ids = sorted(store.read("images", ["image_id"])["image_id"].to_pylist())
    now = dt.datetime.now(dt.UTC)
    store.write("captions", pa.Table.from_pylist([
        {"image_id": ids[n], "captioner_id": "t", "clip_id": "t", "config_hash": "c",
         "class_name": "thing", "raw_caption": text, "composed_caption": text,
         "object_caption": text, "attributes": [], "scores": "{}", "created_at": now}
        for n, text in CAPTIONS.items()]))
    embed_dataset(store, "tiny", EmbedSettings(executor="local"))
    knn.build_index(store, "tiny")
    return store


def vectors(store: ShardStore, kind: str) -> tuple[list[str], np.ndarray]:
    return current_vectors(store, kind, knn.latest_index(store)["model_id"])


def test_index_is_recorded_once_per_fingerprint(indexed):
    record = knn.latest_index(indexed)
    assert record["fingerprint"] == knn.export_fingerprint(indexed)
    assert (record["images"], record["texts"]) == (12, 2)
    for name in ("image.index", "text.index", "metadata"):
        assert (Path(record["index_path"]) / name).exists()
    again = knn.build_index(indexed, "tiny")
    assert again["skipped"] and indexed.row_count("indexes") == 1
    assert knn.export_clip_retrieval(indexed, "tiny")["skipped"]


def test_index_folder_is_the_one_clip_retrieval_builds(indexed, tmp_path):
    """`build_index` calls autofaiss itself (not `clip_retrieval.clip_index`, to skip importing
    clip-retrieval's inference stack): with autofaiss's own pick (not the exact index of small
    collections), the folder must be the one `clip_index` writes."""
    import faiss
    from clip_retrieval.clip_index import clip_index

    export = knn.export_clip_retrieval(indexed, "tiny")
    peer = tmp_path / "clip_index"
    peer.mkdir()
    clip_index(export["path"], str(peer), max_index_memory_usage=EmbedSettings().index_memory,
               current_memory_available="16G", nb_cores=2)
    ours = tmp_path / "ours"
    knn.clip_index_folder(export["path"], str(ours), EmbedSettings().index_memory, exact=False)
    listing = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert listing(ours) == listing(peer)
    for name in ("image", "text"):
        assert json.loads((ours / f"{name}.json").read_text())["index_key"] == \
            json.loads((peer / f"{name}.json").read_text())["index_key"]
        a, b = (faiss.read_index(str(root / f"{name}.index")) for root in (ours, peer))
        assert a.ntotal == b.ntotal > 0
        queries = np.random.default_rng(0).standard_normal((5, a.d)).astype(np.float32)
        assert (a.search(queries, 4)[1] == b.search(queries, 4)[1]).all()
    for part in (ours / "metadata").iterdir():
        assert part.read_bytes() == (peer / "metadata" / part.name).read_bytes()


def test_a_small_collection_gets_an_exact_index_that_clip_retrieval_reads_alike(indexed):
    """Below `index_exact_below` vectors the index is Flat: its answers are the brute-force
    cosine ranking of the stored vectors, and it sits where clip-retrieval's back reads it."""
    import faiss

    record = knn.latest_index(indexed)
    assert record["images"] < EmbedSettings().index_exact_below
    folder = Path(record["index_path"])
    ids, image_vectors = vectors(indexed, IMAGE)
    for name in ("image", "text"):
        assert json.loads((folder / f"{name}.json").read_text())["index_key"] == "Flat"
    index = faiss.read_index(str(folder / "image.index"))
    query = np.random.default_rng(1).standard_normal(image_vectors.shape[1]).astype(np.float32)
    stored = image_vectors.astype(np.float16).astype(np.float32)  # clip-retrieval's export layout
    expected = [ids[i] for i in np.argsort(-(stored @ query))[:5]]
    assert [h.image_id for h in knn.search_direct(indexed, query, k=5)] == expected
    assert index.ntotal == len(ids)


def test_the_exact_index_answers_as_autofaiss_flat_index_does(tmp_path):
    """faiss writes the exact index directly (through autofaiss, its reader pools and search
    speed test cost 0.3 s a modality on a few hundred vectors): over an export split into
    several files it must hold the vectors in the order autofaiss reads them and answer alike."""
    import faiss
    from autofaiss import build_index

    rng = np.random.default_rng(3)
    export = tmp_path / "export"
    (export / "img_emb").mkdir(parents=True)
    (export / "metadata").mkdir()
    (tmp_path / "ours").mkdir()
    for part, rows in enumerate((7, 5, 9)):
        np.save(export / "img_emb" / f"img_emb_{part:04d}.npy", rng.standard_normal((rows, 16)).astype(np.float16))
    knn.clip_index_folder(str(export), str(tmp_path / "ours"), "1G", exact=True)
    build_index(embeddings=str(export / "img_emb"), index_path=str(tmp_path / "peer.index"),
                index_infos_path=str(tmp_path / "peer.json"), index_key="Flat",
                max_index_memory_usage="1G", current_memory_available="16G")
    ours, peer = (faiss.read_index(str(path)) for path in (tmp_path / "ours" / "image.index", tmp_path / "peer.index"))
    assert ours.ntotal == peer.ntotal == 21 and ours.metric_type == peer.metric_type
    queries = rng.standard_normal((6, 16)).astype(np.float32)
    (ours_scores, ours_ids), (peer_scores, peer_ids) = ours.search(queries, 21), peer.search(queries, 21)
    assert (ours_ids == peer_ids).all() and np.allclose(ours_scores, peer_scores, atol=1e-4)
    infos = json.loads((tmp_path / "ours" / "image.json").read_text())
    assert (infos["index_key"], infos["nb vectors"], infos["vectors dimension"]) == ("Flat", 21, 16)
    assert not (tmp_path / "ours" / "text.index").exists()  # no text vectors, no text index


def test_building_an_index_leaves_the_processes_log_handlers_open(indexed, tmp_path):
    """autofaiss reconfigures logging on every build, which closed every handler in the process
    (Prefect's API handler flushed to its server each time): a handler set up before a build
    must still be open and receive records after it."""
    import logging

    class Counting(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.closed, self.records = 0, []

        def close(self) -> None:
            self.closed += 1
            super().close()

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record.getMessage())

    handler = Counting()
    logging.getLogger().addHandler(handler)
    try:
        export = knn.export_clip_retrieval(indexed, "tiny")
        knn.clip_index_folder(export["path"], str(tmp_path / "again"), EmbedSettings().index_memory)
        logging.getLogger("tamer.after").warning("after the build")
    finally:
        logging.getLogger().removeHandler(handler)
    assert (tmp_path / "again" / "image.index").exists()
    assert handler.closed == 0 and handler.records == ["after the build"]


def test_direct_search_returns_each_image_first(indexed):
    ids, image_vectors = vectors(indexed, IMAGE)
    for image_id, vector in zip(ids, image_vectors):
        hits = knn.search_direct(indexed, vector, k=3)
        assert hits[0].image_id == image_id and hits[0].score == pytest.approx(1.0, abs=1e-2)


def test_served_back_answers_clip_client_by_embedding_image_and_text(indexed):
    ids, image_vectors = vectors(indexed, IMAGE)
    sources = {r["image_id"]: r["source"] for r in indexed.read("images").to_pylist()}
    root = indexed.location.uri
    with knn.served(root, timeout_s=120) as url:
        port = int(url.rsplit(":", 1)[1])
        listening = [c.laddr.ip for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert listening == ["127.0.0.1"]  # loopback only, never 0.0.0.0
        assert exposed(tree(psutil.Process())) == []  # nor any other socket of the back
        for image_id, vector in zip(ids, image_vectors):
            hits = knn.search_service(url, indexed, vector=vector, k=3)
            assert hits[0].image_id == image_id
            assert [h.image_id for h in hits] == \
                [h.image_id for h in knn.search_direct(indexed, vector, k=3)]
        by_file = knn.search_service(url, indexed, image=sources[ids[3]], k=5)
        assert by_file[0].image_id == ids[3] and by_file[0].image_path == sources[ids[3]]
        assert by_file[0].score == pytest.approx(1.0, abs=1e-2)
        by_text = knn.search_service(url, indexed, text="a red star", k=5)
        assert len(by_text) == 5 and by_text[0].subject and by_text[0].image_path
        assert [h.score for h in by_text] == sorted((h.score for h in by_text), reverse=True)
        caption = knn.search_service(url, indexed, text=CAPTIONS[4], k=3, modality=TEXT)
        assert caption[0].image_id == ids[4] and caption[0].caption == CAPTIONS[4]
        assert caption[0].score == pytest.approx(1.0, abs=1e-2)
        served = cli(root, "search", "--text", "a red star", "--url", url, "--k", "5")
        assert served["via"] == "service"
        assert [h["image_id"] for h in served["hits"]] == [h.image_id for h in by_text]


def cli(root: str, *args: str) -> dict:
    result = CliRunner().invoke(app, ["--root", root, *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stdout
    return json.loads(result.stdout)


def test_cli_search_falls_back_to_faiss_without_a_service(indexed):
    ids, _ = vectors(indexed, IMAGE)
    sources = {r["image_id"]: r["source"] for r in indexed.read("images").to_pylist()}
    source = sources[ids[2]]
    nowhere = f"http://127.0.0.1:{knn.free_port()}"
    found = cli(indexed.location.uri, "search", "--image", source, "--url", nowhere, "--k", "4")
    assert found["via"] == "faiss" and found["hits"][0]["image_id"] == ids[2]
    direct = cli(indexed.location.uri, "search", "--text", CAPTIONS[0], "--direct",
                 "--modality", "text")
    assert direct["hits"][0]["image_id"] == ids[0]
    result = CliRunner().invoke(app, ["--root", indexed.location.uri, "search"])
    assert result.exit_code == 2
