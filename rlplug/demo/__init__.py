"""The demo: a tiny character-level model and the ``a+b+c=`` task, runnable with no download.

:data:`BUILTIN_TASK` is what ``rlplug train`` and ``rlplug train-rm`` run when a config
names no model or dataset.
"""

from __future__ import annotations

from typing import Any

from rlplug.app.builtin_task import BuiltinTask


def _model_dir() -> Any:
    from rlplug.demo.warmup import warmed_up_model_dir

    return warmed_up_model_dir()


def _train_dataset() -> Any:
    from rlplug.demo.arithmetic import train_dataset

    return train_dataset()


def _eval_dataset() -> Any:
    from rlplug.demo.arithmetic import eval_dataset

    return eval_dataset()


def _preference_dataset(data: Any, model: Any, tokenizer: Any) -> Any:
    from rlplug.demo.arithmetic_preference import preference_dataset, with_digit_segments

    rows = preference_dataset(data, model=model, tokenizer=tokenizer)
    return with_digit_segments(rows) if data == "paired" else rows


def _pretraining_dataset() -> Any:
    from datasets import Dataset

    from rlplug.demo.warmup import labelled_texts

    return Dataset.from_dict({"text": labelled_texts()})


def _reward_model(seed: int) -> Any:
    from rlplug.demo.reward_model import tiny_reward_model

    return tiny_reward_model(seed)


def _trainer_fields(*args: Any) -> dict[str, Any]:
    from rlplug.demo.embedded import embedded_trainer_fields

    return embedded_trainer_fields(*args)


BUILTIN_TASK = BuiltinTask(
    model_label="built-in tiny model (warmed up)",
    dataset_label="built-in arithmetic task",
    metric_label="accuracy (exact match)",
    rewards=("arithmetic_exact_match",),
    model_dir=_model_dir,
    train_dataset=_train_dataset,
    eval_dataset=_eval_dataset,
    preference_dataset=_preference_dataset,
    trainer_fields=_trainer_fields,
    torch_threads=1,  # reproducible, and on a shared 2-core machine no slower for a model this small
    reward_model=_reward_model,
    pretraining_dataset=_pretraining_dataset,
)
