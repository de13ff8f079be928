"""Guards that keep a long run from writing garbage: non-finite losses and gradients.

Every adapter owns a :class:`FiniteGuard`. It checks what each component returns (naming the
component and the step when something is NaN or infinite) and, just before each optimizer
step, the gradients. ``on_nonfinite="error"`` (the default) stops the run there, before the
weights change, so no NaN ever reaches a checkpoint; ``"skip"`` drops that optimizer step
(every gradient is set to None, which torch's optimizers skip) and warns, naming the step;
``skipped_steps`` counts them.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Literal

import torch
from transformers import TrainerCallback

from rlplug.core.hookspecs import COMPONENT_KINDS
from rlplug.core.resolve import BoundComponent

OnNonFinite = Literal["error", "skip"]
ON_NONFINITE: tuple[str, ...] = ("error", "skip")


class NonFiniteError(FloatingPointError):
    """A component returned, or backward produced, NaN or an infinity."""


@dataclasses.dataclass(frozen=True)
class CheckedComponent(BoundComponent):
    """A bound component whose tensor output (the first element of a tuple) the guard checks."""

    guard: Any = None

    def __call__(self, *args: Any) -> Any:
        output = self.fn(*args, **self.params)
        values = output[0] if isinstance(output, tuple) else output
        if isinstance(values, torch.Tensor) and values.is_floating_point():
            self.guard.check(f"{COMPONENT_KINDS[self.kind].label} {self.name!r}", values)
        return output


class FiniteGuard(TrainerCallback):
    """Checks component outputs during a step and the gradients before the optimizer step."""

    def __init__(self, on_nonfinite: OnNonFinite = "error") -> None:
        if on_nonfinite not in ON_NONFINITE:
            raise ValueError(f"on_nonfinite must be one of {', '.join(ON_NONFINITE)}; got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.step = 0
        self.skipped_steps = 0
        self._pending: str | None = None

    def check(self, what: str, values: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """``what`` (e.g. "policy loss 'ppo_clip'") returned ``values``; only entries where ``mask``
        is nonzero count. Raises NonFiniteError in error mode, else remembers it for the message."""
        with torch.no_grad():
            selected = values.detach() if mask is None else values.detach()[mask.expand_as(values).bool()]
            bad = int((~torch.isfinite(selected)).sum())
        if not bad:
            return
        message = f"step {self.step + 1}: {what} returned {bad} non-finite value(s) of {selected.numel()}"
        if self.on_nonfinite == "error":
            raise NonFiniteError(
                f"{message}; the run stops before the optimizer step, so the weights and the last checkpoint "
                "are intact (set on_nonfinite: skip to drop such steps instead)"
            )
        self._pending = self._pending or message

    def attach(self, trainer: Any) -> Any:
        """Check every bound component of ``trainer.components`` and every optimizer step of ``trainer``."""
        components = trainer.components
        checked = {
            field.name: CheckedComponent(**{f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, guard=self)
            for field in dataclasses.fields(components)
            if isinstance(value := getattr(components, field.name), BoundComponent)
        }
        self._unchecked = components
        trainer.components = dataclasses.replace(components, **checked)
        trainer.add_callback(self)
        trainer.finite_guard = self
        return trainer

    def detach(self, trainer: Any) -> Any:
        """Undo :meth:`attach`: the components run unchecked and no step is guarded."""
        trainer.components = self._unchecked
        trainer.remove_callback(self)
        trainer.finite_guard = None
        return trainer

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.step = state.global_step

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        named = [(name, p) for name, p in model.named_parameters() if p.grad is not None] if model is not None else []
        finite = bool(torch.isfinite(torch.stack(torch._foreach_norm([p.grad for _, p in named]))).all()) if named else True
        if finite and self._pending is None:
            return
        bad = next((name for name, p in named if not bool(torch.isfinite(p.grad).all())), None)
        cause = self._pending or f"step {state.global_step + 1}: the gradient of {bad} is not finite"
        self._pending = None
        if self.on_nonfinite == "error":
            raise NonFiniteError(f"{cause}; stopped before the optimizer step, so the weights are intact")
        for _, parameter in named:
            parameter.grad = None
        self.skipped_steps += 1
        warnings.warn(f"{cause}; optimizer step skipped ({self.skipped_steps} so far)", RuntimeWarning, stacklevel=2)
