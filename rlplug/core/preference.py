"""The preference batch: rlplug's data contract for offline preference losses. No TRL here.

A preference loss is ``fn(batch: PreferenceBatch, **params) -> (losses (B,), metrics)``.
The adapter (rlplug/trl/dpo.py for paired data, rlplug/trl/kto.py for unpaired data)
fills the batch from TRL's forward passes, calls the loss and returns ``losses.mean()``
(``nanmean`` for unpaired data, as KTOTrainer does).

What a loss needs is declared once, with :func:`preference_loss`::

    @preference_loss(data="paired", needs_reference=False)
    def simpo(batch, beta=2.0, simpo_gamma=1.0): ...

- ``data``: ``"paired"`` (chosen/rejected per prompt) or ``"unpaired"`` (one completion
  and a desirable/undesirable label per row).
- ``needs_reference``: whether the loss reads reference log-probs. When False the adapter
  runs no reference forward pass at all and, in full fine-tuning, holds no reference copy.
- ``needs_kl_reference`` (unpaired only): whether the loss reads ``kl_reference``, the KL
  reference point estimated from mismatched (prompt, completion) pairs.
- ``needs_segments`` (paired, with reference): whether the loss reads ``segments``, the
  per-segment sums and aspect scores of :mod:`rlplug.core.segments` (2D-DPO).

An undecorated function is treated as ``data="paired", needs_reference=True`` (the safe
default: a reference forward is never skipped by accident).

Metrics: a dict from TRL's metric names (``rewards/chosen``, ``rewards/rejected``,
``rewards/margins``, ``rewards/accuracies``, ...) to a ``(B,)`` tensor (NaN where the metric
does not apply to an example) or a 0-dim tensor. The adapter logs the NaN-mean over the
global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal

import torch

from rlplug.core.segments import SegmentBatch

PreferenceData = Literal["paired", "unpaired"]
PreferenceLossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
SPEC_ATTRIBUTE = "rlplug_preference_loss"


@dataclass(frozen=True)
class PreferenceLossSpec:
    """What a preference loss reads from the batch (see the module docstring)."""

    data: PreferenceData = "paired"
    needs_reference: bool = True
    needs_kl_reference: bool = False
    needs_segments: bool = False

    def __post_init__(self) -> None:
        if self.data not in ("paired", "unpaired"):
            raise ValueError(f"preference loss data must be 'paired' or 'unpaired'; got {self.data!r}")
        if self.needs_kl_reference and self.data != "unpaired":
            raise ValueError("needs_kl_reference applies to unpaired losses only")
        if self.needs_kl_reference and not self.needs_reference:
            raise ValueError("the KL reference point is measured against the reference model: needs_reference=True")
        if self.needs_segments and (self.data != "paired" or not self.needs_reference):
            raise ValueError("needs_segments applies to paired losses that read the reference (needs_reference=True)")


def preference_loss(
    *, data: PreferenceData = "paired", needs_reference: bool = True, needs_kl_reference: bool = False,
    needs_segments: bool = False,
) -> Callable[[PreferenceLossFn], PreferenceLossFn]:
    """Declare what a preference loss reads; returns the function unchanged but annotated."""
    spec = PreferenceLossSpec(data=data, needs_reference=needs_reference, needs_kl_reference=needs_kl_reference,
                              needs_segments=needs_segments)

    def mark(fn: PreferenceLossFn) -> PreferenceLossFn:
        setattr(fn, SPEC_ATTRIBUTE, spec)
        return fn

    return mark


def preference_loss_spec(fn: Callable[..., Any]) -> PreferenceLossSpec:
    """The declared spec of ``fn``, or the safe default (paired, needs a reference)."""
    spec = getattr(fn, SPEC_ATTRIBUTE, None)
    return spec if isinstance(spec, PreferenceLossSpec) else PreferenceLossSpec()


def _check_vector(name: str, value: torch.Tensor | None, size: int) -> None:
    if value is not None and tuple(value.shape) != (size,):
        raise ValueError(f"PreferenceBatch.{name} must have shape ({size},), got {tuple(value.shape)}")


@dataclass(frozen=True)
class PreferenceBatch:
    """One micro-batch of preference data as a loss sees it. B is the number of rows.

    Log-probs are summed over completion tokens; lengths count those tokens (float).

    Paired data (B prompts, each with a chosen and a rejected completion):
    - ``chosen_logps``, ``rejected_logps`` (B,): policy log-probs, differentiable.
    - ``chosen_lengths``, ``rejected_lengths`` (B,): completion token counts.
    - ``ref_chosen_logps``, ``ref_rejected_logps`` (B,) or None: reference log-probs,
      None when the loss declared ``needs_reference=False``.
    - ``segments`` or None: a :class:`rlplug.core.segments.SegmentBatch`, only when the loss
      declared ``needs_segments``.
    - ``chosen_nll`` (0-dim): the token-mean negative log-likelihood of the chosen
      completions in this micro-batch, ``-sum(chosen_logps) / sum(chosen_lengths)``
      (CPO's L_NLL, TRL's ``nll_loss``), differentiable.

    Unpaired data (B rows, each one completion with a label):
    - ``logps`` (B,), ``lengths`` (B,), ``ref_logps`` (B,) or None.
    - ``labels`` (B,) bool: True for desirable completions, False for undesirable ones.
    - ``kl_reference`` (0-dim) or None: the detached estimate of KL(pi || pi_ref) in
      log-prob units (not times beta), ``mean(log pi(y'|x') - log pi_ref(y'|x'))`` over
      mismatched pairs (x', y') of the global batch. It is not clamped: a loss decides
      (TRL's KTO clamps it at 0). None unless the loss declared ``needs_kl_reference``.
    """

    chosen_logps: torch.Tensor | None = None
    rejected_logps: torch.Tensor | None = None
    chosen_lengths: torch.Tensor | None = None
    rejected_lengths: torch.Tensor | None = None
    ref_chosen_logps: torch.Tensor | None = None
    ref_rejected_logps: torch.Tensor | None = None
    chosen_nll: torch.Tensor | None = None
    logps: torch.Tensor | None = None
    lengths: torch.Tensor | None = None
    ref_logps: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    kl_reference: torch.Tensor | None = None
    segments: SegmentBatch | None = None

    def __post_init__(self) -> None:
        paired = self.chosen_logps is not None
        unpaired = self.logps is not None
        if paired == unpaired:
            raise ValueError("PreferenceBatch needs either chosen_logps/rejected_logps (paired) or logps (unpaired)")
        if paired:
            size = self.chosen_logps.shape[0]
            for name in ("chosen_logps", "rejected_logps", "chosen_lengths", "rejected_lengths"):
                if getattr(self, name) is None:
                    raise ValueError(f"a paired PreferenceBatch needs {name}")
                _check_vector(name, getattr(self, name), size)
            if (self.ref_chosen_logps is None) != (self.ref_rejected_logps is None):
                raise ValueError("PreferenceBatch: give both ref_chosen_logps and ref_rejected_logps, or neither")
            _check_vector("ref_chosen_logps", self.ref_chosen_logps, size)
            _check_vector("ref_rejected_logps", self.ref_rejected_logps, size)
        else:
            size = self.logps.shape[0]
            for name in ("lengths", "labels"):
                if getattr(self, name) is None:
                    raise ValueError(f"an unpaired PreferenceBatch needs {name}")
                _check_vector(name, getattr(self, name), size)
            _check_vector("ref_logps", self.ref_logps, size)
            if self.labels.dtype != torch.bool:
                raise ValueError(f"PreferenceBatch.labels must be bool, got {self.labels.dtype}")

    @property
    def paired(self) -> bool:
        return self.chosen_logps is not None

    @property
    def batch_size(self) -> int:
        return (self.chosen_logps if self.paired else self.logps).shape[0]

    def _reference(self, name: str) -> torch.Tensor:
        value = getattr(self, name)
        if value is None:
            raise ValueError(
                f"PreferenceBatch.{name} is None: this loss reads reference log-probs, so declare it with "
                "@preference_loss(needs_reference=True)"
            )
        return value

    @property
    def chosen_logratios(self) -> torch.Tensor:
        """(B,) log pi(y_w|x) - log pi_ref(y_w|x)."""
        return self.chosen_logps - self._reference("ref_chosen_logps")

    @property
    def rejected_logratios(self) -> torch.Tensor:
        """(B,) log pi(y_l|x) - log pi_ref(y_l|x)."""
        return self.rejected_logps - self._reference("ref_rejected_logps")

    @property
    def logratios(self) -> torch.Tensor:
        """(B,) unpaired: log pi(y|x) - log pi_ref(y|x)."""
        return self.logps - self._reference("ref_logps")


def token_mean_nll(chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor) -> torch.Tensor:
    """``-sum(chosen_logps) / sum(chosen_lengths)``: the token-mean NLL of the chosen completions."""
    return -chosen_logps.sum() / chosen_lengths.sum().clamp(min=1.0)


def paired_reward_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """TRL's reward metrics for paired data, per example (B,), detached."""
    chosen, rejected = chosen_rewards.detach(), rejected_rewards.detach()
    return {
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected,
        "rewards/accuracies": (chosen > rejected).float(),
    }


def unpaired_reward_metrics(rewards: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """TRL's reward metrics for unpaired data: per example (B,), NaN outside the class.

    The adapter logs ``rewards/margins`` as the difference of the two class means.
    """
    rewards = rewards.detach()
    nan = torch.full_like(rewards, float("nan"))
    return {
        "rewards/chosen": torch.where(labels, rewards, nan),
        "rewards/rejected": torch.where(labels, nan, rewards),
    }


# ---- columns a dataset must have ------------------------------------------------------

PAIRED_COLUMNS: tuple[str, ...] = ("chosen", "rejected")
UNPAIRED_COLUMNS: tuple[str, ...] = ("completion", "label")


class PreferenceDataError(ValueError):
    """A dataset lacks the columns its preference algorithm needs."""


def check_preference_columns(columns: Iterable[str], data: PreferenceData, algorithm: str) -> None:
    """Raise a one-line error naming the missing columns and the algorithm that needs them.

    Paired algorithms need ``chosen`` and ``rejected`` (``prompt`` too, unless the
    conversations carry it). Unpaired ones need ``completion`` and ``label``; paired
    ``chosen``/``rejected`` rows are also accepted (TRL unpairs them).
    """
    present = set(columns)
    if data == "unpaired" and set(PAIRED_COLUMNS) <= present:
        return
    required = PAIRED_COLUMNS if data == "paired" else UNPAIRED_COLUMNS
    missing = [column for column in required if column not in present]
    if missing:
        accepted = "chosen, rejected" if data == "paired" else "completion, label (or paired chosen, rejected)"
        raise PreferenceDataError(
            f"algorithm {algorithm!r} trains on {data} preference data and the dataset lacks column(s) "
            f"{', '.join(missing)}; it needs {accepted}; found: {', '.join(sorted(present)) or 'none'}"
        )
