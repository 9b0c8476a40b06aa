"""Textual Inversion: a learned word for the subject on the frozen base, in diffusers' format."""

from __future__ import annotations

import copy

from model.base_family import family_of
from model.textual_inversion import (load_learned_embeds, save_learned_embeds, train_textual_inversion,
                                     unload_learned_embeds)
from tamer.model_config import TextualInversionConfig
from tasks.eval_subjects import Subject
from tasks.methods.base import State
from tasks.methods.shared_base import OnBasePipeline


class TextualInversion(OnBasePipeline):
    settings, label, color = TextualInversionConfig, "Textual Inversion", "tab:blue"
    stores = "learned embedding"
    config: TextualInversionConfig

    def prepare(self, subject: Subject) -> State:
        token = f"<{subject.name}>"
        # Train on private copies of the text side, so the shared pipeline stays the base model.
        trainer = self.trainer(**{name: copy.deepcopy(getattr(self.pipe, name))
                                  for part in family_of(self.pipe).text_parts for name in part[:2]})
        embeds = train_textual_inversion(trainer, subject.images, token, subject.class_noun, self.config)
        path = save_learned_embeds(self.folder(subject), token, embeds)
        if self.loaded:
            unload_learned_embeds(self.pipe, self.loaded)
        load_learned_embeds(self.pipe, path, token)
        self.loaded = token
        return State(subject, token, path.stat().st_size)
