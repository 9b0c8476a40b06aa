"""Model profiles: every tiny role loads through from_pretrained, the cache is built once and
rebuilt on a recipe change, real tokenizers match OpenAI's, and bad profiles fail early."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from pydantic import ValidationError

from model import profiles, tiny
from model.profile_check import check_profile, preflight
from model.profiles import ModelLoadError, load_profile, load_role, resolve

SENTENCES = ["a photo of a red dog", "a cat sitting on a wooden table", "two sks toys, 3d render!"]


@pytest.fixture(scope="session")
def tiny_profile(tmp_path_factory):
    """The tiny profile over a throw-away model cache, built once per session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TAMER_MODEL_CACHE", str(tmp_path_factory.mktemp("model-cache")))
        profile = load_profile("tiny")
        for component in tiny.BUILDERS:
            tiny.ensure_built(component)
        yield profile


def _images(n: int = 2) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


def _write_profile(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load((profiles.PROFILES_DIR / "tiny.yaml").read_text())
    data.update(changes)
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@torch.no_grad()
def test_every_tiny_role_loads_with_expected_shapes(tiny_profile):
    p = tiny_profile
    captioner, blip_processor = load_role(p, "captioner")
    inputs = blip_processor(images=_images(), text=["a photo of", "a photo of"], return_tensors="pt")
    assert inputs["pixel_values"].shape == (2, 3, 32, 32)
    assert captioner(**inputs).logits.shape[:2] == inputs["input_ids"].shape
    generated = captioner.generate(pixel_values=inputs["pixel_values"], max_new_tokens=4)
    assert generated.shape[0] == 2 and isinstance(blip_processor.decode(generated[0]), str)

    clip, clip_processor = load_role(p, "clip")
    out = clip(**clip_processor(text=SENTENCES[:2], images=_images(), return_tensors="pt", padding=True))
    assert out.image_embeds.shape == out.text_embeds.shape == (2, 32)
    assert out.vision_model_output.last_hidden_state.shape == (2, 1 + 8 * 8, 48)  # CLS + patches

    tokens = load_role(p, "tokenizer")(SENTENCES, padding="max_length", max_length=77,
                                        return_tensors="pt")
    text = load_role(p, "text_encoder")(tokens.input_ids).last_hidden_state
    assert text.shape == (3, 77, 32)

    vae = load_role(p, "vae")
    latents = vae.encode(torch.randn(2, 3, 32, 32)).latent_dist.sample()
    assert latents.shape == (2, 4, 16, 16)
    assert vae.decode(latents).sample.shape == (2, 3, 32, 32)
    unet = load_role(p, "unet")
    assert unet(latents, torch.tensor([10, 900]), text[:2]).sample.shape == latents.shape

    scheduler = load_role(p, "scheduler")
    assert type(scheduler).__name__ == "DDPMScheduler" and scheduler.config.num_train_timesteps == 1000

    dino, dino_processor = load_role(p, "dino")
    assert dino(**dino_processor(images=_images(), return_tensors="pt")).last_hidden_state.shape == (2, 65, 32)

    seg, seg_processor = load_role(p, "segmentation")
    logits = seg(**seg_processor(images=_images(), return_tensors="pt")).logits
    assert logits.shape == (2, 2, 8, 8) and seg.config.id2label[1] == "foreground"

    for model in (captioner, clip, unet, vae, dino, seg):
        assert not model.training and next(model.parameters()).dtype == torch.float32


def test_tiny_folder_is_a_stable_diffusion_pipeline(tiny_profile):
    from diffusers import StableDiffusionPipeline

    folder, _ = resolve(tiny_profile, "unet")
    pipe = StableDiffusionPipeline.from_pretrained(folder, use_safetensors=True)
    image = pipe("a red dog", height=32, width=32, num_inference_steps=2, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()


def test_clip_tokenizers_match_openai_clip_tokenize(tiny_profile):
    import clip

    expected = clip.tokenize(SENTENCES)  # (3, 77), zero padded
    slow = load_role(tiny_profile, "tokenizer")
    fast = load_role(tiny_profile, "clip")[1].tokenizer
    assert len(slow) == len(fast) == 49408
    for tok in (slow, fast):
        for row, sentence in zip(expected, SENTENCES):
            ids = tok(sentence)["input_ids"]
            assert ids == row[: len(ids)].tolist() and row[len(ids):].eq(0).all()


def test_a_blip_tokenizer_cut_to_texts_splits_them_as_the_whole_vocabulary_does():
    """The synth captioner's closed vocabulary (`Recipe.captioner_vocab`): the texts it was cut
    to split into the same pieces, a word none of them has is [UNK], BLIP's tokens stay."""
    texts = ["a white and teal striped capsule, on the left, medium-sized", "a red heart in dim light"]
    full, cut = tiny.blip_tokenizer(), tiny.blip_tokenizer(texts)
    assert len(cut) < 40 and len(full) == 30524
    for text in texts:
        assert cut.tokenize(text) == full.tokenize(text)
        assert cut.decode(cut(text).input_ids, skip_special_tokens=True) == \
            full.decode(full(text).input_ids, skip_special_tokens=True)
    assert cut.tokenize("a red zebra") == ["a", "red", "[UNK]"]
    assert cut.bos_token == "[DEC]" and "[ENC]" in cut.additional_special_tokens
    assert len({cut.bos_token_id, cut.pad_token_id, cut.sep_token_id, cut.unk_token_id}) == 4


def test_cache_is_reused_and_rebuilt_when_the_recipe_changes(tiny_profile, monkeypatch):
    folder = Path(resolve(tiny_profile, "dino")[0])
    stamp_mtime = (folder / tiny.STAMP).stat().st_mtime_ns
    builds = tiny.BUILD_COUNT["dino"]
    assert Path(resolve(tiny_profile, "dino")[0]) == folder
    assert tiny.BUILD_COUNT["dino"] == builds and (folder / tiny.STAMP).stat().st_mtime_ns == stamp_mtime

    monkeypatch.setattr(tiny, "RECIPE_VERSION", tiny.RECIPE_VERSION + 1)
    rebuilt = Path(resolve(tiny_profile, "dino")[0])
    assert rebuilt != folder and tiny.BUILD_COUNT["dino"] == builds + 1
    assert load_role(tiny_profile, "dino")[0].config.hidden_size == 32
    resolve(tiny_profile, "dino")
    assert tiny.BUILD_COUNT["dino"] == builds + 1
    assert not list(rebuilt.parent.glob(".tmp-*"))


def test_racing_builders_build_once(tiny_profile, monkeypatch):
    monkeypatch.setattr(tiny, "RECIPE_VERSION", tiny.RECIPE_VERSION + 100)
    builds = tiny.BUILD_COUNT["segmentation"]
    with ThreadPoolExecutor(4) as pool:
        folders = set(pool.map(lambda _: tiny.ensure_built("segmentation"), range(4)))
    assert len(folders) == 1 and tiny.BUILD_COUNT["segmentation"] == builds + 1


def test_failed_build_leaves_no_cache(tiny_profile, monkeypatch):
    def broken(out: Path) -> None:
        (out / "config.json").write_text("{}")  # half written, then the build dies
        raise RuntimeError("killed")

    monkeypatch.setitem(tiny.BUILDERS, "dino", broken)
    monkeypatch.setattr(tiny, "RECIPE_VERSION", tiny.RECIPE_VERSION + 200)
    with pytest.raises(RuntimeError, match="killed"):
        tiny.ensure_built("dino")
    root = tiny.cache_root()
    assert not (root / f"dino-{tiny.recipe_hash('dino')}").exists()
    assert not list(root.glob(".tmp-*"))


def test_check_profile_tiny_builds_and_loads_every_role(tiny_profile):
    checks = check_profile("tiny")
    assert [c.role for c in checks] == list(profiles.ROLES)
    unset = {"oracle", *profiles.SECOND_TEXT_TOWER}  # synth-only role, SDXL-only roles: tiny sets none
    built = [c for c in checks if c.role not in unset]
    assert all(c.ok and not c.warning and c.reason == "built and loaded" for c in built), checks
    oracle = next(c for c in checks if c.role == "oracle")
    assert oracle.ok and oracle.id is None and "no oracle columns" in oracle.reason
    second = next(c for c in checks if c.role == "text_encoder_2")
    assert second.ok and second.id is None and "one text encoder" in second.reason


def test_check_profile_tiny_sdxl_builds_and_loads_both_text_towers():
    checks = {c.role: c for c in check_profile("tiny-sdxl")}
    for role in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet"):
        assert checks[role].ok and checks[role].reason == "built and loaded", checks[role]


def test_check_profile_sdxl_needs_no_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    checks = {c.role: c for c in check_profile("sdxl")}
    assert all(c.ok for c in checks.values()), checks
    assert checks["text_encoder_2"].id == "stabilityai/stable-diffusion-xl-base-1.0"
    assert checks["text_encoder_2"].warning and "would download" in checks["text_encoder_2"].reason


def test_check_profile_sd15_needs_no_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # empty cache: nothing is there
    checks = {c.role: c for c in check_profile("sd15")}
    assert set(checks) == set(profiles.ROLES) and all(c.ok for c in checks.values())
    assert checks["unet"].id == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert checks["unet"].warning and "would download" in checks["unet"].reason
    assert checks["segmentation"].id is None and "saliency" in checks["segmentation"].reason
    sd15 = load_profile("sd15")
    assert (sd15.device, sd15.dtype, sd15.resolution) == ("cuda", "float16", 512)
    assert profiles.torch_dtype(sd15) == torch.float16


def _rename_role(roles: dict) -> None:
    roles["captoner"] = roles.pop("captioner")


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.update(resolutoin=32), "resolutoin"),
    (lambda d: d.update(dtype="float8"), "dtype"),
    (lambda d: d.update(device="gpu"), "device"),
    (lambda d: d.update(resolution=64), "resolution must be 32"),
    (lambda d: d.update(guidance_scale=0.5), "guidance_scale"),
    (lambda d: d.update(sampler="euler"), "sampler"),
    (lambda d: _rename_role(d["roles"]), "captoner"),
    (lambda d: d["roles"].update(unet={"id": "tiny://sd", "subfoldr": "unet"}), "subfoldr"),
    (lambda d: d["roles"].update(unet={"id": "not a valid//id"}), "roles.unet.id"),
])
def test_invalid_profile_fails_naming_the_field(tmp_path, edit, field):
    data = yaml.safe_load((profiles.PROFILES_DIR / "tiny.yaml").read_text())
    edit(data)
    path = _write_profile(tmp_path, **data)
    with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
        load_profile(str(path))
    [check] = check_profile(str(path))
    assert not check.ok and field in check.reason


