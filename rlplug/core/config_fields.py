"""What a TRL config field binds to a component parameter of the same name.

A field set to ``None`` binds by TRL's own meaning where TRL gives it one in terms of another
field: ``epsilon_high=None`` is "the same as ``epsilon``" (``GRPOTrainer.__init__`` sets
``self.epsilon_high = args.epsilon`` then). Any other ``None`` field means "not set": nothing
is bound and the component's own default applies.
"""

from __future__ import annotations

from typing import Any

NONE_MEANS_FIELD: dict[str, str] = {"epsilon_high": "epsilon"}
"""TRL fields whose ``None`` means "the value of that other field"."""


def config_value(config: Any, name: str) -> tuple[bool, Any]:
    """``(True, value)`` when ``config`` sets ``name`` (by TRL's meaning of ``None``), else ``(False, None)``."""
    if config is None or not hasattr(config, name):
        return False, None
    value = getattr(config, name)
    if value is None and name in NONE_MEANS_FIELD:
        return config_value(config, NONE_MEANS_FIELD[name])
    return value is not None, value
