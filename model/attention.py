"""Object cross-attention as diffusers attention processors, installed beside the text
cross-attention of any `UNet2DConditionModel` and removed again without a trace; and the
adapter (projection + object attention) that saves to its own safetensors file.

How object tokens reach the processors: they are concatenated after the text tokens,
`encoder_hidden_states = cat([text (B, L, D), object (B, K, D)], dim=1)`, and every processor
splits off the last K (diffusers' IP-Adapter concatenation convention). This passes through any
UNet forward untouched, needs no `cross_attention_kwargs` (which would also reach, and warn in,
the self-attention processors), and an all-zero object tail adds exactly nothing (the object
keys and values have no bias, so zero tokens give zero values).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from safetensors.torch import load_file, save_file
from torch import nn

from model.encoder import ObjectProjection


class ObjectAttnProcessor(nn.Module):
    """Text cross-attention plus `scale * attention(q, k_obj, v_obj)`, sharing query and output
    projection with the base attention; owns only `to_k_obj` / `to_v_obj`.

    The text path is the same computation as diffusers' `AttnProcessor2_0`, so scale 0 gives the
    base UNet's output bit for bit.
    """

    def __init__(self, inner_dim: int, cross_attention_dim: int, num_tokens: int, scale: float = 1.0):
        super().__init__()
        self.num_tokens = num_tokens
        self.scale = scale
        self.to_k_obj = nn.Linear(cross_attention_dim, inner_dim, bias=False)
        self.to_v_obj = nn.Linear(cross_attention_dim, inner_dim, bias=False)

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        text_states = encoder_hidden_states[:, : -self.num_tokens]  # (B, L, D)
        object_states = encoder_hidden_states[:, -self.num_tokens :]  # (B, K, D)

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, text_length, _ = text_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, text_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)  # (B, N, inner)
        if attn.norm_cross:
            text_states = attn.norm_encoder_hidden_states(text_states)
        heads = attn.heads
        head_dim = query.shape[-1] // heads
        query = query.view(batch_size, -1, heads, head_dim).transpose(1, 2)  # (B, h, N, d)
        if attn.norm_q is not None:
            query = attn.norm_q(query)

        hidden_states = self._attend(attn, query, attn.to_k(text_states), attn.to_v(text_states), attention_mask)
        if self.scale != 0:
            object_out = self._attend(attn, query, self.to_k_obj(object_states), self.to_v_obj(object_states), None)
            hidden_states = hidden_states + self.scale * object_out  # (B, N, inner)

        hidden_states = attn.to_out[0](hidden_states)  # shared output projection
        hidden_states = attn.to_out[1](hidden_states)  # dropout
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    @staticmethod
    def _attend(attn: Attention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        """query (B, h, N, d), key/value (B, S, inner) -> (B, N, inner)."""
        batch_size, heads, _, head_dim = query.shape
        key = key.view(batch_size, -1, heads, head_dim).transpose(1, 2)  # (B, h, S, d)
        value = value.view(batch_size, -1, heads, head_dim).transpose(1, 2)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
        return out.transpose(1, 2).reshape(batch_size, -1, heads * head_dim).to(query.dtype)


class ObjectAttention(nn.Module):
    """The set of object processors for one UNet: built from it, installed into it, removed.

    Holds the processors in a ModuleDict (their weights are this module's state_dict), and the
    UNet's original processors while installed, so `uninstall` restores the very same objects.
    """

    def __init__(self, unet: UNet2DConditionModel, num_tokens: int, scale: float = 1.0):
        super().__init__()
        self.num_tokens = num_tokens
        width = unet.config.cross_attention_dim  # object tokens live in the text tokens' width
        processors = {}
        for name, module in unet.named_modules():
            if isinstance(module, Attention) and module.is_cross_attention:
                processor = ObjectAttnProcessor(module.inner_dim, width, num_tokens, scale)
                # start from the text K/V: object tokens then begin as "more text-like context"
                processor.to_k_obj.weight.data.copy_(module.to_k.weight.data)
                processor.to_v_obj.weight.data.copy_(module.to_v.weight.data)
                processors[_key(name)] = processor
        if not processors:
            raise ValueError("this UNet has no cross-attention layers to condition on an object")
        self.processors = nn.ModuleDict(processors).to(device=unet.device, dtype=unet.dtype)
        self._originals: dict[str, object] | None = None

    @property
    def installed(self) -> bool:
        return self._originals is not None

    def set_scale(self, scale: float) -> None:
        for processor in self.processors.values():
            processor.scale = scale

    def install(self, unet: UNet2DConditionModel) -> None:
        if self.installed:
            raise RuntimeError("object attention is already installed")
        originals = dict(unet.attn_processors)  # name "....attn2.processor" -> processor
        replaced = dict(originals)
        for key, processor in self.processors.items():
            name = f"{_name(key)}.processor"
            if name not in replaced:
                raise ValueError(f"UNet has no attention layer {name!r}; built for another UNet?")
            replaced[name] = processor
        unet.set_attn_processor(replaced)
        self._originals = originals

    def uninstall(self, unet: UNet2DConditionModel) -> None:
        if self._originals is None:
            raise RuntimeError("object attention is not installed")
        unet.set_attn_processor(self._originals)
        self._originals = None


def _key(module_name: str) -> str:
    """ModuleDict keys may not contain dots."""
    return module_name.replace(".", "__")


def _name(key: str) -> str:
    return key.replace("__", ".")


class ObjectAdapter(nn.Module):
    """Everything the method adds to a pretrained UNet: the object projection and the object
    attention. Its state_dict is the adapter file; the base UNet's own weights are not in it."""

    def __init__(self, unet: UNet2DConditionModel, vision_hidden_size: int, num_tokens: int, scale: float = 1.0):
        super().__init__()
        width = unet.config.cross_attention_dim
        self.projection = ObjectProjection(vision_hidden_size, width, num_tokens).to(unet.device, unet.dtype)
        self.attention = ObjectAttention(unet, num_tokens, scale)

    @property
    def num_tokens(self) -> int:
        return self.attention.num_tokens

    def save(self, path: str | Path) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(path))

    def load(self, path: str | Path) -> None:
        """Strict: a file built for another UNet or token count fails with the mismatched keys."""
        device = next(self.parameters()).device
        self.load_state_dict(load_file(str(path), device=str(device)), strict=True)
