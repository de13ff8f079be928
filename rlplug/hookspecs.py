"""The hook points of rlplug.

Every hook is registration style: a plugin receives a ``register`` callback and calls
it once per component. A hookimpl may accept a subset of the arguments; specs only ever
gain arguments.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("rlplug")
hookimpl = pluggy.HookimplMarker("rlplug")


@hookspec
def register_advantage_estimators(register):
    """Register advantage estimators: ``register(name, fn)``.

    ``fn(rollout: rlplug.Rollout, **params) -> Tensor`` of shape ``(B,)`` (one advantage
    per completion) or ``(B, T)`` (one per completion token). The rollout is the global
    batch, every process's completions, so each group is whole. NaN rewards mean
    "unscorable"; such completions must get advantage 0 and stay out of baselines.
    """


@hookspec
def register_kl_estimators(register):
    """Register per-token KL estimators: ``register(name, fn)``.

    ``fn(logps: Tensor (B,T), ref_logps: Tensor (B,T)) -> Tensor (B,T)``: the per-token
    estimate of KL(pi || pi_ref) at the sampled tokens. It must be differentiable in
    ``logps``; the placement decides whether that gradient is used.
    """


@hookspec
def register_policy_losses(register):
    """Register policy losses: ``register(name, fn)``.

    ``fn(logps, old_logps, advantages, mask, **params) -> (per_token_loss, metrics)``.
    ``logps`` and ``old_logps`` are ``(B,T)``, ``advantages`` is ``(B,1)`` or ``(B,T)``,
    ``mask`` is ``(B,T)``. ``per_token_loss`` is ``(B,T)`` or ``(B,1)``, not yet masked
    or reduced. ``metrics`` maps a name to a ``(B,T)`` or ``(B,1)`` tensor that the
    adapter reduces to a masked mean over the global batch (for example clip fractions).
    Keyword parameters are bound by name: explicit component params first, then the
    trainer config field of the same name, then the function default.
    """


@hookspec
def register_loss_aggregations(register):
    """Register loss aggregations: ``register(name, fn)``.

    ``fn(per_token_loss: Tensor, mask: Tensor (B,T), ctx: rlplug.AggregationContext)
    -> scalar Tensor``. The result is what ``backward()`` is called on, so it already
    carries the division by the gradient-accumulation steps (``ctx``).
    """


@hookspec
def register_preference_losses(register):
    """Register preference losses: ``register(name, fn)``.

    ``fn(pairs, **params) -> (losses: Tensor (B,), metrics: dict[str, Tensor])``.
    ``pairs`` holds policy and reference log-probs (summed) for chosen and rejected
    responses with their token counts, the chosen NLL, and for unpaired data the
    per-example log-probs, labels and the KL reference point.
    """


@hookspec
def register_reward_functions(register):
    """Register reward functions: ``register(name, fn)``.

    ``fn(prompts, completions, **kwargs) -> list[float | None]``, TRL's reward-function
    signature: one value per completion, ``None`` for a completion it cannot score.
    Dataset columns arrive as keyword arguments.
    """


@hookspec
def register_algorithms(register):
    """Register algorithm recipes: ``register(rlplug.Algorithm(...))``.

    A recipe names its trainer kind and its components, and gives default params.
    """
