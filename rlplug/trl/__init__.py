"""Adapters: the only code that knows TRL's internals.

Importing this package imports no TRL; the trainer classes load on first use.
"""

from __future__ import annotations

from typing import Any

_TRAINERS = {
    "RLPlugDPOTrainer": "rlplug.trl.dpo",
    "RLPlugGRPOTrainer": "rlplug.trl.grpo",
    "RLPlugKTOTrainer": "rlplug.trl.kto",
}

__all__ = list(_TRAINERS)


def __getattr__(name: str) -> Any:
    if name in _TRAINERS:
        import importlib

        return getattr(importlib.import_module(_TRAINERS[name]), name)
    raise AttributeError(f"module 'rlplug.trl' has no attribute {name!r}")
