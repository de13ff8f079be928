"""The built-in task: what ``rlplug train`` and ``rlplug train-rm`` run when a config names
no model or dataset.

The application does not know the task; the demo floor (``rlplug.demo``) provides one and
the ``rlplug`` command passes it in, so the application imports nothing from the demo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal


@dataclass(frozen=True)
class BuiltinTask:
    """A model, data and rewards that need no download.

    - ``model_dir()``: a local model directory for the policy.
    - ``train_dataset()`` / ``eval_dataset()``: prompt datasets (``prompt``, ``answer``).
    - ``preference_dataset(data, model, tokenizer)``: the training prompts as ``"paired"`` or
      ``"unpaired"`` preference rows, rejected answers sampled from ``model``.
    - ``rewards``: registered reward names that score the task.
    - ``trainer_fields(recipe, kind, user_fields, user_kl_given)``: trainer-config defaults
      measured for this model, below the user's own.
    - ``torch_threads``: threads for a reproducible run of this model.
    - ``reward_model(seed)``: ``(model, tokenizer, pairs, config_defaults)`` for ``train-rm``.
    - ``pretraining_dataset()``: text rows (``text``) the model was pretrained on, for PPO-ptx.
    """

    model_label: str
    dataset_label: str
    metric_label: str
    rewards: tuple[str, ...]
    model_dir: Callable[[], Any]
    train_dataset: Callable[[], Any]
    eval_dataset: Callable[[], Any]
    preference_dataset: Callable[[Literal["paired", "unpaired"], Any, Any], Any]
    trainer_fields: Callable[[Any, Any, dict[str, Any], bool], dict[str, Any]]
    torch_threads: int
    reward_model: Callable[[int], tuple[Any, Any, Any, dict[str, Any]]]
    pretraining_dataset: Callable[[], Any] | None = None


class NoBuiltinTask(ValueError):
    """A config that names no model or dataset, run where no built-in task was given."""


def require(task: BuiltinTask | None, what: str) -> BuiltinTask:
    if task is None:
        raise NoBuiltinTask(f"{what}: none given, and no built-in task is available here; set {what}")
    return task
