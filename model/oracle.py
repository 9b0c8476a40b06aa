"""The attribute oracle: a small CNN that reads every labelled attribute of a synth render
(shape, colours, texture, eyes; background, position, scale, rotation, lighting), so evaluation
on synth subjects can count identity and prompt accuracy of generated images.

A diffusers `ModelMixin` + `ConfigMixin`: its vocabulary lives in its config, and it saves and
loads with `save_pretrained` / `from_pretrained` (safetensors) like every other profile role.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


class AttributeOracle(ModelMixin, ConfigMixin):
    """Image (B, 3, S, S) in [-1, 1] -> one logit vector per attribute of `vocabulary`.

    Four conv stages of two convs each keep full resolution early (eyes and textures are a few
    pixels at 32 px), then a global pool; position stays readable through appended coordinate
    channels and a 2x2 pool. One conv per stage underfit identity (shape 0.93, texture 0.69 on
    its own training renders).
    """

    @register_to_config
    def __init__(self, attributes: list[str] | None = None, values: list[list[str]] | None = None,
                 width: int = 24):
        """`attributes[k]` takes one of `values[k]` (two lists, since a saved config's dicts
        come back with sorted keys and the label columns follow this order)."""
        super().__init__()
        if not attributes or len(attributes) != len(values or []):
            raise ValueError("the oracle needs attributes and one list of values per attribute")
        vocabulary = dict(zip(attributes, values))
        self.features = nn.Sequential(_stage(5, width), nn.MaxPool2d(2), _stage(width, 2 * width), nn.MaxPool2d(2),
                                      _stage(2 * width, 4 * width), nn.MaxPool2d(2), _stage(4 * width, 4 * width))
        self.heads = nn.ModuleDict({key: nn.Linear(4 * width * 5, len(values))
                                    for key, values in vocabulary.items()})

    @classmethod
    def for_vocabulary(cls, vocabulary: dict[str, list[str]], width: int = 24) -> AttributeOracle:
        return cls(list(vocabulary), [list(v) for v in vocabulary.values()], width)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.config.attributes)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = images.shape
        ys = torch.linspace(-1, 1, h, device=images.device).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=images.device).view(1, 1, 1, w).expand(b, 1, h, w)
        x = self.features(torch.cat([images, xs, ys], dim=1))  # (B, C, h/8, w/8)
        pooled = torch.cat([x.mean((2, 3)), F.adaptive_avg_pool2d(x, 2).flatten(1)], dim=1)  # (B, 5C)
        return {key: head(pooled) for key, head in self.heads.items()}

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sum of per-attribute cross-entropies; `labels` is (B, len(keys)) vocabulary indices."""
        logits = self(images)
        return sum(F.cross_entropy(logits[key], labels[:, k]) for k, key in enumerate(self.keys))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """(N, 3, S, S) -> (N, len(keys)) predicted vocabulary indices."""
        was_training = self.training
        self.eval()
        out = []
        for i in range(0, len(images), batch):
            logits = self(images[i:i + batch])
            out.append(torch.stack([logits[key].argmax(-1) for key in self.keys], dim=1))
        self.train(was_training)
        return torch.cat(out)
