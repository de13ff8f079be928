"""Length shaping: a linear length penalty and DAPO's soft overlong punishment."""

from __future__ import annotations

from typing import Any

from rlplug_rewards.text import completion_text

_UNITS = ("tokens", "chars")


def completion_lengths(completions: list[Any], completion_ids: list[list[int]] | None, unit: str, reward: str) -> list[int]:
    """Completion lengths in tokens (from TRL's ``completion_ids``) or in characters."""
    if unit not in _UNITS:
        raise ValueError(f"{reward}: unit must be one of {', '.join(_UNITS)}, got {unit!r}")
    if unit == "chars":
        return [len(completion_text(c)) for c in completions]
    if completion_ids is None:
        raise ValueError(f"{reward} counts tokens from `completion_ids`, which were not passed; use unit='chars'")
    if len(completion_ids) != len(completions):
        raise ValueError(f"{reward}: {len(completion_ids)} completion_ids for {len(completions)} completions")
    return [len(ids) for ids in completion_ids]


def soft_overlong_punishment(length: int, max_completion_length: int, cache_length: int) -> float:
    """DAPO's soft overlong punishment (Yu et al. 2025, arXiv:2503.14476, eq. 13).

    R(y) = 0                                  if |y| <= L_max - L_cache
         = ((L_max - L_cache) - |y|) / L_cache  if L_max - L_cache < |y| <= L_max
         = -1                                 if |y| > L_max
    """
    if max_completion_length <= 0 or not 0 < cache_length <= max_completion_length:
        raise ValueError(
            f"overlong_penalty needs 0 < cache_length <= max_completion_length, got cache_length={cache_length}, "
            f"max_completion_length={max_completion_length}"
        )
    threshold = max_completion_length - cache_length
    if length <= threshold:
        return 0.0
    if length <= max_completion_length:
        return (threshold - length) / cache_length
    return -1.0


def overlong_penalty(
    prompts: list[Any], completions: list[Any], *, max_completion_length: int, cache_length: int,
    unit: str = "tokens", **kwargs: Any,
) -> list[float | None]:
    """DAPO's soft overlong punishment: 0 up to L_max - L_cache, linear down to -1 at L_max, -1 beyond.

    Reads no dataset column; counts tokens in ``completion_ids`` (passed by TRL; a generated EOS counts) or
    characters with ``unit="chars"``. ``max_completion_length`` defaults to the trainer
    config's field of that name; ``cache_length`` (L_cache) must be given.
    """
    lengths = completion_lengths(completions, kwargs.get("completion_ids"), unit, "overlong_penalty")
    return [soft_overlong_punishment(n, max_completion_length, cache_length) for n in lengths]


def length_penalty(
    prompts: list[Any], completions: list[Any], *, max_completion_length: int, coef: float = 1.0,
    unit: str = "tokens", **kwargs: Any,
) -> list[float | None]:
    """A linear length penalty: R(y) = -coef * min(|y|, L_max) / L_max, so 0 when empty and -coef at L_max.

    Reads no dataset column; lengths as in ``overlong_penalty``. ``max_completion_length``
    (L_max) defaults to the trainer config's field of that name.
    """
    if max_completion_length <= 0:
        raise ValueError(f"length_penalty needs max_completion_length > 0, got {max_completion_length}")
    lengths = completion_lengths(completions, kwargs.get("completion_ids"), unit, "length_penalty")
    return [-coef * min(n, max_completion_length) / max_completion_length for n in lengths]
