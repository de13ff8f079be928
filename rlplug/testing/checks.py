"""Property checks that every component of a kind must pass.

Each ``check_*`` function calls the component on toy batches with known structure and
raises :class:`PropertyCheckFailure` (an ``AssertionError``) naming the property and the
case that failed. Passing returns ``None``. Use them in a plugin's tests::

    from rlplug.testing import check_advantage_estimator
    check_advantage_estimator(my_estimator)
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass, replace
from typing import Any, Callable

import torch

from rlplug.core.preference import PreferenceBatch
from rlplug.core.rollout import Rollout
from rlplug.testing.batches import (
    degenerate_rollouts,
    paired_fields,
    toy_policy_batch,
    toy_rollout,
    unpaired_fields,
)

# Shifting rewards by 4 keeps every toy value exactly representable; the tolerance covers
# a mean or std computed in a different order of float additions.
REWARD_SHIFT = 4.0
TOLERANCE = 1e-6
# Summed log-probs of long completions reach thousands; at this scale a naive
# log(sigmoid(x)) underflows to log(0) for beta = 0.1.
EXTREME_MARGIN_SCALE = 2000.0
# The rows of the permuted rollout, chosen so every group changes position.
_PERMUTATION = [5, 2, 7, 0, 3, 6, 1, 4]


class PropertyCheckFailure(AssertionError):
    """A component broke a property that every component of its kind must have."""


def _label(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _fail(fn: Callable[..., Any], kind: str, prop: str, case: str, detail: str) -> PropertyCheckFailure:
    return PropertyCheckFailure(f"{kind} {_label(fn)}: {prop} fails on {case}: {detail}")


# ---- advantage estimators ------------------------------------------------------------


def _snapshot(rollout: Rollout) -> dict[str, torch.Tensor]:
    return {f.name: getattr(rollout, f.name).clone() for f in fields(rollout) if getattr(rollout, f.name) is not None}


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN where the other has NaN."""
    if not a.is_floating_point():
        return torch.equal(a, b)
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))


def _call_estimator(fn: Callable[..., Any], rollout: Rollout, params: dict[str, Any], case: str) -> torch.Tensor:
    kind = "advantage estimator"
    before = _snapshot(rollout)
    out = fn(rollout, **params)
    if not isinstance(out, torch.Tensor):
        raise _fail(fn, kind, "returns a tensor", case, f"got {type(out).__name__}")
    batch, width = rollout.completion_mask.shape
    if tuple(out.shape) not in ((batch,), (batch, width)):
        raise _fail(fn, kind, "shape (B,) or (B, T)", case, f"expected ({batch},) or ({batch}, {width}), got {tuple(out.shape)}")
    if not out.is_floating_point():
        raise _fail(fn, kind, "floating-point result", case, f"got dtype {out.dtype}")
    for name, value in before.items():
        if not _identical(value, getattr(rollout, name)):
            raise _fail(fn, kind, "leaves its input unchanged", case, f"rollout.{name} was modified in place")
    return out


