"""One copy of a role per `shared_roles()` block: in a pipeline process, caption's CLIP is embed's."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import transformers
from prefect import flow

from flows.stages import run_stage
from model.profiles import load_profile, load_role, shared_roles
from tamer.config import CaptionSettings, EmbedSettings
from tasks.caption import caption_images
from tasks.embed import embed_dataset
from synth_data import ingested_synth

_loaded: list = []


@flow
def _stage_loading_clip() -> None:
    _loaded.append(load_role(load_profile("tiny"), "clip", shared=True)[0])


@flow
def _parent() -> None:
    with shared_roles():
        run_stage(_stage_loading_clip)
        run_stage(_stage_loading_clip)
    run_stage(_stage_loading_clip)


def test_stage_flows_in_one_block_share_a_role_and_later_ones_load_their_own(prefect_server):
    _loaded.clear()
    _parent()
    first, second, after = _loaded
    assert second is first  # the block reaches into Prefect's subflows
    assert after is not first  # the block's copies end with it


def test_only_shared_loads_inside_a_block_get_its_copy():
    profile = load_profile("tiny")
    with shared_roles():
        shared = load_role(profile, "clip", shared=True)
        assert load_role(profile, "clip", shared=True) is shared
        assert load_role(profile, "clip")[0] is not shared[0]  # a caller that may change its copy
        assert load_role(profile, "dino", shared=True)[0] is not shared[0]
    assert load_role(profile, "clip", shared=True)[0] is not shared[0]


@pytest.fixture
def clip_loads(monkeypatch) -> list[str]:
    """Every `CLIPModel.from_pretrained` call's path."""
    calls: list[str] = []
    original = transformers.CLIPModel.from_pretrained.__func__

    def counting(cls, path, *args, **kwargs):
        calls.append(str(path))
        return original(cls, path, *args, **kwargs)

    monkeypatch.setattr(transformers.CLIPModel, "from_pretrained", classmethod(counting))
    return calls


@pytest.mark.parametrize("block", [True, False])
def test_caption_then_embed_in_one_block_load_clip_once(tmp_path, clip_loads, block):
    """Caption scores attributes with CLIP; embed runs an image pass and a text pass, each with
    an encoder: three loads of the same checkpoint without the block, one with it."""
    store = ingested_synth(tmp_path, 2, 2, size=32, seed=3)
    with shared_roles() if block else nullcontext():
        caption_images(store, "tiny", CaptionSettings(executor="local"))
        report = embed_dataset(store, "tiny", EmbedSettings(executor="local"))
    assert (report.images, report.texts) == (4, 4)
    assert len(clip_loads) == (1 if block else 3)