def test_a_run_without_a_guidance_or_duplicate_threshold_uses_the_profiles_own():
    """The synth base is sampled at its 2.0 (ours' object CFG too) and its near-duplicates cut at the cosine its
    measures use (NEAR_DUPLICATE), its identity groups at its dino's (GROUP_THRESHOLD), unless a run sets
    them; the others keep SD's 7.5, 3.0, 0.97 and 0.9."""
    from tamer.config import load_config
    from tasks.profile_measures import GROUP_THRESHOLD, NEAR_DUPLICATE

    assert load_config().eval.guidance_scale is None
    assert load_profile("synth").own("guidance_scale", None) == 2.0
    assert load_profile("tiny").own("guidance_scale", None) == 7.5
    assert load_profile("synth").own("guidance_scale", 4.0) == 4.0
    assert load_config().embed.near_duplicate_threshold is None
    assert load_profile("synth").own("near_duplicate_threshold", None) == NEAR_DUPLICATE != 0.97
    assert load_profile("tiny").own("near_duplicate_threshold", None) == 0.97
    assert load_config().embed.group_threshold is None  # identity groups: the dino's own cosine
    assert load_profile("synth").own("group_threshold", None) == GROUP_THRESHOLD
    assert load_profile("synth").own("group_threshold", 0.5) == 0.5  # a run's own setting wins
    assert load_profile("tiny").own("group_threshold", None) == 0.9
    assert load_config().eval.object_guidance_scale is None
    assert load_profile("synth").own("object_guidance_scale", None) == 2.0
    assert load_profile("tiny").own("object_guidance_scale", None) == 3.0