def _rows_of(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return values[rows] if values.dim() == 1 else values[rows].flatten()


def _permute(rollout: Rollout, order: list[int]) -> Rollout:
    index = torch.tensor(order)
    per_completion = [f.name for f in fields(rollout) if f.name != "reward_weights" and getattr(rollout, f.name) is not None]
    changes = {name: getattr(rollout, name)[index] for name in per_completion}
    return replace(rollout, **changes)


def check_advantage_estimator(
    fn: Callable[..., torch.Tensor],
    *,
    params: dict[str, Any] | None = None,
    shift_invariant: bool = True,
    permutation_equivariant: bool = True,
    prepare: Callable[[Rollout], Rollout] | None = None,
) -> None:
    """Check the contract of ``register_advantage_estimators`` on toy rollouts.

    - the result is a float tensor of shape (B,) or (B, T), and the rollout is not modified;
    - the same input gives the same output (no hidden state);
    - finite on degenerate groups (size 1, all equal, all NaN, some NaN, every reward NaN);
    - completions with a NaN (unscorable) reward get advantage 0;
    - ``permutation_equivariant``: reordering the completions reorders the advantages
      (groups are found by id, not by position);
    - ``shift_invariant``: adding a constant to every reward leaves the advantages
      unchanged. Turn it off only for an estimator without a baseline (plain REINFORCE).

    ``prepare`` turns each toy rollout (outcome rewards only) into what the estimator
    reads, e.g. the outcome moved into per-token rewards for a process-supervision
    estimator; it runs after the reward shift, so the shift reaches what it reads.
    """
    params = dict(params or {})
    kind = "advantage estimator"
    prepare = prepare or (lambda rollout: rollout)
    raw = {"toy_rollout": toy_rollout(), **degenerate_rollouts()}
    rollout = prepare(raw["toy_rollout"])
    degenerate = {case: prepare(value) for case, value in raw.items() if case != "toy_rollout"}
    out = _call_estimator(fn, rollout, params, "toy_rollout")
    if not torch.isfinite(out).all():
        raise _fail(fn, kind, "finite advantages", "toy_rollout", f"got {out.tolist()}")
    again = _call_estimator(fn, rollout, params, "toy_rollout (second call)")
    if not torch.equal(out, again):
        raise _fail(fn, kind, "deterministic", "toy_rollout", f"first call {out.tolist()}, second {again.tolist()}")

    for case, value in degenerate.items():
        result = _call_estimator(fn, value, params, case)
        if not torch.isfinite(result).all():
            raise _fail(fn, kind, "finite advantages", case, f"rewards {value.rewards.tolist()} gave {result.tolist()}")
        unscorable = torch.isnan(value.rewards)
        if unscorable.any() and _rows_of(result, unscorable).abs().max() != 0:
            raise _fail(
                fn, kind, "advantage 0 for NaN (unscorable) rewards", case,
                f"rewards {value.rewards.tolist()} gave {result.tolist()}",
            )

    if permutation_equivariant:
        permuted = _call_estimator(fn, _permute(rollout, _PERMUTATION), params, "toy_rollout permuted")
        expected = out[torch.tensor(_PERMUTATION)]
        if not torch.allclose(permuted, expected, atol=TOLERANCE, rtol=0):
            raise _fail(
                fn, kind, "permutation equivariance", f"toy_rollout rows reordered as {_PERMUTATION}",
                f"expected {expected.tolist()}, got {permuted.tolist()}",
            )

    if shift_invariant:
        for case, base in raw.items():
            shifted = prepare(replace(base, rewards=base.rewards + REWARD_SHIFT))
            original = _call_estimator(fn, prepare(base), params, case)
            moved = _call_estimator(fn, shifted, params, f"{case} + {REWARD_SHIFT}")
            if not torch.allclose(moved, original, atol=TOLERANCE, rtol=0):
                raise _fail(
                    fn, kind, f"invariance to a constant reward shift (+{REWARD_SHIFT})", case,
                    f"{original.tolist()} became {moved.tolist()}; pass shift_invariant=False if the estimator has no baseline",
                )


# ---- policy losses -------------------------------------------------------------------


def _call_policy_loss(fn: Callable[..., Any], batch: Any, params: dict[str, Any], case: str) -> torch.Tensor:
    kind = "policy loss"
    result = fn(*batch.args(), **params)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise _fail(fn, kind, "returns (per_token_loss, metrics)", case, f"got {type(result).__name__}")
    loss, metrics = result
    batch_size, width = batch.mask.shape
    allowed = ((batch_size, width), (batch_size, 1))
    if not isinstance(loss, torch.Tensor) or tuple(loss.shape) not in allowed:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise _fail(fn, kind, "per_token_loss of shape (B, T) or (B, 1)", case, f"got {shape}")
    if not isinstance(metrics, dict):
        raise _fail(fn, kind, "metrics is a dict", case, f"got {type(metrics).__name__}")
    for name, value in metrics.items():
        if not isinstance(value, torch.Tensor) or tuple(value.shape) not in allowed:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise _fail(fn, kind, "metrics of shape (B, T) or (B, 1)", case, f"metric {name!r} has shape {shape}")
    if not torch.isfinite(loss).all():
        raise _fail(fn, kind, "finite loss", case, f"got {loss.tolist()}")
    return loss


def _gradient(loss: torch.Tensor, batch: Any, fn: Callable[..., Any], case: str) -> torch.Tensor:
    total = (loss * batch.mask).sum() if loss.shape == batch.mask.shape else loss.sum()
    if not total.requires_grad:
        raise _fail(fn, "policy loss", "differentiable in logps", case, "the loss does not depend on logps")
    (grad,) = torch.autograd.grad(total, batch.logps, allow_unused=True)
    grad = torch.zeros_like(batch.logps) if grad is None else grad
    if not torch.isfinite(grad).all():
        raise _fail(fn, "policy loss", "finite gradient", case, f"got {grad.tolist()}")
    return grad


def check_policy_loss(
    fn: Callable[..., Any],
    *,
    params: dict[str, Any] | None = None,
    zero_advantage_zero_gradient: bool = True,
    token_advantages: bool = True,
) -> None:
    """Check the contract of ``register_policy_losses`` on toy batches.

    - returns ``(per_token_loss, metrics)``: loss (B, T) or (B, 1), metrics (B, T) or (B, 1);
    - finite loss and gradient on-policy, at ratios exp(+-0.5) and exp(+-20), with (B, 1)
      and (B, T) advantages;
    - on-policy (ratio 1), gradient descent raises the log-prob of every counted token
      with a positive advantage and lowers it where the advantage is negative: the
      gradient of the masked sum has the opposite sign of the advantage;
    - ``zero_advantage_zero_gradient``: with all advantages 0 the gradient is exactly 0.
      Turn it off only for a loss that carries its own regularizer.
    - ``token_advantages``: also call it with (B, T) advantages; turn it off for a loss
      that takes one advantage per sequence and refuses (B, T) with an error.
    """
    params = dict(params or {})
    kind = "policy loss"
    for log_ratio in (0.0, 0.5, -0.5, 20.0, -20.0):
        batch = toy_policy_batch(log_ratio=log_ratio)
        case = f"ratio exp({log_ratio})"
        _gradient(_call_policy_loss(fn, batch, params, case), batch, fn, case)
        if not token_advantages:
            continue
        per_token = replace(batch, advantages=batch.advantages.expand_as(batch.mask).clone())
        case = f"ratio exp({log_ratio}), (B, T) advantages"
        _gradient(_call_policy_loss(fn, per_token, params, case), per_token, fn, case)

    batch = toy_policy_batch()
    grad = _gradient(_call_policy_loss(fn, batch, params, "on-policy"), batch, fn, "on-policy")
    sign = torch.sign(batch.advantages).expand_as(grad)
    counted = batch.mask.bool() & (sign != 0)
    if not bool((torch.sign(grad[counted]) == -sign[counted]).all()):
        raise _fail(
            fn, kind, "descent direction follows the advantage", "on-policy, advantages [1, -1, 0.5, 0]",
            f"d loss / d logps = {grad.tolist()} (expected the sign opposite to the advantage on counted tokens)",
        )

    if zero_advantage_zero_gradient:
        for log_ratio in (0.0, 0.5):
            zero = toy_policy_batch(log_ratio=log_ratio, advantages=[0.0, 0.0, 0.0, 0.0])
            case = f"all advantages 0, ratio exp({log_ratio})"
            grad = _gradient(_call_policy_loss(fn, zero, params, case), zero, fn, case)
            if grad.abs().max() != 0:
                raise _fail(fn, kind, "zero gradient without advantage", case, f"d loss / d logps = {grad.tolist()}")


# ---- preference losses ---------------------------------------------------------------


def _declared_data(fn: Callable[..., Any]) -> str:
    try:
        from rlplug.core.preference import preference_loss_spec
    except ImportError:
        return "paired"
    return preference_loss_spec(fn).data


def _call_preference_loss(fn: Callable[..., Any], values: dict[str, Any], params: dict[str, Any], case: str) -> torch.Tensor:
    kind = "preference loss"
    batch = PreferenceBatch(**values)
    result = fn(batch, **params)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise _fail(fn, kind, "returns (losses, metrics)", case, f"got {type(result).__name__}")
    losses, metrics = result
    size = batch.batch_size
    if not isinstance(losses, torch.Tensor) or tuple(losses.shape) != (size,):
        shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise _fail(fn, kind, f"losses of shape ({size},)", case, f"got {shape}")
    if not isinstance(metrics, dict):
        raise _fail(fn, kind, "metrics is a dict", case, f"got {type(metrics).__name__}")
    for name, value in metrics.items():
        if not isinstance(value, torch.Tensor) or tuple(value.shape) not in ((size,), ()):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise _fail(fn, kind, f"metrics of shape ({size},) or ()", case, f"metric {name!r} has shape {shape}")
    if not torch.isfinite(losses).all():
        raise _fail(fn, kind, "finite losses", case, f"got {losses.tolist()}")
    policy = [values[name] for name in ("chosen_logps", "rejected_logps", "logps") if name in values]
    if not losses.requires_grad:
        raise _fail(fn, kind, "differentiable in the policy log-probs", case, "the losses do not depend on them")
    grads = torch.autograd.grad(losses.sum(), policy, allow_unused=True)
    for grad in grads:
        if grad is not None and not torch.isfinite(grad).all():
            raise _fail(fn, kind, "finite gradient", case, f"got {grad.tolist()}")
    return losses.detach()


def check_preference_loss(
    fn: Callable[..., Any],
    *,
    params: dict[str, Any] | None = None,
    data: str | None = None,
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """Check the contract of ``register_preference_losses`` on toy batches.

    - returns ``(losses (B,), metrics)`` with metrics of shape (B,) or ();
    - finite losses and gradients on the toy batch, at log-probs 2000 times larger (summed
      log-probs of long completions), and when
      the chosen and rejected completions are identical (zero margin);
    - the same input gives the same output.

    ``data`` is ``"paired"`` or ``"unpaired"``; by default the loss's declared kind
    (``rlplug.core.preference.preference_loss``), else paired. ``prepare`` adds what the loss
    reads beyond the toy batch's fields (e.g. ``segments``), computed from those fields.
    """
    params = dict(params or {})
    data = data or _declared_data(fn)
    if data not in ("paired", "unpaired"):
        raise ValueError(f"data must be 'paired' or 'unpaired'; got {data!r}")
    base = paired_fields if data == "paired" else unpaired_fields
    prepare = prepare or (lambda fields: fields)

    def make(**options: Any) -> dict[str, Any]:
        return prepare(base(**options))

    first = _call_preference_loss(fn, make(), params, "toy batch")
    second = _call_preference_loss(fn, make(), params, "toy batch (second call)")
    if not torch.equal(first, second):
        raise _fail(fn, "preference loss", "deterministic", "toy batch", f"{first.tolist()} then {second.tolist()}")
    _call_preference_loss(fn, make(margin_scale=EXTREME_MARGIN_SCALE), params, f"margins x{EXTREME_MARGIN_SCALE:g}")
    if data == "paired":
        tied = paired_fields()
        tied["rejected_logps"] = tied["chosen_logps"].detach().clone().requires_grad_(True)
        tied["ref_rejected_logps"] = tied["ref_chosen_logps"]
        tied["rejected_lengths"] = tied["chosen_lengths"]
        _call_preference_loss(fn, prepare(tied), params, "chosen == rejected")
