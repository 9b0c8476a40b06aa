"""DreamBooth, full fine-tune: the whole base UNet trained on the subject ("a photo of sks
<class>", no prior preservation), saved per subject in diffusers' format and loaded back; the
report's bytes per subject are a whole UNet."""

from __future__ import annotations

import copy

from diffusers import UNet2DConditionModel

from model.dreambooth import save_unet, subject_phrase, train_dreambooth_full
from tamer.model_config import DreamBoothConfig
from tasks.eval_subjects import Subject
from tasks.methods.base import Context, State, folder_bytes
from tasks.methods.shared_base import OnBasePipeline


class DreamBooth(OnBasePipeline):
    settings, label, color = DreamBoothConfig, "DreamBooth (full UNet)", "tab:purple"
    stores = "the whole UNet"
    config: DreamBoothConfig

    def __init__(self, context: Context, config: DreamBoothConfig):
        super().__init__(context, config)
        self.base_unet = self.pipe.unet  # every subject starts from it; it is never trained

    def prepare(self, subject: Subject) -> State:
        unet = copy.deepcopy(self.base_unet)
        train_dreambooth_full(self.trainer(unet=unet), subject.images, subject.class_noun, self.config)
        folder = save_unet(unet, self.folder(subject))
        del unet  # the previous subject's UNet goes too: at most base + one subject's in memory
        self.pipe.unet = UNet2DConditionModel.from_pretrained(str(folder)).to(
            self.base_unet.device, self.base_unet.dtype)
        return State(subject, subject_phrase(self.config, subject.class_noun), folder_bytes(folder))
