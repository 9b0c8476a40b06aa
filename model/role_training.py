"""Trainers for the roles the `synth` profile learns from labelled renders: the attribute
oracle, CLIP (contrastive on render-caption pairs), the captioner (BLIP architecture, on
ground-truth descriptions), the segmentation model (Segformer, on the renders' masks) and the
`dino` role (a ViT whose CLS token learns identity, for the DINO score).

Inputs are tensors, not a world: pixels (N, 3, S, S) in [-1, 1], and per row labels, a
caption or a mask. Each role is a `*_job` (a `model.fit.Job`: the profile trainer runs it with
checkpoints under Ray Train) and a `train_*` that runs it in-process and returns the model in
eval mode and the seconds spent. The models are ordinary transformers/diffusers classes, so
`save_pretrained` + the profile's `from_pretrained` load them like any checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import (BlipConfig, BlipForConditionalGeneration, CLIPConfig, CLIPModel, SegformerConfig,
                          SegformerForSemanticSegmentation, ViTConfig)

from model.conv_stem import captioner_class, clip_class, vit_class
from model.fit import Job, run, step_generator
from model.oracle import AttributeOracle


def processor_pixels(pixels: torch.Tensor, image_processor) -> torch.Tensor:
    """[-1, 1] pixels already at the model's side -> what `image_processor` would feed it."""
    mean = torch.tensor(image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(1, 3, 1, 1)
    return ((pixels + 1) / 2 - mean) / std


def _rows(n: int, batch: int, seed: int, step: int) -> torch.Tensor:
    return torch.randint(0, n, (batch,), generator=step_generator(seed, step))


def sincos_positions_(table: torch.Tensor) -> torch.Tensor:
    """Start a ViT's learned position table ((1+G*G, D) or (1, 1+G*G, D): CLS first, then a
    G x G patch grid) at 2D sin-cos values, in place (still trained), as ViTs trained from scratch do
    (MAE; Beyer et al. 2022). At the library's init (std 0.02 against patch embeddings near
    0.14) the CLS token of these 32 px ViTs never learned where the object is: a position head
    on CLIP's vision CLS stayed at chance (loss ln 9) for 300 steps, and reached 0.66 with this."""
    rows, dim = table.shape[-2], table.shape[-1]
    grid, quarter = round((rows - 1) ** 0.5), dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
                            indexing="ij")
    waves = [f(c.reshape(-1, 1) * omega) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    values = torch.cat([torch.zeros(1, dim), torch.cat(waves, dim=1)])
    with torch.no_grad():
        table.copy_(values.view_as(table))
    return table


def _attribute_loss(heads: torch.nn.ModuleList, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over attributes of each linear head's cross-entropy (head k reads column k)."""
    return sum(torch.nn.functional.cross_entropy(head(features), labels[:, k]) for k, head in enumerate(heads))


def _trained(job: Job) -> tuple[torch.nn.Module, float]:
    seconds = run(job)
    return job.modules["model"].eval(), seconds


def oracle_job(pixels: torch.Tensor, labels: torch.Tensor, vocabulary: dict[str, list[str]], steps: int,
               batch: int, seed: int, width: int = 24) -> Job:
    """Cross-entropy on every attribute head; `labels` (N, len(vocabulary)) are value indices."""
    torch.manual_seed(seed)
    oracle = AttributeOracle.for_vocabulary(vocabulary, width).train()

    def loss(step: int) -> torch.Tensor:
        rows = _rows(len(labels), batch, seed, step)
        return oracle.loss(pixels[rows], labels[rows])

    return Job({"model": oracle}, loss, steps, 3e-3, weight_decay=1e-4)


def train_oracle(*args, **kwargs) -> tuple[AttributeOracle, float]:
    return _trained(oracle_job(*args, **kwargs))


def clip_job(config: CLIPConfig, processor, pixels: torch.Tensor, captions: Sequence[Sequence[str]],
             labels: torch.Tensor, classes: Sequence[int], steps: int, batch: int, seed: int,
             words: Sequence[tuple[int, Sequence[str]]] = (), word_weight: float = 0.0) -> Job:
    """Symmetric InfoNCE on (render, caption) pairs, where each row has several captions of
    itself (`captions[i]`: its variants) and every step draws one per row. Short variants repeat
    within a batch ("a red star" twice), so rows whose drawn captions are identical are all
    positives of each other (soft targets) rather than negatives of each other.

    Plus linear attribute heads on the image embedding (`labels` as in `identity_vit_job`;
    checkpointed, not exported): from scratch, contrastive learning alone left the ViT image
    tower at chance on shape after 800 steps (CLIP's own image tower saw 400M pairs); with the
    labels this world has, the embedding the text must match carries every attribute early.

    `words`: (label column, one prompt per value, then any wrong classes) pairs; with `word_weight` > 0 each image is
    also classified among its column's prompts through the text tower, as zero-shot
    classification reads it (`word_loss`). The heads above put colour in the image embedding
    (0.95 on fresh renders) while zero-shot colour read 0.79: the text side of the match is
    what they leave untrained."""
    torch.manual_seed(seed)
    model = clip_class(config)(config).train()
    sincos_positions_(model.vision_model.embeddings.position_embedding.weight)
    heads = torch.nn.ModuleList(torch.nn.Linear(config.projection_dim, n) for n in classes)
    variants = len(captions[0])
    flat = [text for row in captions for text in row]
    tokens = processor.tokenizer(flat, padding=True, truncation=True, return_tensors="pt")
    ids = tokens.input_ids.view(len(captions), variants, -1)
    mask = tokens.attention_mask.view(len(captions), variants, -1)
    inputs = processor_pixels(pixels, processor.image_processor)
    prompts = (processor.tokenizer([text for _, texts in words for text in texts], padding=True, return_tensors="pt")
               if words else None)

    def loss(step: int) -> torch.Tensor:
        generator = step_generator(seed, step)
        rows = torch.randint(0, len(inputs), (batch,), generator=generator)
        pick = torch.randint(0, variants, (batch,), generator=generator)
        row_ids, row_mask = ids[rows, pick], mask[rows, pick]
        out = model(input_ids=row_ids, attention_mask=row_mask, pixel_values=inputs[rows])
        same = (row_ids[:, None, :] == row_ids[None, :, :]).all(-1).float()
        targets = same / same.sum(1, keepdim=True)
        cross_entropy = torch.nn.functional.cross_entropy
        contrastive = (cross_entropy(out.logits_per_image, targets) + cross_entropy(out.logits_per_text, targets)) / 2
        total = contrastive + _attribute_loss(heads, out.image_embeds, labels[rows])
        if word_weight:
            total = total + word_weight * word_loss(model, out.image_embeds, prompts, words, labels[rows])
        return total

    return Job({"model": model, "heads": heads}, loss, steps, 1e-3, weight_decay=0.05)


def word_loss(model, image_embeds: torch.Tensor, prompts, words: Sequence[tuple[int, Sequence[str]]],
              labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of zero-shot classification: for each (column, prompts) of `words`,
    the unit image embeddings against the unit text embeddings of that column's prompts (all
    prompts in one text batch, `prompts` their tokens), at CLIP's own logit scale. A column's
    prompts past its number of values are wrong classes only (no label points at them)."""
    text = torch.nn.functional.normalize(model.get_text_features(**prompts), dim=-1)
    logits = model.logit_scale.exp() * torch.nn.functional.normalize(image_embeds, dim=-1) @ text.T
    losses, start = [], 0
    for column, texts in words:
        losses.append(torch.nn.functional.cross_entropy(logits[:, start:start + len(texts)], labels[:, column]))
        start += len(texts)
    return torch.stack(losses).mean()


def train_clip(*args, **kwargs) -> tuple[CLIPModel, float]:
    return _trained(clip_job(*args, **kwargs))


def captioner_job(config: BlipConfig, processor, pixels: torch.Tensor, captions: Sequence[str], steps: int,
                  batch: int, lr: float, seed: int, freeze_vision: bool = False) -> Job:
    """Teacher-forced captioning loss. The first token is BLIP's [DEC] (bos), as at generation
    time (`generate` starts from it); padding is ignored by the loss.

    `freeze_vision`: the vision model keeps the weights a tower phase gave it (`tower_job`).
    After 6,000 tower steps, 600 captioning steps with it frozen named the primary colour in
    0.67 of fresh captions and the shape in 0.17, against 0.42 and 0.105 with it trained on:
    the captioning loss at this learning rate wore down what the tower had learned."""
    torch.manual_seed(seed)
    model = captioner_class(config)(config).train()
    sincos_positions_(model.vision_model.embeddings.position_embedding)
    tokens = processor.tokenizer(list(captions), padding=True, truncation=True, max_length=48,
                                 return_tensors="pt")
    ids = tokens.input_ids.clone()
    ids[:, 0] = config.text_config.bos_token_id
    labels = ids.masked_fill(tokens.attention_mask == 0, -100)
    inputs = processor_pixels(pixels, processor.image_processor)

    def loss(step: int) -> torch.Tensor:
        rows = _rows(len(ids), batch, seed, step)
        return model(pixel_values=inputs[rows], input_ids=ids[rows],
                     attention_mask=tokens.attention_mask[rows], labels=labels[rows]).loss

    return Job({"model": model}, loss, steps, lr, frozen=(model.vision_model,) if freeze_vision else ())


def train_captioner(*args, **kwargs) -> tuple[BlipForConditionalGeneration, float]:
    return _trained(captioner_job(*args, **kwargs))


def segmentation_job(config: SegformerConfig, image_processor, pixels: torch.Tensor, masks: torch.Tensor,
                     steps: int, batch: int, lr: float, seed: int) -> Job:
    """Per-pixel cross-entropy against the renders' masks (N, 1, S, S) in {0, 1}: label 1 is
    the object (the profile's `{0: background, 1: foreground}`)."""
    torch.manual_seed(seed)
    model = SegformerForSemanticSegmentation(config).train()
    inputs = processor_pixels(pixels, image_processor)
    targets = (masks[:, 0] > 0.5).long()

    def loss(step: int) -> torch.Tensor:
        rows = _rows(len(targets), batch, seed, step)
        return model(pixel_values=inputs[rows], labels=targets[rows]).loss

    return Job({"model": model}, loss, steps, lr)


def train_segmentation(*args, **kwargs) -> tuple[SegformerForSemanticSegmentation, float]:
    return _trained(segmentation_job(*args, **kwargs))


def identity_vit_job(config: ViTConfig, image_processor, pixels: torch.Tensor, labels: torch.Tensor,
                     classes: Sequence[int], steps: int, batch: int, seed: int,
                     masks: torch.Tensor | None = None, owner: torch.Tensor | None = None,
                     contrastive: float = 0.0) -> Job:
    """A ViT whose CLS token names the identity attributes (`labels` (N, len(classes)), column
    k taking `classes[k]` values) whatever the scene. The DINO score compares CLS tokens of a
    generation and its reference, so what it needs from the backbone is features that change
    with identity and not with background, pose or lighting; DINO learns that self-supervised
    from a web-scale corpus, this world has the labels. The role is the bare `ViTModel` (or
    `ConvStemViTModel` where the config names a stem; `tower_job` for the heads and `masks`).

    With `owner` (the object of each row, every object with the same number of views) and a
    `contrastive` weight, each step's batch is two views of `batch // 2` objects and the CLS
    tokens also learn `identity_contrastive_loss`: the attributes alone name what an object is
    made of, but two objects that differ in none of the read attributes, or a texture the heads
    half read, still need the CLS to say "same object" across scenes (identity groups, DINO)."""
    torch.manual_seed(seed)
    model = vit_class(config)(config).train()  # the pooler stays untrained: exported whole, it loads without warnings
    sincos_positions_(model.embeddings.position_embeddings)
    extra = None
    if owner is not None and contrastive > 0:
        extra = (_ViewPairs(owner, batch, seed).rows,
                 lambda cls, rows: contrastive * identity_contrastive_loss(cls, owner[rows]))
    return tower_job(model, image_processor, pixels, labels, classes, steps, batch, seed, masks, extra)


CONTRASTIVE_TEMPERATURE = 0.1  # SimCLR's and SupCon's choice for unit vectors


def identity_contrastive_loss(features: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Multi-positive InfoNCE (SupCon, Khosla et al. 2020) on unit `features` (B, D): each row's
    positives are the other rows of its object (`owner` (B,)), every other row a negative."""
    unit = torch.nn.functional.normalize(features, dim=-1)
    logits = (unit @ unit.T / CONTRASTIVE_TEMPERATURE).masked_fill(torch.eye(len(unit), dtype=torch.bool), -1e9)
    same = (owner[:, None] == owner[None, :]).float().fill_diagonal_(0)
    keep = same.sum(1) > 0  # a row whose object has no second view in the batch has no positive
    targets = same[keep] / same[keep].sum(1, keepdim=True)
    return torch.nn.functional.cross_entropy(logits[keep], targets)


class _ViewPairs:
    """Each step's rows: two different views of each of `batch // 2` objects drawn at random."""

    def __init__(self, owner: torch.Tensor, batch: int, seed: int):
        order = torch.argsort(owner, stable=True)
        objects = int(owner.max()) + 1
        if len(owner) % objects or not torch.equal(owner[order], torch.arange(objects).repeat_interleave(len(owner) // objects)):
            raise ValueError("identity pairs need every object 0..K-1 with the same number of views")
        self.views = order.view(objects, -1)
        if self.views.shape[1] < 2:
            raise ValueError("identity pairs need at least two views of each object")
        self.half, self.seed = batch // 2, seed

    def rows(self, step: int) -> torch.Tensor:
        generator = step_generator(self.seed, step)
        objects = torch.randint(0, len(self.views), (self.half,), generator=generator)
        count = self.views.shape[1]
        first = torch.randint(0, count, (self.half,), generator=generator)
        second = (first + torch.randint(1, count, (self.half,), generator=generator)) % count
        return torch.cat([self.views[objects, first], self.views[objects, second]])


def tower_job(tower: torch.nn.Module, image_processor, pixels: torch.Tensor, labels: torch.Tensor,
              classes: Sequence[int], steps: int, batch: int, seed: int, masks: torch.Tensor | None = None,
              extra: tuple[Callable[[int], torch.Tensor], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] | None = None
              ) -> Job:
    """Supervised training of a ViT image tower (`ViTModel`, CLIP's or BLIP's vision model: any
    module whose output's `last_hidden_state` is CLS then patch tokens): linear heads on the CLS
    token name the attributes (`labels` as in `identity_vit_job`), and with `masks` (N, 1, S, S)
    each patch token also predicts its patch of the object's mask (BCE per pixel). With `extra`
    = (rows of a step, loss of (CLS tokens, rows)), the step's rows come from the first and the
    second adds a term on the CLS tokens. The heads are checkpointed (so a resume is exact) but
    not exported.

    Why masks: trained on the shape label alone for 8,000 steps, a 4 px-patch ViT read held-out
    shape 0.29 at 4,000 steps and 0.66 at the end, and 0.59 and 0.90 with this supervision
    (`benchmarks/vit_shape_curve.py`): the outline is local, the tokens learn it first, and the
    CLS token then reads shape from them. Why a tower phase at all: inside CLIP's contrastive
    loop the same tower read primary colour 0.37 and shape 0.17 after 2,000 steps (a step there
    also runs the text tower on a batch twice the size)."""
    config = tower.config
    heads = torch.nn.ModuleList(torch.nn.Linear(config.hidden_size, n) for n in classes)
    outline = _MaskHead(config.hidden_size, masks, config.patch_size) if masks is not None else None
    inputs = processor_pixels(pixels, image_processor)

    def loss(step: int) -> torch.Tensor:
        rows = _rows(len(labels), batch, seed, step) if extra is None else extra[0](step)
        tokens = tower(pixel_values=inputs[rows]).last_hidden_state
        total = _attribute_loss(heads, tokens[:, 0], labels[rows])
        if outline is not None:
            total = total + outline.loss(tokens, rows)
        return total if extra is None else total + extra[1](tokens[:, 0], rows)

    modules = {"model": tower, "heads": heads} | ({"outline": outline} if outline is not None else {})
    return Job(modules, loss, steps, 1e-3, weight_decay=0.05)


class _MaskHead(torch.nn.Module):
    """Per-patch mask supervision for a ViT: a linear map from each patch token to its patch's
    mask pixels, scored by binary cross-entropy (checkpointed with the job, not exported)."""

    def __init__(self, width: int, masks: torch.Tensor, patch: int):
        super().__init__()
        self.head = torch.nn.Linear(width, patch * patch)
        self.register_buffer("targets", _patch_masks(masks, patch), persistent=False)

    def loss(self, tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """`tokens` (B, 1 + G*G, D), CLS first, for the renders `rows`."""
        return torch.nn.functional.binary_cross_entropy_with_logits(self.head(tokens[:, 1:]), self.targets[rows])


def _patch_masks(masks: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, 1, S, S) masks -> (N, (S/patch)^2, patch^2): each patch's pixels, in the ViT's token order."""
    grid = masks.shape[-1] // patch
    return masks[:, 0].unfold(1, patch, patch).unfold(2, patch, patch).reshape(len(masks), grid * grid, patch * patch)
