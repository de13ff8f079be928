"""Toy batches with known values, for tests of components.

Every tensor is small and hand-written, so that a test can state its expected result
exactly. The values are given in each docstring. Floating-point tensors are float32
whatever torch's default dtype is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlplug.core.preference import PreferenceBatch
from rlplug.core.rollout import Rollout

NAN = float("nan")


def _lengths_to_mask(lengths: list[int], width: int) -> torch.Tensor:
    return (torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).float()


def make_rollout(
    rewards: list[float],
    group_ids: list[int],
    lengths: list[int] | None = None,
    width: int = 3,
    **optional: torch.Tensor,
) -> Rollout:
    """A :class:`rlplug.Rollout` from plain lists: rewards, group ids and completion lengths.

    ``lengths`` gives each completion's number of tokens (default: all ``width``); the
    mask is 1 on the first ``length`` positions. ``optional`` passes ``token_rewards``,
    ``logps`` and the other optional (B, T) fields through.
    """
    lengths = [width] * len(rewards) if lengths is None else lengths
    return Rollout(
        rewards=torch.tensor(rewards, dtype=torch.float32),
        group_ids=torch.tensor(group_ids),
        completion_mask=_lengths_to_mask(lengths, width),
        **optional,
    )


def toy_rollout() -> Rollout:
    """Two groups of four completions, T = 3.

    - rewards ``[1, 0, 0, 1 | 3, 1, 2, 2]``, group ids ``[0, 0, 0, 0 | 1, 1, 1, 1]``;
    - group means 0.5 and 2.0; Bessel-corrected group stds sqrt(1/3) and sqrt(2/3);
    - completion lengths ``[3, 2, 1, 3 | 3, 3, 2, 1]``.

    So a mean baseline gives ``[0.5, -0.5, -0.5, 0.5, 1, -1, 0, 0]``.
    """
    return make_rollout(
        rewards=[1.0, 0.0, 0.0, 1.0, 3.0, 1.0, 2.0, 2.0],
        group_ids=[0, 0, 0, 0, 1, 1, 1, 1],
        lengths=[3, 2, 1, 3, 3, 3, 2, 1],
    )


def degenerate_rollouts() -> dict[str, Rollout]:
    """Rollouts on which estimators commonly divide by zero or propagate NaN.

    - ``group_size_1``: three groups of one completion, rewards ``[1, 0, 2]``.
    - ``all_equal``: two groups of four with equal rewards within each (``1`` and ``0``).
    - ``all_nan_group``: group 0 entirely unscorable (NaN), group 1 ``[1, 0, 0, 1]``.
    - ``some_nan``: groups ``[1, NaN, 0, NaN]`` and ``[NaN, 2, 2, 0]``.
    - ``all_nan_batch``: every reward NaN (nothing could be scored).
    - ``interleaved_groups``: group ids ``[0, 1, 0, 1, 0, 1]``, rewards ``[1, 5, 0, 3, 2, 4]``
      (groups need not be contiguous).
    """
    return {
        "group_size_1": make_rollout([1.0, 0.0, 2.0], [0, 1, 2], lengths=[3, 1, 2]),
        "all_equal": make_rollout([1.0] * 4 + [0.0] * 4, [0] * 4 + [1] * 4, lengths=[3, 2, 1, 3, 3, 3, 2, 1]),
        "all_nan_group": make_rollout([NAN] * 4 + [1.0, 0.0, 0.0, 1.0], [0] * 4 + [1] * 4),
        "some_nan": make_rollout([1.0, NAN, 0.0, NAN, NAN, 2.0, 2.0, 0.0], [0] * 4 + [1] * 4, lengths=[3, 1, 2, 3, 2, 3, 1, 2]),
        "all_nan_batch": make_rollout([NAN] * 4, [0, 0, 1, 1]),
        "interleaved_groups": make_rollout([1.0, 5.0, 0.0, 3.0, 2.0, 4.0], [0, 1, 0, 1, 0, 1], lengths=[1, 2, 3, 3, 2, 1]),
    }


@dataclass(frozen=True)
class PolicyLossBatch:
    """Inputs of a policy loss: ``fn(logps, old_logps, advantages, mask, **params)``."""

    logps: torch.Tensor
    old_logps: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor

    def args(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.logps, self.old_logps, self.advantages, self.mask


def toy_policy_batch(log_ratio: float = 0.0, advantages: list[float] | None = None) -> PolicyLossBatch:
    """B = 4 completions, T = 3, advantages (B, 1) default ``[1, -1, 0.5, 0]``.

    ``logps`` is ``log([[0.5, 0.25, 0.5], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], [0.5, 0.5, 0.5]])``,
    ``old_logps = logps - log_ratio`` (so the ratio pi/pi_old is ``exp(log_ratio)`` at
    every token), and the mask has lengths ``[3, 2, 1, 3]``. ``logps`` requires grad.
    """
    probs = torch.tensor(
        [[0.5, 0.25, 0.5], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], [0.5, 0.5, 0.5]], dtype=torch.float32
    )
    logps = probs.log().requires_grad_(True)
    old_logps = (logps - log_ratio).detach()
    values = [1.0, -1.0, 0.5, 0.0] if advantages is None else advantages
    return PolicyLossBatch(
        logps=logps,
        old_logps=old_logps,
        advantages=torch.tensor(values, dtype=torch.float32).unsqueeze(1),
        mask=_lengths_to_mask([3, 2, 1, 3], 3),
    )


def _vector(values: list[float], grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=grad)


def paired_fields(margin_scale: float = 1.0) -> dict[str, Any]:
    """The fields of :func:`toy_preference_batch` as a dict (policy log-probs require grad).

    B = 3 pairs. Policy log-probs chosen ``[-1, -2, -4]``, rejected ``[-3, -1, -4]``; the
    reference gives ``-2`` everywhere. So the chosen log-ratios are ``[1, 0, -2]``, the
    rejected ones ``[-1, 1, -2]`` and the margins (chosen minus rejected) ``[2, -1, 0]``.
    Lengths: chosen ``[2, 4, 2]``, rejected ``[3, 1, 2]``; chosen NLL ``7 / 8``.
    ``margin_scale`` multiplies every log-prob (e.g. 50 for extreme margins).
    """
    s = margin_scale
    chosen = _vector([-1.0 * s, -2.0 * s, -4.0 * s], grad=True)
    rejected = _vector([-3.0 * s, -1.0 * s, -4.0 * s], grad=True)
    chosen_lengths = _vector([2.0, 4.0, 2.0])
    return {
        "chosen_logps": chosen,
        "rejected_logps": rejected,
        "chosen_lengths": chosen_lengths,
        "rejected_lengths": _vector([3.0, 1.0, 2.0]),
        "ref_chosen_logps": _vector([-2.0 * s] * 3),
        "ref_rejected_logps": _vector([-2.0 * s] * 3),
        "chosen_nll": -chosen.sum() / chosen_lengths.sum(),
    }


def unpaired_fields(margin_scale: float = 1.0) -> dict[str, Any]:
    """The fields of :func:`toy_unpaired_batch` as a dict (policy log-probs require grad).

    B = 4 rows, labels ``[True, False, True, False]``. Policy log-probs ``[-1, -3, -2, -1]``,
    reference ``-2`` everywhere, so the log-ratios are ``[1, -1, 0, 1]``. Lengths
    ``[2, 3, 1, 2]``; KL reference point ``0.25``. ``margin_scale`` multiplies the log-probs.
    """
    s = margin_scale
    return {
        "logps": _vector([-1.0 * s, -3.0 * s, -2.0 * s, -1.0 * s], grad=True),
        "lengths": _vector([2.0, 3.0, 1.0, 2.0]),
        "ref_logps": _vector([-2.0 * s] * 4),
        "labels": torch.tensor([True, False, True, False]),
        "kl_reference": torch.tensor(0.25, dtype=torch.float32),
    }


def toy_preference_batch(margin_scale: float = 1.0) -> Any:
    """A paired preference batch with the values of :func:`paired_fields`."""
    return PreferenceBatch(**paired_fields(margin_scale))


def toy_unpaired_batch(margin_scale: float = 1.0) -> Any:
    """An unpaired (KTO-style) preference batch with the values of :func:`unpaired_fields`."""
    return PreferenceBatch(**unpaired_fields(margin_scale))