def test_a_run_without_a_scheduler_samples_with_the_profiles_own():
    """The synth base samples ancestrally (its DDPM schedule, what its measures use); tiny and
    sd15 keep DDIM; a run's setting wins, and an unknown name is refused."""
    from tamer.config import EvalSettings, load_config
    from tasks.profile_measures import SAMPLER

    assert load_config().eval.scheduler is None
    assert load_profile("synth").own("sampler", None) == SAMPLER == "default"
    assert load_profile("tiny").own("sampler", None) == "ddim"
    assert load_profile("synth").own("sampler", "ddim") == "ddim"
    with pytest.raises(ValidationError, match="scheduler"):
        EvalSettings(scheduler="euler")


def test_preflight_names_the_id_that_cannot_load(tiny_profile, tmp_path):
    preflight(tiny_profile, list(profiles.ROLES))  # every tiny role is loadable

    roles = dict(yaml.safe_load((profiles.PROFILES_DIR / "tiny.yaml").read_text())["roles"])
    roles["unet"] = {"id": "./no-such-unet"}
    with pytest.raises(ModelLoadError, match="no-such-unet.*does not exist") as err:
        preflight(load_profile(str(_write_profile(tmp_path, roles=roles))), ["captioner", "unet"])
    assert err.value.role == "unet" and err.value.id == str(tmp_path / "no-such-unet")

    roles["unet"] = {"id": "tiny://sd", "subfolder": "unet"}
    roles["captioner"] = {"id": resolve(tiny_profile, "dino")[0]}  # a ViT where BLIP belongs
    with pytest.raises(ModelLoadError, match="expects model_type 'blip'"):
        preflight(load_profile(str(_write_profile(tmp_path, roles=roles))), ["captioner"])


