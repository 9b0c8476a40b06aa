"""Caption building blocks on the tiny profile, no Ray: captioner, attribute scores, composition,
accuracy against ground truth, the worker's retry-then-quarantine path, the config hash."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from model.attributes import Vocabulary, accuracy, load_vocabulary, top, truth_from_meta
from model.captioning import strip_prompt
from model.compose import CaptionTemplate, check_template, compose, named_attributes, object_class
from tamer.config import CaptionSettings
from tasks.caption import (CaptionJob, CaptionWorker, caption_config_hash, template_of,
                           vocabulary_path)

SETTINGS = CaptionSettings(max_new_tokens=6, batch_retries=1)
VOCABULARY = load_vocabulary(vocabulary_path(SETTINGS))


def png(seed: int, size: int = 48) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def worker() -> CaptionWorker:
    key = ("tiny://captioner", "tiny://clip", caption_config_hash(SETTINGS, VOCABULARY))
    return CaptionWorker(CaptionJob("tiny", SETTINGS, VOCABULARY, key))


def rows(count: int, **overrides) -> list[dict]:
    return [{"image_id": f"id{i}", "source": f"src/{i}.png", "class_name": "backpack",
             "image": png(i), **overrides} for i in range(count)]


def test_captioner_batches_and_strips_its_prompt(worker):
    images = [Image.open(io.BytesIO(png(i))) for i in range(3)]
    captions = worker.captioner(images)
    assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)
    assert strip_prompt("a photo of  a red dog.", "A photo of") == "a red dog"
    assert strip_prompt("a red dog", None) == "a red dog"


def test_attribute_scores_are_probabilities_per_group(worker):
    scores = worker.scorer([Image.open(io.BytesIO(png(i))) for i in range(4)])
    assert len(scores) == 4
    for image_scores in scores:
        assert set(image_scores) == set(VOCABULARY.groups)
        for group, values in image_scores.items():
            assert set(values) == set(VOCABULARY.groups[group].phrases())
            assert sum(values.values()) == pytest.approx(1.0, abs=1e-5)
            assert all(0.0 <= p <= 1.0 for p in values.values())


def test_compose_names_class_attributes_and_placeholder():
    template = CaptionTemplate()
    named = {"color": "red", "texture": "striped", "shape": "star", "scene": "on green grass"}
    composed, placeholder = compose("a toy on the lawn", "star", named, template)
    assert composed == "a photo of a red striped star on green grass. a toy on the lawn"
    assert placeholder == "a photo of a <obj> star on green grass. a toy on the lawn"
    composed, placeholder = compose("", "apple", {}, template)  # empty slots leave no debris
    assert (composed, placeholder) == ("a photo of an apple.", "a photo of a <obj> apple.")
    with pytest.raises(ValueError, match="weather"):
        check_template(CaptionTemplate(template="{object} {weather}"), VOCABULARY.groups)


def test_threshold_and_class_fallback():
    vocabulary = Vocabulary(threshold=0.5, groups={
        "color": {"values": ["red", "blue"]},
        "category": {"values": ["cat", "dog"], "threshold": 0.9}})
    scores = {"color": {"red": 0.6, "blue": 0.4}, "category": {"cat": 0.2, "dog": 0.8}}
    assert named_attributes(scores, vocabulary) == {"color": "red"}  # dog: 0.8 < 0.9
    assert object_class(None, scores) == "dog" and object_class("cow", scores) == "cow"
    assert top(scores) == {"color": ("red", 0.6), "category": ("dog", 0.8)}


def test_accuracy_against_synth_ground_truth():
    meta = {"class_name": "star", "identity": {"primary": "red", "shape": "star",
                                               "texture": "striped"},
            "scene": {"background": "sky"}}
    truth = truth_from_meta(meta, VOCABULARY)
    assert truth == {"color": "red", "shape": "star", "texture": "striped", "category": "star",
                     "scene": "sky"}
    predicted = {"a": {**truth, "color": "blue"}, "b": truth}
    result = accuracy(predicted, {"a": truth, "b": truth, "c": truth}, VOCABULARY)
    assert result["color"]["accuracy"] == 0.5 and result["shape"]["accuracy"] == 1.0
    assert result["color"]["n"] == 2  # "c" has no prediction: not counted
    assert result["color"]["chance"] == pytest.approx(1 / len(VOCABULARY.groups["color"].values))


def test_worker_retries_then_quarantines_only_the_failing_rows(worker, monkeypatch):
    batch = rows(4)
    batch[1]["image"] = png(1, size=7)  # the model "fails" on any batch holding a 7 px image
    batch[2]["image"] = b"\x89PNG\r\n\x1a\n not really"  # undecodable: quarantined at once
    real, calls = worker.caption, []

    def flaky(rows_, images):
        calls.append(len(rows_))
        if any(image.size == (7, 7) for image in images):
            raise RuntimeError("CUDA error: device-side assert")
        return real(rows_, images)

    monkeypatch.setattr(worker, "caption", flaky)
    table = worker(pa.Table.from_pylist(batch))
    outcomes = {row["image_id"]: row for row in table.to_pylist()}
    assert {i: r["outcome"] for i, r in outcomes.items()} == {
        "id0": "captioned", "id1": "quarantined", "id2": "quarantined", "id3": "captioned"}
    assert outcomes["id1"]["reason"] == "caption_failed" and "device-side" in outcomes["id1"]["detail"]
    assert outcomes["id2"]["reason"] == "undecodable"
    assert calls == [3, 3, 1, 1, 1, 1]  # batch + retry, then each row alone (+ retry if failing)
    assert "backpack" in outcomes["id0"]["composed_caption"]
    assert "<obj> backpack" in outcomes["id3"]["object_caption"]


def test_config_hash_tracks_wording_and_vocabulary_not_speed():
    base = caption_config_hash(SETTINGS, VOCABULARY)
    faster = SETTINGS.model_copy(update={"batch_size": 4, "executor": "local", "actors": 3})
    assert caption_config_hash(faster, VOCABULARY) == base
    reworded = SETTINGS.model_copy(update={"template": "{object}. {raw}"})
    assert caption_config_hash(reworded, VOCABULARY) != base
    extended = VOCABULARY.model_copy(update={"threshold": 0.5})
    assert caption_config_hash(SETTINGS, extended) != base
    assert template_of(reworded).template == "{object}. {raw}"
