"""Checks that the TRL internals the adapters override still look as expected."""

from __future__ import annotations

import inspect
import warnings

import trl

TESTED_TRL_MINOR = "1.16"


class TRLCompatibilityError(RuntimeError):
    """The installed TRL changed an internal that an adapter relies on."""


def check_methods(trainer_cls: type, expected: dict[str, tuple[str, ...]]) -> None:
    """Fail when a method is missing or its leading parameters changed."""
    if not trl.__version__.startswith(TESTED_TRL_MINOR + "."):
        warnings.warn(
            f"rlplug's adapters are tested against TRL {TESTED_TRL_MINOR}.x; TRL {trl.__version__} is installed",
            stacklevel=3,
        )
    for method_name, leading in expected.items():
        method = getattr(trainer_cls, method_name, None)
        if method is None:
            raise TRLCompatibilityError(
                f"TRL {trl.__version__}: {trainer_cls.__name__}.{method_name} is gone; rlplug needs "
                f"TRL {TESTED_TRL_MINOR}.x (pip install 'trl=={TESTED_TRL_MINOR}.*')"
            )
        names = tuple(inspect.signature(method).parameters)[: len(leading)]
        if names != leading:
            raise TRLCompatibilityError(
                f"TRL {trl.__version__}: {trainer_cls.__name__}.{method_name} takes {names}, rlplug expects "
                f"{leading}; install TRL {TESTED_TRL_MINOR}.x (pip install 'trl=={TESTED_TRL_MINOR}.*')"
            )


def refuse_unsupported(features: dict[str, tuple[bool, str]]) -> None:
    """Raise one error listing every enabled feature the adapter does not reimplement."""
    enabled = [f"{name} ({fix})" for name, (is_on, fix) in features.items() if is_on]
    if enabled:
        raise NotImplementedError(
            "rlplug's adapter does not reimplement these TRL features, so it refuses rather than ignore them: "
            + "; ".join(enabled)
        )


