"""Adapters: the only code that knows TRL's internals."""

from rlplug.trl.grpo import RLPlugGRPOTrainer

__all__ = ["RLPlugGRPOTrainer"]
