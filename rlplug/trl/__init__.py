"""Adapters: the only code that knows TRL's internals."""

from rlplug.trl.dpo import RLPlugDPOTrainer
from rlplug.trl.grpo import RLPlugGRPOTrainer
from rlplug.trl.kto import RLPlugKTOTrainer

__all__ = ["RLPlugDPOTrainer", "RLPlugGRPOTrainer", "RLPlugKTOTrainer"]
