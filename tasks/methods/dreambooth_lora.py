"""DreamBooth-LoRA: low-rank adapters on the base UNet's attention, saved and loaded back with
diffusers' LoRA loaders."""

from __future__ import annotations

import re

from model.dreambooth import subject_phrase
from model.dreambooth_lora import load_lora, save_lora, train_dreambooth_lora
from tamer.model_config import DreamBoothLoraConfig
from tasks.eval_subjects import Subject
from tasks.methods.base import State
from tasks.methods.shared_base import OnBasePipeline


class DreamBoothLora(OnBasePipeline):
    settings, label, color = DreamBoothLoraConfig, "DreamBooth-LoRA", "tab:green"
    stores = "LoRA weights"
    config: DreamBoothLoraConfig

    def prepare(self, subject: Subject) -> State:
        if self.loaded:
            self.pipe.delete_adapters(self.loaded)
        adapter = re.sub(r"\W", "_", subject.name)
        weights = train_dreambooth_lora(self.trainer(), subject.images, subject.class_noun, self.config, adapter)
        self.pipe.unet.delete_adapters(adapter)  # back to the base UNet; reload from the saved file
        path = save_lora(self.pipe, self.folder(subject), weights)
        load_lora(self.pipe, path, adapter)
        self.loaded = adapter
        return State(subject, subject_phrase(self.config, subject.class_noun), path.stat().st_size)
