"""Training-step invariants: what trains, what the identity loss touches and costs, overfitting."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import make_batch, tiny_model

from model.tamer_model import TamerModel, TamerModelConfig

FROZEN = ("vae", "text_encoders", "object_encoder")


def _calls(module: torch.nn.Module) -> list[tuple[tuple, dict]]:
    """Record (args, kwargs) of every forward call of `module`."""
    seen: list = []
    module.register_forward_hook(lambda mod, args, kwargs, out: seen.append((args, kwargs)), with_kwargs=True)
    return seen


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("trainable", ["adapter", "full"])
def test_frozen_parts_do_not_change_and_are_not_in_the_optimizer(trainable):
    model = tiny_model(trainable=trainable, identity_loss_max_timestep=1000)  # identity on every row
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    base_unet = [p for n, p in model.unet.named_parameters() if ".processor." not in n]
    frozen = [p for name in FROZEN for p in getattr(model, name).parameters()]
    if trainable == "adapter":
        frozen += base_unet
    assert frozen and not any(id(p) in in_optimizer for p in frozen)
    assert all(id(p) in in_optimizer for p in model.adapter.parameters())
    assert all(id(p) in in_optimizer for p in base_unet) == (trainable == "full")

    before = {name: _snapshot(getattr(model, name)) for name in (*FROZEN, "unet", "adapter")}
    loss = model.training_step(make_batch(model, 4), torch.Generator().manual_seed(0))["total"]
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in frozen)
    assert len(optimizer.state) == len(params)
    for name in FROZEN:
        assert all(torch.equal(v, getattr(model, name).state_dict()[k]) for k, v in before[name].items()), name
    unet_after = model.unet.state_dict()
    base_same = all(torch.equal(v, unet_after[k]) for k, v in before["unet"].items() if ".processor." not in k)
    assert base_same == (trainable == "adapter")
    assert not all(torch.equal(v, model.adapter.state_dict()[k]) for k, v in before["adapter"].items())


def test_identity_loss_reaches_trainable_parameters_only():
    model = tiny_model(trainable="full", identity_loss_weight=1.0, identity_loss_max_timestep=1000)
    terms = model.training_step(make_batch(model, 2), torch.Generator().manual_seed(0))
    assert terms["identity"] > 0
    terms["identity"].backward()  # the identity term alone
    projection_grads = [p.grad for p in model.adapter.projection.parameters()]
    assert all(g is not None for g in projection_grads) and any(g.abs().sum() > 0 for g in projection_grads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.unet.parameters())
    assert all(p.grad is None for name in FROZEN for p in getattr(model, name).parameters())


@pytest.mark.parametrize("weight, cutoff, decodes", [(0.0, 1000, 0), (0.1, 0, 0), (0.1, 1000, 1)])
def test_identity_loss_costs_nothing_when_off(weight, cutoff, decodes):
    model = tiny_model(identity_loss_weight=weight, identity_loss_max_timestep=cutoff)
    decoder_calls, tower_calls = _calls(model.vae.decoder), _calls(model.object_encoder.tower)
    terms = model.training_step(make_batch(model, 2), torch.Generator().manual_seed(0))
    assert len(decoder_calls) == decodes
    assert len(tower_calls) == 1 + decodes  # the reference pass, plus the prediction's
    assert (terms["identity"] > 0) == bool(decodes)


def test_conditioning_dropout_drops_text_and_object():
    model = tiny_model(text_dropout=1.0, object_dropout=1.0)
    text_calls, tower_calls = _calls(model.text_encoders[0]), _calls(model.object_encoder.tower)
    model.training_step(make_batch(model, 3), torch.Generator().manual_seed(0))
    assert torch.equal(text_calls[0][0][0], model.empty_ids["input_ids"].expand(3, -1))
    assert not tower_calls  # no object row left: the encoder is skipped, tokens are exact zeros


def test_general_rows_skip_the_encoder_and_same_seed_same_loss():
    model = tiny_model(object_dropout=0.0)
    batch = make_batch(model, 4, domain=1)
    tower_calls = _calls(model.object_encoder.tower)
    a = model.training_step(batch, torch.Generator().manual_seed(3))["total"]
    b = model.training_step(batch, torch.Generator().manual_seed(3))["total"]
    assert [kwargs["pixel_values"].shape[0] for _, kwargs in tower_calls] == [1, 1]  # the domain row only
    assert torch.equal(a, b)


def test_checkpoint_state_round_trip():
    model = tiny_model(trainable="full")
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    model.training_step(make_batch(model, 2), torch.Generator().manual_seed(0))["total"].backward()
    optimizer.step()
    state = model.state_for_checkpoint()
    assert not any(".processor." in k for k in state["unet"])
    fresh = tiny_model(trainable="full")
    fresh.load_checkpoint_state(state)
    batch = make_batch(model, 2)
    with torch.no_grad():
        a = model.training_step(batch, torch.Generator().manual_seed(1))["total"]
        b = fresh.training_step(batch, torch.Generator().manual_seed(1))["total"]
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        tiny_model(trainable="adapter").load_checkpoint_state(state)


def test_overfits_one_object():
    torch.manual_seed(0)
    model = tiny_model(trainable="full", identity_loss_weight=0.0, text_dropout=0.0, object_dropout=0.0)
    batch = make_batch(model, 4)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    losses = []
    for step in range(160):
        # a fixed set of 4 noise/timestep draws: the loss curve then shows learning, not sampling noise
        terms = model.training_step(batch, torch.Generator().manual_seed(step % 4))
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        losses.append(terms["diffusion"].item())
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first, (first, last)


def test_from_profile_with_segmenter_and_data_masks():
    model = TamerModel.from_profile("tiny", TamerModelConfig(identity_loss_max_timestep=1000))
    assert model.pipe.segmenter is not None and model.unet.dtype == torch.float32
    batch = make_batch(model, 3)
    batch["reference_mask"] = torch.zeros(3, 1, 32, 32)
    batch["reference_mask"][0, :, 8:24, 8:24] = 1
    batch["has_mask"] = torch.tensor([True, False, False])  # rows 1-2 fall back to the segmenter
    terms = model.training_step(batch, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in terms.values()) and terms["total"].requires_grad
