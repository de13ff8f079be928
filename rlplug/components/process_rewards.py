"""Process supervision: reward functions that score the steps of a completion.

A reward function may return, for each completion, instead of a float or None:

- a list of ``(token_index, reward)`` pairs: one reward per step, at the completion token
  that ends the step (0-based, counted in the completion's token ids, which TRL passes as
  ``completion_ids``); several rewards at one index add up;
- a per-token list of floats: a step at every token ``0 .. len - 1``;
- an empty list, which counts as None (unscorable).

TRL expects one float per completion, so the online adapter wraps every callable reward
function in :class:`StepRewardFunction`: TRL sees the sum of the step rewards, and the
steps are kept for the adapter, which puts them into ``Rollout.token_rewards`` (weighted by
``reward_weights``) and marks them in ``Rollout.step_mask``. A function's contribution to
the outcome reward ``Rollout.rewards`` is then 0 for that completion, so
``Rollout.sequence_rewards()`` still equals the sum TRL saw; the outcome reward stays NaN
only for completions no function could score.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Steps = dict[int, float]


def _callable_name(fn: Callable[..., Any]) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__name__", type(fn).__name__)


def _is_async(fn: Callable[..., Any]) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def _is_number(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dim() == 0
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def parse_completion_reward(value: Any, length: int | None, where: str) -> tuple[float | None, Steps | None]:
    """One completion's reward: (the float TRL sees, the steps or None for an outcome reward)."""
    if value is None:
        return None, None
    if _is_number(value):
        return float(value), None
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise TypeError(
            f"{where}: expected a float, None, (token_index, reward) pairs or a per-token list; "
            f"got {type(value).__name__}"
        )
    if len(value) == 0:
        return None, None
    pairs = [(index, reward) for index, reward in value] if _is_pair(value[0]) else list(enumerate(value))
    steps: Steps = {}
    for index, reward in pairs:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"{where}: step index {index!r} is not an integer")
        if index < 0 or (length is not None and index >= length):
            raise ValueError(f"{where}: step index {index} is outside the completion's {length} tokens")
        if not _is_number(reward) or not math.isfinite(float(reward)):
            raise ValueError(f"{where}: step reward {reward!r} at index {index} is not a finite number")
        steps[int(index)] = steps.get(int(index), 0.0) + float(reward)
    return sum(steps.values()), steps


def _is_pair(item: Any) -> bool:
    return isinstance(item, (tuple, list)) and len(item) == 2


class StepRewardFunction:
    """Wraps a reward function so TRL sees one float per completion; the steps are kept in ``last_steps``."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = _callable_name(fn)
        self.last_steps: list[Steps | None] = []

    def _convert(self, outputs: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None) -> list[float | None]:
        values, steps = [], []
        for row, output in enumerate(outputs):
            length = len(completion_ids[row]) if completion_ids is not None and row < len(completion_ids) else None
            where = f"reward function {self.__name__!r}, completion {row}"
            value, row_steps = parse_completion_reward(output, length, where)
            values.append(value)
            steps.append(row_steps)
        self.last_steps = steps
        return values

    def __call__(self, prompts: Any, completions: Any, completion_ids: Any = None, **kwargs: Any) -> list[float | None]:
        outputs = self.fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        return self._convert(outputs, completion_ids)


class AsyncStepRewardFunction(StepRewardFunction):
    """:class:`StepRewardFunction` for an ``async`` reward function."""

    async def __call__(
        self, prompts: Any, completions: Any, completion_ids: Any = None, **kwargs: Any
    ) -> list[float | None]:
        outputs = await self.fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        return self._convert(outputs, completion_ids)


def wrap_reward_functions(reward_funcs: Any) -> Any:
    """Wrap each plain callable (not a model, not a model id) in a :class:`StepRewardFunction`."""
    if reward_funcs is None:
        return None
    funcs = reward_funcs if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    wrapped = []
    for fn in funcs:
        if isinstance(fn, (str, torch.nn.Module, StepRewardFunction)) or not callable(fn):
            wrapped.append(fn)
        else:
            wrapped.append(AsyncStepRewardFunction(fn) if _is_async(fn) else StepRewardFunction(fn))
    return wrapped


@dataclass(frozen=True)
class StepRewards:
    """This process's step rewards as tensors.

    - ``token_rewards`` (B, T): sum over functions of weight * step reward, 0 off the steps.
    - ``step_mask`` (B, T) bool: where some function gave a step reward.
    - ``is_process`` (B, F) bool: which function gave steps (not an outcome) for which completion.
    """

    token_rewards: torch.Tensor
    step_mask: torch.Tensor
    is_process: torch.Tensor


def collect_step_rewards(
    reward_funcs: Sequence[Any], weights: torch.Tensor, batch_size: int, width: int, device: torch.device | str
) -> StepRewards:
    """The steps kept by the wrapped functions at their last call, as (B, T) tensors of ``width`` columns."""
    rows, columns, values = [], [], []
    is_process = torch.zeros(batch_size, len(reward_funcs), dtype=torch.bool, device=device)
    for func_index, fn in enumerate(reward_funcs):
        if not isinstance(fn, StepRewardFunction):
            continue
        if len(fn.last_steps) != batch_size:
            raise ValueError(
                f"reward function {fn.__name__!r} scored {len(fn.last_steps)} completions, expected {batch_size}"
            )
        for row, steps in enumerate(fn.last_steps):
            if steps is None:
                continue
            is_process[row, func_index] = True
            for column, reward in steps.items():
                if column >= width:
                    raise ValueError(
                        f"reward function {fn.__name__!r}, completion {row}: step index {column} >= {width} tokens"
                    )
                rows.append(row)
                columns.append(column)
                values.append(float(weights[func_index]) * reward)
    token_rewards = torch.zeros(batch_size, width, device=device)
    step_mask = torch.zeros(batch_size, width, dtype=torch.bool, device=device)
    if rows:
        index = (torch.tensor(rows, device=device), torch.tensor(columns, device=device))
        token_rewards.index_put_(index, torch.tensor(values, dtype=token_rewards.dtype, device=device), accumulate=True)
        step_mask[index] = True
    return StepRewards(token_rewards=token_rewards, step_mask=step_mask, is_process=is_process)
