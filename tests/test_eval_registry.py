"""One owner per evaluation method: the registry drives configuration, the CLI and the report;
DreamBooth (full fine-tune) is a registered method like the others and really trains the UNet."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from model.dreambooth import train_dreambooth_full
from model.finetune import base_pipeline
from model.profiles import load_profile
from model.sampling import use_sampler
from tamer.cli import app
from tamer.config import ConfigError, EvalSettings, load_config
from tamer.model_config import METHOD_SETTINGS, DreamBoothConfig, MethodSettings
from tasks.eval_report import display, summarize
from tasks.eval_subjects import Subject
from tasks.methods import METHODS, Context, DreamBooth, Sampling, fill
from tasks.methods.base import generator

SAMPLING = Sampling(steps=2, guidance_scale=7.5, object_guidance_scale=3.0, scheduler="ddim")


def _subject() -> Subject:
    rng = np.random.default_rng(0)
    images = tuple(Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(3))
    return Subject(name="thing", class_noun="backpack", images=images, prompts=("a {} on the beach",))


def test_every_registered_method_has_one_class_with_its_settings_label_and_colour():
    assert list(METHODS) == ["ours", "textual_inversion", "dreambooth_lora", "dreambooth", "real"]
    assert set(METHODS) == set(METHOD_SETTINGS)
    for name, cls in METHODS.items():
        assert cls.name == name and cls.settings is METHOD_SETTINGS[name]
        assert display(name) == {"label": cls.label, "color": cls.color, "stores": cls.stores}
    assert len({cls.label for cls in METHODS.values()}) == len({cls.color for cls in METHODS.values()}) == len(METHODS)
    assert display("retired_method")["label"] == "retired_method"  # old rows still render


def test_config_choices_and_sections_come_from_the_registry():
    with pytest.raises(ConfigError) as caught:
        load_config(None, **{"eval.methods": "ours,magic"})
    message = str(caught.value)
    assert "eval.methods" in message and "magic" in message
    assert all(name in message for name in METHOD_SETTINGS)  # the registered ones, listed
    assert load_config(None, **{"eval.methods": "db, ti,real,db"}).eval.methods == ["dreambooth", "textual_inversion", "real"]
    assert EvalSettings().methods == list(METHODS)  # code default: every registered method
    assert set(load_config(None).eval.methods) < set(METHODS)  # the main job's: a quick subset

    config = load_config(None, **{"eval.dreambooth": {"steps": 3, "lr": 1e-3}})
    assert config.eval.method_settings("dreambooth") == DreamBoothConfig(steps=3, lr=1e-3)
    assert config.eval.method_settings("real") == METHOD_SETTINGS["real"]()
    with pytest.raises(ConfigError) as caught:
        load_config(None, **{"eval.dreambooth": {"rank": 4}, "eval.real": {"steps": 1}})
    assert "eval.dreambooth.rank" in str(caught.value) and "eval.real.steps" in str(caught.value)


def test_a_method_name_or_alias_is_registered_once():
    with pytest.raises(ValueError, match="defined twice"):
        type("Again", (MethodSettings,), {"__annotations__": {}, "method": "dreambooth"})
    with pytest.raises(ValueError, match="defined twice"):
        type("Clash", (MethodSettings,), {"__annotations__": {}, "method": "fresh", "alias": "ti"})
    assert "fresh" not in METHOD_SETTINGS


def test_cli_methods_and_steps_flags_come_from_the_registry(tmp_path):
    runner = CliRunner()
    help_text = runner.invoke(app, ["eval", "--help"], terminal_width=200).output
    for name, settings in METHOD_SETTINGS.items():
        assert name in help_text
        if "steps" in settings.model_fields:
            assert f"--{settings.alias or name}-steps" in help_text
    bad = runner.invoke(app, ["--root", str(tmp_path), "eval", "--methods", "ours,magic", "--db-steps", "2"])
    assert bad.exit_code == 2 and "magic" in bad.output and "dreambooth (db)" in bad.output
    zero = runner.invoke(app, ["--root", str(tmp_path), "eval", "--db-steps", "0"])
    assert zero.exit_code == 2 and "eval.dreambooth.steps" in zero.output


def test_report_orders_and_labels_methods_by_the_registry():
    rows = [{"method": m, "subject": "s", "dino": 0.5, "clip_i": 0.5, "clip_t": 0.3, "prepare_s": 1.0,
             "generate_s": 0.1, "subject_bytes": 10} for m in ("real", "dreambooth", "ours")]
    summary = summarize(rows, resamples=10)
    assert [e["method"] for e in summary] == ["ours", "dreambooth", "real"]
    assert summary[1]["label"] == DreamBooth.label and summary[1]["stores"] == "the whole UNet"


def test_dreambooth_full_trains_the_whole_unet_and_leaves_the_base_alone():
    pipe = base_pipeline("tiny")
    base = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    unet = copy.deepcopy(pipe.unet)
    trainer = type(pipe)(**{**pipe.components, "unet": unet}, requires_safety_checker=False)
    train_dreambooth_full(trainer, _subject().images, "backpack", DreamBoothConfig(steps=2, lr=1e-3))
    changed = [k for k, v in unet.state_dict().items() if not torch.equal(v, base[k])]
    assert len(changed) > 0.9 * len(base)  # every weight trains, not an adapter's few
    assert all(torch.equal(v, base[k]) for k, v in pipe.unet.state_dict().items())
    assert not any(p.requires_grad for p in unet.parameters())  # left ready for inference


def test_dreambooth_method_stores_a_whole_unet_and_generates_unlike_the_base(tmp_path):
    profile, subject = load_profile("tiny"), _subject()
    method = DreamBooth(Context(profile, SAMPLING, tmp_path), DreamBoothConfig(steps=3, lr=1e-3))
    state = method.prepare(subject)
    unet_bytes = sum(p.numel() * p.element_size() for p in method.base_unet.parameters())
    assert state.phrase == "sks backpack" and unet_bytes <= state.bytes_stored < 1.1 * unet_bytes
    assert (tmp_path / "dreambooth" / "thing" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = method.pipe.unet  # what generates: the weights read back from the stored folder
    assert loaded is not method.base_unet
    assert any(not torch.equal(a, b) for a, b in zip(loaded.parameters(), method.base_unet.parameters()))

    tuned = method.generate(state, subject.prompts[0], seed=7)[0]
    base = base_pipeline(profile)
    use_sampler(base, SAMPLING.scheduler)
    plain = base(fill(subject.prompts[0], state.phrase), num_inference_steps=SAMPLING.steps,
                 guidance_scale=SAMPLING.guidance_scale, generator=generator(7)).images[0]
    again = base(fill(subject.prompts[0], state.phrase), num_inference_steps=SAMPLING.steps,
                 guidance_scale=SAMPLING.guidance_scale, generator=generator(7)).images[0]
    assert np.array_equal(np.asarray(plain), np.asarray(again))  # same seed, same base image
    assert not np.array_equal(np.asarray(tuned), np.asarray(plain))
