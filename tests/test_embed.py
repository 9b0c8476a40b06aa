"""Embeddings on real Ray and the embed flow on real Prefect, over a small synth dataset."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from model.embedding import ClipEmbedder, IdentityEmbedder, model_id
from model.profiles import load_profile
from storage.catalog import connect
from storage.shards import ShardStore
from tamer import stats
from tamer.config import EmbedSettings, IngestSettings, load_config
from tamer.synth import generate
from tasks.embed import IDENTITY, IMAGE, TEXT, current_vectors, embed_dataset, identity_model_id
from tasks.images_dataset import decode_image
from tasks.ingest import ingest_source
from synth_data import add_undecodable_image

TABLES = ("embeddings", "near_duplicates", "subject_groups", "pairs", "indexes")


@pytest.fixture(scope="module")
def synth_source(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "src"
    generate(out, n_objects=5, views=3, size=32, seed=3)
    return out


def ingested(source: Path, root: Path) -> ShardStore:
    store = ShardStore(str(root))
    ingest_source(str(source), store, IngestSettings(executor="local"))
    return store


def add_captions(store: ShardStore, captions: dict[str, str], config_hash: str) -> None:
    now = dt.datetime.now(dt.UTC)
    store.write("captions", pa.Table.from_pylist([
        {"image_id": i, "captioner_id": "test", "clip_id": "test", "config_hash": config_hash,
         "class_name": "thing", "raw_caption": text, "composed_caption": text,
         "object_caption": text, "attributes": [], "scores": "{}", "created_at": now}
        for i, text in captions.items()]))


def test_auto_runs_the_model_on_ray_only_where_ray_adds_workers(monkeypatch):
    """One actor on a local Ray is this process's work plus start-up: in-process then; more
    actors, a cluster address (config or RAY_ADDRESS) or an explicit `local_below` use Ray."""
    from tamer.config import RaySettings
    from tasks.embed import _executor

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local_ray, many = RaySettings(), 100_000
    assert _executor(EmbedSettings(), local_ray, many) == "local"
    assert _executor(EmbedSettings(actors=2), local_ray, many) == "ray"
    assert _executor(EmbedSettings(), RaySettings(address="10.0.0.5:6379"), many) == "ray"
    assert _executor(EmbedSettings(executor="local", actors=4), local_ray, many) == "local"
    assert _executor(EmbedSettings(local_below=0), local_ray, 1) == "ray"
    assert _executor(EmbedSettings(local_below=100, actors=4), local_ray, 99) == "local"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert _executor(EmbedSettings(), local_ray, many) == "ray"


def test_ray_embeddings_are_unit_incremental_and_match_local(synth_source, tmp_path, ray_local):
    store = ingested(synth_source, tmp_path / "ray")
    settings = EmbedSettings(executor="ray", batch_size=4, local_below=0)  # Ray, however few
    first = embed_dataset(store, "tiny", settings)
    assert (first.images, first.texts, first.skipped, first.executor) == (15, 0, 0, "ray")
    ids, vectors = current_vectors(store, IMAGE, first.model_id)
    assert sorted(store.read("images", ["image_id"])["image_id"].to_pylist()) == ids
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    identity_ids, identity = current_vectors(store, IDENTITY, identity_model_id(load_profile("tiny")))
    assert identity_ids == ids and np.allclose(np.linalg.norm(identity, axis=1), 1.0, atol=1e-5)
    # row for row the dino role's CLS of that same image (the DINO score's preprocessing)
    embedder = IdentityEmbedder.from_profile(load_profile("tiny"))
    images = {r["image_id"]: decode_image(r["image"]) for r in store.read("images", ["image_id", "image"]).to_pylist()}
    assert np.allclose(identity, embedder.embed_pixels(embedder.preprocess([images[i] for i in ids])), atol=1e-5)
    again = embed_dataset(store, "tiny", settings)
    assert (again.images, again.skipped, again.shards) == (0, 15, 0)
    assert store.row_count("embeddings") == 2 * 15 and again.fingerprint == first.fingerprint  # image + identity

    local = ingested(synth_source, tmp_path / "local")
    torch.set_num_threads(2)  # the caller's count, e.g. `tamer run` before it evaluates in-process
    assert embed_dataset(local, "tiny", EmbedSettings(executor="local", batch_size=7)).executor == "local"
    assert torch.get_num_threads() == 2, "the stage's one model thread leaked into its caller"
    local_ids, local_vectors = current_vectors(local, IMAGE, first.model_id)
    assert local_ids == ids and np.allclose(local_vectors, vectors, atol=1e-5)
    assert np.allclose(current_vectors(local, IDENTITY, identity_model_id(load_profile("tiny")))[1], identity, atol=1e-5)


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_undecodable_stored_image_is_quarantined_and_the_rest_embedded(synth_source, tmp_path, executor,
                                                                      request):
    if executor == "ray":
        request.getfixturevalue("ray_local")
    store = ingested(synth_source, tmp_path / "data")
    bad = add_undecodable_image(store)
    settings = EmbedSettings(executor=executor, batch_size=4, local_below=0)
    report = embed_dataset(store, "tiny", settings)
    assert (report.images, report.quarantined) == (15, 1)
    ids, _ = current_vectors(store, IMAGE, report.model_id)
    assert bad not in ids and len(ids) == 15
    quarantine = [r for r in store.read("quarantine").to_pylist() if r["stage"] == "embed"]
    assert [(q["content_sha256"], q["reason"]) for q in quarantine] == [(bad, "undecodable")]
    assert quarantine[0]["detail"]  # the decoder's message, for whoever reads the table
    again = embed_dataset(store, "tiny", settings)  # known-bad bytes are not retried
    assert (again.images, again.quarantined, again.skipped) == (0, 0, 16)
    assert store.row_count("quarantine") == 1


def test_captions_get_text_vectors_and_new_caption_config_reembeds(synth_source, tmp_path):
    store = ingested(synth_source, tmp_path / "data")
    ids = sorted(store.read("images", ["image_id"])["image_id"].to_pylist())
    captions = {image_id: f"a photo of thing number {n}" for n, image_id in enumerate(ids[:4])}
    add_captions(store, captions, "cfg-a")
    report = embed_dataset(store, "tiny", EmbedSettings(executor="local"))
    assert (report.images, report.texts) == (15, 4)
    text_ids, text_vectors = current_vectors(store, TEXT, report.model_id)
    assert text_ids == sorted(captions)  # uncaptioned images get only an image vector
    embedder = ClipEmbedder.from_profile(load_profile("tiny"))
    expected = embedder.embed_texts([captions[i] for i in text_ids])
    assert np.allclose(text_vectors, expected, atol=1e-5)
    assert embed_dataset(store, "tiny", EmbedSettings(executor="local")).texts == 0
    add_captions(store, {ids[0]: "another caption"}, "cfg-b")  # a new caption config
    assert embed_dataset(store, "tiny", EmbedSettings(executor="local")).texts == 1


def test_embed_flow_end_to_end_and_rerun_adds_nothing(synth_source, tmp_path, ray_local,
                                                      prefect_server):
    from flows.embed import embed_flow

    root = tmp_path / "data"
    store = ingested(synth_source, root)
    ids = sorted(store.read("images", ["image_id"])["image_id"].to_pylist())
    add_captions(store, {ids[1]: "a red star", ids[2]: "a blue ring"}, "cfg")
    config = tmp_path / "embed.yaml"
    config.write_text("embed: {pairs_per_subject: 4, near_duplicate_threshold: 0.5}\n")
    report = embed_flow(root=str(root), config_file=str(config))

    assert report["embed"]["images"] == 15 and report["embed"]["texts"] == 2
    assert report["index"]["images"] == 15 and report["index"]["texts"] == 2
    quality = report["groups"]["quality"]  # synth carries ground-truth identities
    assert quality["identities"] == 5 and 0.0 <= quality["purity"] <= 1.0
    assert 0.0 <= quality["recall"] <= 1.0
    assert report["groups"]["labeled"] == 15 and report["groups"]["groups"] == 5

    pairs = store.read("pairs").to_pylist()
    subjects = {r["image_id"]: r["subject"] for r in store.read("images").to_pylist()}
    assert all(p["reference_id"] != p["target_id"] for p in pairs)
    assert all(subjects[p["reference_id"]] == subjects[p["target_id"]] == p["subject"]
               for p in pairs)
    per_subject = {s: sum(p["subject"] == s for p in pairs) for s in set(subjects.values())}
    assert set(per_subject.values()) == {4}  # every subject covered, cap respected

    export = root / "clip_export"
    images = np.load(export / "img_emb" / "img_emb_0000.npy")
    texts = np.load(export / "text_emb" / "text_emb_0000.npy")
    metadata = pq.read_table(export / "metadata" / "metadata_0000.parquet").to_pandas()
    dim = ClipEmbedder.from_profile(load_profile(load_config(None).profile)).dim  # the default profile's CLIP
    assert images.dtype == np.float16 and images.shape == (15, dim) == texts.shape
    assert list(metadata.columns) == ["image_path", "caption", "image_id", "subject"]
    assert list(metadata["image_id"]) == ids and (np.abs(texts).sum(1) > 0).sum() == 2
    assert metadata.set_index("image_id").loc[ids[1], "caption"] == "a red star"
    assert json.loads((export / "_export.json").read_text())["rows"] == 15

    before = {t: store.row_count(t) for t in TABLES}
    again = embed_flow(root=str(root), config_file=str(config))
    assert {t: store.row_count(t) for t in TABLES} == before
    assert again["index"]["skipped"] and again["pairs"]["skipped"]
    with connect(store) as con:
        result = stats.collect(store, con)
    assert result["near_duplicates"][0]["pairs"] == before["near_duplicates"]
    assert {r["subject"]: r["pairs"] for r in result["pairs_per_subject"]} == per_subject


def test_unlabeled_images_are_grouped_by_knn(synth_source, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in sorted(synth_source.glob("*/0[0-2].png")):
        (flat / f"{path.parent.name}-{path.name}").write_bytes(path.read_bytes())
    store = ingested(flat, tmp_path / "data")
    settings = EmbedSettings(executor="local", group_threshold=-0.99, group_min_size=2, group_neighbors=14)  # all mutual
    embed_dataset(store, "tiny", settings)
    from tasks.pairs import record_groups, record_pairs

    summary = record_groups(store, "tiny", settings)
    assert summary["labeled"] == 0 and summary["proposed"] == 15 and summary["groups"] >= 1
    assert model_id(load_profile("tiny")).startswith("tiny://clip@")
    groups = {r["group_id"] for r in store.read("subject_groups").to_pylist()}
    assert all(g.startswith("knn-") for g in groups)
    assert record_pairs(store, settings)["subjects"] == len(groups)


def test_a_caption_the_model_keeps_failing_on_is_quarantined_and_the_rest_embedded(
        synth_source, tmp_path, monkeypatch):
    store = ingested(synth_source, tmp_path / "data")
    ids = sorted(store.read("images", ["image_id"])["image_id"].to_pylist())
    captions = {image_id: f"a photo of thing number {n}" for n, image_id in enumerate(ids[:4])}
    captions[ids[1]] = "a poisoned caption"
    add_captions(store, captions, "cfg-a")
    embed_texts = ClipEmbedder.embed_texts

    def failing(self, texts):
        if any("poison" in text for text in texts):
            raise RuntimeError("model fell over")
        return embed_texts(self, texts)

    monkeypatch.setattr(ClipEmbedder, "embed_texts", failing)
    report = embed_dataset(store, "tiny", EmbedSettings(executor="local", batch_size=4))

    assert (report.texts, report.quarantined) == (3, 1)  # the whole batch failed, then each alone
    text_ids, _ = current_vectors(store, TEXT, report.model_id)
    assert text_ids == sorted(set(captions) - {ids[1]})
    quarantine = [r for r in store.read("quarantine").to_pylist() if r["stage"] == "embed"]
    assert [(q["content_sha256"], q["reason"], q["detail"]) for q in quarantine] == [
        (ids[1], "embed_failed", "RuntimeError: model fell over")]


def test_images_the_model_keeps_failing_on_are_quarantined_and_tried_again_next_run(
        synth_source, tmp_path, monkeypatch):
    store = ingested(synth_source, tmp_path / "data")

    def failing(self, pixels):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(ClipEmbedder, "embed_pixels", failing)
    report = embed_dataset(store, "tiny", EmbedSettings(executor="local", batch_size=4))
    assert (report.images, report.quarantined) == (0, 15)
    assert store.row_count("embeddings") == 0
    reasons = {r["reason"] for r in store.read("quarantine").to_pylist() if r["stage"] == "embed"}
    assert reasons == {"embed_failed"}

    monkeypatch.undo()  # a model failure is not the image's fault: the next run embeds it
    again = embed_dataset(store, "tiny", EmbedSettings(executor="local", batch_size=4))
    assert (again.images, again.skipped) == (15, 0)


def test_identity_groups_follow_the_identity_vectors_and_clip_without_them(synth_source, tmp_path):
    """Groups cluster the dino role's vectors, not CLIP's: newer identity vectors that split the
    images in two decide the groups; a run with identity vectors off groups CLIP's."""
    from tasks.embed import _rows, image_config_hash
    from tasks.pairs import record_groups

    flat = tmp_path / "flat"
    flat.mkdir()
    for path in sorted(synth_source.glob("*/0[0-2].png")):
        (flat / f"{path.parent.name}-{path.name}").write_bytes(path.read_bytes())
    store = ingested(flat, tmp_path / "data")
    settings = EmbedSettings(executor="local", group_threshold=0.9, group_neighbors=10)
    embed_dataset(store, "tiny", settings)
    profile = load_profile("tiny")
    ids, _ = current_vectors(store, IDENTITY, identity_model_id(profile))
    halves = np.zeros((len(ids), 8), np.float32)
    halves[: len(ids) // 2, 0] = halves[len(ids) // 2:, 1] = 1.0  # two identities, far apart
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    store.write("embeddings", _rows(np.array(ids), halves, IDENTITY, identity_model_id(profile),
                                    [image_config_hash(profile)] * len(ids), later))
    record_groups(store, "tiny", settings)
    group_of = {r["image_id"]: r["group_id"] for r in store.read("subject_groups").to_pylist()}
    assert len({group_of[i] for i in ids[: len(ids) // 2]}) == 1
    assert len({group_of[i] for i in ids[len(ids) // 2:]}) == 1 and group_of[ids[0]] != group_of[ids[-1]]

    clip_only = ingested(flat, tmp_path / "clip-only")
    off = settings.model_copy(update={"identity_vectors": False, "group_threshold": -0.99})
    embed_dataset(clip_only, "tiny", off)
    assert set(clip_only.read("embeddings", ["kind"])["kind"].to_pylist()) == {IMAGE}
    assert record_groups(clip_only, "tiny", off)["proposed"] == len(ids)  # grouped on CLIP's vectors


def test_identity_vectors_do_not_change_when_the_object_faces_the_other_way(synth_source, tmp_path, monkeypatch):
    """An identity vector is the mean over the image and its mirror image, so a mirrored photo of
    an object lands where the photo does; CLS tokens alone differ. A new way of computing them
    re-embeds what was stored."""
    from model import embedding

    embedder = IdentityEmbedder.from_profile(load_profile("tiny"))
    pixels = embedder.preprocess([decode_image(p.read_bytes()) for p in sorted(synth_source.glob("*/0[01].png"))])
    mirrored = pixels.flip(-1)
    assert np.allclose(embedder.embed_pixels(pixels), embedder.embed_pixels(mirrored), atol=1e-5)
    with torch.inference_mode():
        cls = [embedder.model(pixel_values=p).last_hidden_state[:, 0].numpy() for p in (pixels, mirrored)]
    assert not np.allclose(cls[0], cls[1], atol=1e-3)  # the test's images are not symmetric
    assert np.allclose(embedder.embed_pixels(pixels), embedding.l2_normalize(cls[0] + cls[1]), atol=1e-5)

    store = ingested(synth_source, tmp_path / "data")
    assert embed_dataset(store, "tiny", EmbedSettings(executor="local")).images == 15
    monkeypatch.setattr(embedding, "IDENTITY_RECIPE", embedding.IDENTITY_RECIPE + 1)
    assert embed_dataset(store, "tiny", EmbedSettings(executor="local")).images == 15
