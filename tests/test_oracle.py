"""The attribute oracle role: a from_pretrained-loadable model whose vocabulary is its config."""

from __future__ import annotations

import pytest
import torch

from model.oracle import AttributeOracle

VOCABULARY = {"shape": ["star", "circle", "square"], "background": ["white", "black"]}


def test_save_and_load_round_trip_keeps_vocabulary_and_predictions(tmp_path):
    torch.manual_seed(0)
    oracle = AttributeOracle.for_vocabulary(VOCABULARY, width=4).eval()
    images = torch.rand(5, 3, 16, 16) * 2 - 1
    oracle.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = AttributeOracle.from_pretrained(tmp_path)
    assert loaded.keys == ("shape", "background")
    assert torch.equal(loaded.predict(images), oracle.predict(images))
    assert set(loaded(images)["shape"].shape) == {5, 3}


def test_training_on_labels_lowers_the_loss_and_predict_keeps_train_mode():
    torch.manual_seed(0)
    oracle = AttributeOracle.for_vocabulary(VOCABULARY, width=4).train()
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    labels = torch.stack([torch.arange(8) % 3, torch.arange(8) % 2], dim=1)
    optimizer = torch.optim.Adam(oracle.parameters(), lr=1e-2)
    first = float(oracle.loss(images, labels))
    for _ in range(30):
        optimizer.zero_grad()
        oracle.loss(images, labels).backward()
        optimizer.step()
    assert float(oracle.loss(images, labels)) < first / 2
    oracle.predict(images)
    assert oracle.training


def test_an_empty_vocabulary_is_refused():
    with pytest.raises(ValueError, match="attributes"):
        AttributeOracle.for_vocabulary({})
