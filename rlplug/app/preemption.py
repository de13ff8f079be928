"""Preemption: SIGTERM or SIGINT ends a run at the end of the current step, with a checkpoint.

A scheduler (Slurm, Kubernetes, a spot instance) sends SIGTERM some time before it kills a
job. :class:`PreemptionCallback` catches SIGTERM and SIGINT, lets the optimizer step that is
under way finish, saves a checkpoint of that step (TRL's own, with the optimizer, scheduler,
RNG and rlplug's controller states) and stops. ``rlplug train`` then exits non-zero and names
the checkpoint; ``--resume_from_checkpoint`` continues from it. A second signal interrupts at
once. Under several processes the stop is agreed on at each step end, so every process stops
at the same step.
"""

from __future__ import annotations

import signal
from typing import Any

import torch
from transformers import TrainerCallback

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """The run stopped on a signal after saving a checkpoint."""

    def __init__(self, signum: int, step: int, checkpoint: str) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(
            f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint saved to {checkpoint}; "
            f"continue with --resume_from_checkpoint {checkpoint}"
        )

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class PreemptionCallback(TrainerCallback):
    """Turns the first SIGTERM/SIGINT into save-and-stop at the end of the current step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopped_at: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # a second signal: stop now
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.signum = signum

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _agreed_signal(self) -> int | None:
        """The signal any process received (every process calls this at every step end)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return self.signum
        received = torch.tensor([self.signum or 0])
        torch.distributed.all_reduce(received, op=torch.distributed.ReduceOp.MAX)
        return int(received.item()) or None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        signum = self._agreed_signal()
        if signum is not None:
            self.signum = signum
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True

    def raise_if_stopped(self, output_dir: str) -> None:
        """After ``train()``: raise :class:`Preempted` naming the checkpoint if a signal stopped it."""
        if self.stopped_at is not None:
            raise Preempted(self.signum, self.stopped_at, f"{output_dir}/checkpoint-{self.stopped_at}")
