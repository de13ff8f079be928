"""The critic on the policy's own base model: a second LoRA adapter plus a scalar value head.

Under QLoRA the quantized base is held once: the policy is the ``default`` adapter, the
critic the ``critic`` adapter on the same modules, and V(s_t) = w . h_t + b reads the last
hidden state of the backbone run with the critic adapter active. PEFT's multi-adapter API
(``add_adapter``, ``set_adapter``) switches between them.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

import torch

CRITIC_ADAPTER = "critic"
VALUE_HEAD = "rlplug_value_head"


def add_critic(model: torch.nn.Module) -> torch.nn.Module:
    """Add the ``critic`` adapter (a copy of the policy's LoRA config) and a zero-initialized
    value head to a PEFT model; returns the head. V starts at 0 for every state."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise ValueError(
            "the ppo trainer's critic shares the policy's base model behind a second LoRA adapter: "
            "pass a peft_config (LoRA or QLoRA); a full fine-tuning policy has no adapter to share"
        )
    policy_adapter = model.active_adapter
    model.add_adapter(CRITIC_ADAPTER, copy.deepcopy(model.peft_config[policy_adapter]))
    model.set_adapter(policy_adapter)
    parameters = dict(model.named_parameters())
    with torch.no_grad():  # the critic's LoRA in the policy's LoRA dtype (TRL keeps QLoRA adapters in bf16)
        for name, parameter in parameters.items():
            if f".{CRITIC_ADAPTER}." in name:
                parameter.data = parameter.data.to(parameters[name.replace(f".{CRITIC_ADAPTER}.", f".{policy_adapter}.")].dtype)
    head = torch.nn.Linear(model.config.hidden_size, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    device = next(p for p in model.parameters() if p.requires_grad).device
    model.add_module(VALUE_HEAD, head.to(device))
    for name, parameter in critic_parameters(model):
        parameter.requires_grad_(True)
    return head


def critic_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The critic's own parameters: its LoRA matrices and the value head, by name."""
    return [
        (name, p) for name, p in model.named_parameters()
        if f".{CRITIC_ADAPTER}." in name or name.startswith(f"{VALUE_HEAD}.")
    ]


@contextmanager
def critic_active(model: torch.nn.Module) -> Iterator[None]:
    """Run the critic adapter inside the block, then the policy's again.

    PEFT's ``set_adapter`` also flips ``requires_grad`` (the inactive adapter is frozen); the
    flags are restored on exit, so both adapters keep training from one backward pass.
    """
    policy_adapter = model.active_adapter
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.set_adapter(CRITIC_ADAPTER)
    try:
        yield
    finally:
        model.set_adapter(policy_adapter)
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])


def critic_values(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_length: int
) -> torch.Tensor:
    """(B, T) values V(s_t) of the states before each completion token (aligned with the log-probs).

    The state before completion token t is everything up to position P + t - 1, so its value
    is read from that position's hidden state, as the token's logit is. Call it inside
    :func:`critic_active`; a backward through it (activation checkpointing recomputes the
    forward then) must run inside the same block.
    """
    if model.active_adapter != CRITIC_ADAPTER:
        raise RuntimeError("critic_values runs inside `with critic_active(model):`")
    base = model.get_base_model()
    backbone = getattr(base, base.base_model_prefix)
    head = getattr(model, VALUE_HEAD)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    hidden = hidden[:, -completion_length - 1 : -1, :]
    return head(hidden.to(head.weight.dtype)).squeeze(-1)