def test_null_segmentation_and_cpu_fallback(tmp_path):
    roles = dict(yaml.safe_load((profiles.PROFILES_DIR / "tiny.yaml").read_text())["roles"])
    profile = load_profile(str(_write_profile(tmp_path, roles={**roles, "segmentation": None},
                                              device="cuda")))
    assert load_role(profile, "segmentation") is None
    if not torch.cuda.is_available():
        with pytest.warns(UserWarning, match="using cpu"):
            assert profiles.device(profile) == torch.device("cpu")


def test_a_local_roles_id_follows_its_weights_not_its_path(tiny_profile, tmp_path):
    """Stored vectors are keyed by the model id: retrained in place, a local folder gets a new
    id (its vectors are recomputed); the same weights in another checkout keep theirs."""
    import shutil

    from model.embedding import model_id

    built = Path(resolve(tiny_profile, "clip")[0])
    for checkout in ("a", "b"):
        shutil.copytree(built, tmp_path / checkout / "clip")
        local = dict(yaml.safe_load((profiles.PROFILES_DIR / "tiny.yaml").read_text()))
        local["roles"] = {**local["roles"], "clip": {"id": "./clip"}}
        (tmp_path / checkout / "mine.yaml").write_text(yaml.safe_dump(local))
    first, moved = (model_id(load_profile(str(tmp_path / c / "mine.yaml"))) for c in ("a", "b"))
    assert first == moved and first.startswith("local://clip@") and str(tmp_path) not in first
    weights = tmp_path / "a" / "clip" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # retrained in place: one bit differs
    assert model_id(load_profile(str(tmp_path / "a" / "mine.yaml"))) not in (first, moved)


def test_reports_name_the_weights_a_profile_loads(tmp_path):
    """random for tiny, the hub id for sd15, the training record beside a local UNet folder."""
    assert profiles.weights_origin("tiny").startswith("random")
    assert profiles.weights_origin("sd15") == "UNet stable-diffusion-v1-5/stable-diffusion-v1-5 (unet)"
    assert profiles.weights_origin("nosuch").startswith("unknown")
    (tmp_path / "unet").mkdir()
    local = dict(yaml.safe_load((profiles.PROFILES_DIR / "tiny.yaml").read_text()))
    local["roles"] = {**local["roles"], "unet": {"id": "./unet"}}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(local))
    assert profiles.weights_origin(str(tmp_path / "mine.yaml")) == f"UNet {tmp_path / 'unet'}"
    (tmp_path / "provenance.json").write_text(json.dumps(
        {"recipe_fingerprint": "abc", "seed": 3, "code_commit": "c0ffee", "written": "2026-12-01"}))
    assert "recipe abc, seed 3, code c0ffee" in profiles.weights_origin(str(tmp_path / "mine.yaml"))


def test_the_shipped_synth_profile_loads_every_role_and_matches_its_recipe():
    """assets/profiles/synth: every role through from_pretrained (float16 on disk, float32
    loaded), within the 50 MB cap, trained with the recipe the code holds now (a recipe change
    without regenerating the profile fails here)."""
    from tasks.profile_roles import recipe

    profile = profiles.load_profile("synth")
    for role in profiles.ROLES:
        loaded = profiles.load_role(profile, role, device="cpu")
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if isinstance(model, torch.nn.Module):
            assert {p.dtype for p in model.parameters()} == {torch.float32}, role
    folder = profiles.PROFILES_DIR.parents[1] / "assets" / "profiles" / "synth"
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) <= 50 * 1024 * 1024
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["recipe_fingerprint"] == recipe("full").fingerprint()
    assert profiles.weights_origin("synth").startswith("trained here")
