"""Trainers of the roles the synth profile learns: each must learn what its role is used for,
on real synth renders, and load back through from_pretrained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (BlipForConditionalGeneration, BlipProcessor, SegformerConfig, SegformerImageProcessor,
                          ViTImageProcessor)

from model.captioning import Captioner
from model.role_training import processor_pixels, train_captioner, train_segmentation
from model.tiny import ensure_built
from tamer.synth import describe, identities, render, sample_scene

SIZE = 32


def _renders(objects: int, views: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    pixels, masks, owners, captions = [], [], [], []
    for k, subject in enumerate(identities(objects, seed)):
        for _ in range(views):
            image, mask = render(subject.identity, sample_scene(rng), SIZE)
            pixels.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1))
            masks.append(torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None])
            owners.append(k)
            captions.append(describe(subject.identity))
    return torch.stack(pixels), torch.stack(masks), torch.tensor(owners), captions


def test_captioner_learns_to_say_the_descriptions_and_reloads(tmp_path):
    pixels, _, _, captions = _renders(4, 1)
    source = ensure_built("captioner")
    processor = BlipProcessor.from_pretrained(source)
    config = BlipForConditionalGeneration.from_pretrained(source).config
    model, _ = train_captioner(config, processor, pixels, captions, steps=150, batch=4, lr=3e-3, seed=0)
    model.save_pretrained(tmp_path, safe_serialization=True)
    processor.save_pretrained(tmp_path)
    loaded = BlipForConditionalGeneration.from_pretrained(tmp_path, use_safetensors=True)
    images = [render(s.identity, sample_scene(np.random.default_rng(0)), SIZE)[0] for s in identities(4, 0)]
    said = Captioner(loaded, BlipProcessor.from_pretrained(tmp_path))(images[:1])
    # the first training object's description, word for word (BLIP lower-cases)
    assert said[0] == captions[0].lower()


def test_segmentation_learns_the_render_masks():
    pixels, masks, _, _ = _renders(12, 2)
    processor = SegformerImageProcessor(size={"height": SIZE, "width": SIZE})
    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
                             patch_sizes=[3, 3], strides=[2, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                             decoder_hidden_size=32, num_labels=2)

    def iou(model) -> float:
        with torch.no_grad():
            logits = model(pixel_values=processor_pixels(pixels, processor)).logits
        logits = torch.nn.functional.interpolate(logits, size=(SIZE, SIZE), mode="bilinear")
        predicted, truth = logits.argmax(1) == 1, masks[:, 0] > 0.5
        return float((predicted & truth).sum() / (predicted | truth).sum().clamp(min=1))

    untrained, _ = train_segmentation(config, processor, pixels, masks, steps=0, batch=8, lr=3e-3, seed=0)
    trained, _ = train_segmentation(config, processor, pixels, masks, steps=150, batch=8, lr=3e-3, seed=0)
    assert iou(trained) > max(0.6, iou(untrained) + 0.2)


def test_mask_supervision_reads_each_patch_in_the_vits_token_order():
    """Token t of a ViT with P px patches sees the patch at grid row t // G, column t % G (the
    patch embedding is a stride-P convolution, flattened row by row): each token's mask target
    must be that patch's pixels, row by row."""
    from transformers import ViTConfig, ViTModel

    from model.role_training import _patch_masks

    config = ViTConfig(image_size=8, patch_size=4, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                       num_attention_heads=1)
    embed = ViTModel(config).embeddings.patch_embeddings
    for row, col in [(0, 0), (1, 6), (5, 2), (7, 7)]:
        masks = torch.zeros(1, 1, 8, 8)
        masks[0, 0, row, col] = 1
        targets = _patch_masks(masks, 4)  # (1, 4 tokens, 16 pixels)
        token, pixel = divmod(int(targets.flatten().argmax()), 16)
        assert targets.sum() == 1 and (token, pixel) == ((row // 4) * 2 + col // 4, (row % 4) * 4 + col % 4)
        # the same pixel, seen through the ViT's own patch embedding (weights = that one pixel)
        with torch.no_grad():
            embed.projection.weight.zero_()
            embed.projection.bias.zero_()
            embed.projection.weight[0, 0, row % 4, col % 4] = 1
            seen = embed(masks.expand(1, 3, 8, 8).clone())[0, :, 0]  # (tokens,)
        assert int(seen.argmax()) == token and seen.sum() == 1


@pytest.mark.parametrize("tower", ["vit", "clip", "blip"])
def test_a_tower_job_adds_a_mask_head_and_trains_the_tokens_on_the_outline(tower):
    """The same supervised tower phase for the `dino` ViT and for CLIP's and BLIP's vision models."""
    from transformers import BlipVisionConfig, BlipVisionModel, CLIPVisionConfig, CLIPVisionModel, ViTConfig, ViTModel

    from model.fit import run
    from model.role_training import tower_job

    pixels, masks, owners, _ = _renders(6, 2)
    shape = dict(image_size=SIZE, patch_size=4, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=2)
    torch.manual_seed(0)
    model = {"vit": lambda: ViTModel(ViTConfig(**shape)),
             "clip": lambda: CLIPVisionModel(CLIPVisionConfig(**shape)).vision_model,
             "blip": lambda: BlipVisionModel(BlipVisionConfig(**shape))}[tower]()
    processor = ViTImageProcessor(size={"height": SIZE, "width": SIZE})
    plain = tower_job(model, processor, pixels, owners[:, None], [6], 2, 4, 0)
    job = tower_job(model, processor, pixels, owners[:, None], [6], 60, 8, 0, masks=masks)
    assert "outline" in job.modules and "outline" not in plain.modules  # checkpointed with the job
    first = float(job.loss(0))
    run(job)
    assert float(job.loss(0)) < first - 0.3  # attribute + mask loss on the same batch fell


def test_a_frozen_vision_model_keeps_its_tower_phase_weights_while_the_decoder_learns():
    """`captioner_job(freeze_vision=True)` after a tower phase on the same model: the tower
    phase trains the vision model; the captioning job leaves it exactly as that phase left it
    and trains the text decoder."""
    from model.fit import run
    from model.role_training import captioner_job, tower_job

    pixels, masks, owners, captions = _renders(4, 1)
    source = ensure_built("captioner")
    processor = BlipProcessor.from_pretrained(source)
    config = BlipForConditionalGeneration.from_pretrained(source).config
    job = captioner_job(config, processor, pixels, captions, steps=5, batch=4, lr=3e-3, seed=0, freeze_vision=True)
    model = job.modules["model"]
    tower = tower_job(model.vision_model, processor.image_processor, pixels, owners[:, None], [4], 5, 4, 0, masks)

    def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {name: value.clone() for name, value in module.state_dict().items()}

    initial_vision = weights(model.vision_model)
    run(tower)
    after_tower, decoder = weights(model.vision_model), weights(model.text_decoder)
    assert any(not torch.equal(initial_vision[k], after_tower[k]) for k in after_tower)
    run(job)
    assert all(torch.equal(after_tower[k], v) for k, v in weights(model.vision_model).items())
    assert any(not torch.equal(decoder[k], v) for k, v in weights(model.text_decoder).items())


def test_a_conv_stem_replaces_the_patch_embedding_at_the_same_token_grid():
    """The stem hands the ViT the grid its patch embedding would (so position tables, masks
    and the object encoder's patch tokens line up), and a config without one keeps the library's class."""
    from transformers import CLIPModel

    from model.conv_stem import ConvStem, clip_class
    from tasks.profile_roles import clip_config

    for patch, channels in ((4, (8, 16, 32)), (8, (8, 16, 16, 32))):
        assert ConvStem(24, patch, channels)(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 24, SIZE // patch, SIZE // patch)
    with pytest.raises(ValueError, match="needs 3 channel counts"):
        ConvStem(24, 4, (8, 16))
    stem = clip_config(SIZE, 32, (8, 16, 32))
    model = clip_class(stem)(stem)
    out = model.vision_model(pixel_values=torch.rand(2, 3, SIZE, SIZE)).last_hidden_state
    assert out.shape == (2, 1 + (SIZE // 4) ** 2, 32)
    assert clip_class(clip_config(SIZE, 32)) is CLIPModel


def test_the_dino_vit_with_a_stem_saves_and_loads_back_the_same_features(tmp_path):
    from transformers import ViTModel

    from model.conv_stem import ConvStem, load_vit, vit_class
    from tasks.profile_roles import dino_config

    assert vit_class(dino_config(SIZE, 32)) is ViTModel
    config = dino_config(SIZE, 32, (8, 16, 32))
    torch.manual_seed(0)
    model = vit_class(config)(config).eval()
    assert isinstance(model.embeddings.patch_embeddings.projection, ConvStem)
    model.save_pretrained(tmp_path, safe_serialization=True)
    pixels = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model(pixel_values=pixels).last_hidden_state
        loaded = load_vit(tmp_path).eval()(pixel_values=pixels).last_hidden_state
    assert expected.shape == (2, 1 + (SIZE // 4) ** 2, 32) and torch.allclose(expected, loaded)


def test_the_identity_contrastive_loss_is_low_only_when_views_of_one_object_agree():
    from model.role_training import identity_contrastive_loss

    owner = torch.tensor([0, 0, 1, 1, 2])  # object 2 has no second view: no positive, left out
    agree = torch.eye(3)[owner] * 5  # scale does not matter: the loss normalises
    assert float(identity_contrastive_loss(agree, owner)) < 1e-3
    crossed = torch.eye(3)[torch.tensor([0, 1, 1, 0, 2])]
    assert float(identity_contrastive_loss(crossed, owner)) > 5
    assert float(identity_contrastive_loss(agree[:4], owner[:4])) == pytest.approx(
        float(identity_contrastive_loss(agree, owner)), abs=1e-4)


def test_identity_pairs_draw_two_different_views_of_each_object_per_step():
    from model.role_training import _ViewPairs

    owner = torch.tensor([2, 0, 1, 0, 2, 1, 0, 1, 2])  # 3 objects x 3 views, in any order
    pairs = _ViewPairs(owner, batch=8, seed=0)
    for step in range(20):
        rows = pairs.rows(step)
        first, second = rows[:4], rows[4:]
        assert torch.equal(owner[first], owner[second]) and bool((first != second).all())
        assert torch.equal(rows, pairs.rows(step))  # a pure function of (seed, step): resumes exactly
    with pytest.raises(ValueError, match="same number of views"):
        _ViewPairs(torch.tensor([0, 0, 1]), batch=4, seed=0)
    with pytest.raises(ValueError, match="two views"):
        _ViewPairs(torch.tensor([0, 1]), batch=4, seed=0)


def test_the_dino_job_with_identity_pairs_brings_the_views_of_an_object_together():
    """On a handful of objects in random scenes, the contrastive term makes each view's nearest
    CLS token the other view of its object, which the attribute labels alone (all objects one
    class here) cannot."""
    from model.fit import run
    from model.role_training import identity_vit_job
    from tasks.profile_roles import dino_config

    pixels, _, owners, _ = _renders(8, 2)
    processor = ViTImageProcessor(size={"height": SIZE, "width": SIZE})
    labels = torch.zeros(len(owners), 1, dtype=torch.long)

    def top1(job) -> float:
        run(job)
        with torch.no_grad():
            cls = job.modules["model"].eval()(pixel_values=processor_pixels(pixels, processor)).last_hidden_state[:, 0]
        unit = torch.nn.functional.normalize(cls, dim=-1)
        similarity = (unit @ unit.T).fill_diagonal_(-2)
        return float((owners[similarity.argmax(1)] == owners).float().mean())

    config = dino_config(SIZE, 32, (8, 16, 32))
    plain = top1(identity_vit_job(config, processor, pixels, labels, [1], 200, 16, 0, owner=owners))
    paired = top1(identity_vit_job(config, processor, pixels, labels, [1], 200, 16, 0, owner=owners, contrastive=1.0))
    assert paired >= 0.75 and paired > plain + 0.25


def test_the_word_loss_teaches_the_text_tower_the_colour_words_the_captions_leave_out():
    """Captions that name only the shape leave CLIP unable to pick an image's colour among "a
    red thing", "a blue thing", ... (the image embedding holds colour through the heads, the
    text tower never saw it tied); the word loss ties them."""
    from model.fit import run
    from model.role_training import clip_job
    from tamer.synth_world import KEYS, attribute_prompts, random_subjects, render_views
    from tasks.profile_roles import clip_config, clip_processor

    data = render_views(random_subjects(12, 5), 2, SIZE, 5)
    captions = [[f"a {data.identity(i).shape}"] for i in range(len(data))]
    processor = clip_processor(SIZE)
    colour, prompts = KEYS.index("primary"), attribute_prompts("primary")
    classes = [int(data.labels[:, k].max()) + 1 for k in range(len(KEYS))]

    def zero_shot_colour(weight: float) -> float:
        job = clip_job(clip_config(SIZE, 64, (8, 16, 32)), processor, data.pixels, captions, data.labels, classes,
                       80, 16, 0, words=[(colour, prompts)], word_weight=weight)
        run(job)
        model = job.modules["model"].eval()
        with torch.no_grad():
            images = model.get_image_features(pixel_values=processor_pixels(data.pixels, processor.image_processor))
            texts = model.get_text_features(**processor.tokenizer(prompts, padding=True, return_tensors="pt"))
        picked = (images @ torch.nn.functional.normalize(texts, dim=-1).T).argmax(1)
        return float((picked == data.labels[:, colour]).float().mean())

    plain, worded = zero_shot_colour(0.0), zero_shot_colour(1.0)
    assert worded >= 0.6 and worded > plain + 0.4  # 8 colours: chance 0.125


def test_the_word_loss_offers_unrendered_words_as_wrong_classes_only():
    """With the vocabulary's real-object words appended ("a black thing", "a dog"), labels still
    point at the world's values, every appended word enters each column's softmax, and the
    columns after the first read their own prompts."""
    from transformers import CLIPModel

    from model.role_training import word_loss
    from tamer.synth_world import KEYS, UNRENDERED_WORDS, VOCAB, attribute_prompts
    from tasks.profile_roles import WORD_KEYS, clip_config, clip_processor

    torch.manual_seed(0)
    model = CLIPModel(clip_config(SIZE, 32, (8, 16, 32))).eval()
    tokenizer = clip_processor(SIZE).tokenizer
    labels = torch.stack([torch.randint(len(VOCAB[key]), (6,)) for key in KEYS], 1)

    def loss(unrendered: bool, embeds: torch.Tensor) -> float:
        words = [(KEYS.index(key), attribute_prompts(key, unrendered)) for key in WORD_KEYS]
        prompts = tokenizer([t for _, texts in words for t in texts], padding=True, return_tensors="pt")
        with torch.no_grad():
            return float(word_loss(model, embeds, prompts, words, labels))

    for key in WORD_KEYS:
        assert attribute_prompts(key, True)[:len(VOCAB[key])] == attribute_prompts(key)
        assert len(attribute_prompts(key, True)) == len(VOCAB[key]) + len(UNRENDERED_WORDS[key])
    with torch.no_grad():  # every image embedded where its true value's prompt is, per column
        texts = {key: model.get_text_features(**tokenizer(attribute_prompts(key), padding=True, return_tensors="pt"))
                 for key in WORD_KEYS}
    for key in WORD_KEYS:
        on_truth = texts[key][labels[:, KEYS.index(key)]]
        assert loss(True, on_truth) > loss(False, on_truth)  # the appended words join the softmax
    texture = labels[:, KEYS.index("texture")]
    on_wrong = texts["texture"][(texture + 1) % len(VOCAB["texture"])]
    assert loss(False, texts["texture"][texture]) < loss(False, on_wrong)  # the last column reads its own prompts
