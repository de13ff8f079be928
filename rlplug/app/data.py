"""The dataset part of ``rlplug train``: the built-in task, or a hub/local dataset mapped to TRL's columns.

TRL's online trainers read a ``prompt`` column and hand every other column to the reward
functions by name; answer-checking rewards read ``answer``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rlplug.app.builtin_task import BuiltinTask, require
from rlplug.app.config import ConfigError, DatasetArguments
_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def _load_file(path: Path) -> Any:
    from datasets import load_dataset

    builder = _FILE_BUILDERS.get(path.suffix)
    if builder is None:
        raise ConfigError(f"cannot read data file {str(path)!r}; data files must end in {', '.join(_FILE_BUILDERS)}")
    return load_dataset(builder, data_files=str(path), split="train")


def load_split(name: str, config: str | None, split: str) -> Any:
    """One split of a hub dataset or local directory. A data file (.jsonl, .csv...) given as
    ``name`` is the training split; a data file given as ``split`` is that split."""
    from datasets import load_dataset

    if Path(split).expanduser().is_file():
        return _load_file(Path(split).expanduser())
    if Path(name).expanduser().is_file():
        if split != "train":
            raise ConfigError(f"split {split!r}: dataset_name is a single data file; give this split as a data file path")
        return _load_file(Path(name).expanduser())
    return load_dataset(name, config, split=split)


def _extract_answer(text: Any, pattern: re.Pattern[str] | None) -> str:
    text = str(text)
    if pattern is None:
        return text.strip()
    match = pattern.search(text)
    return (match.group(1) if match.groups() else match.group(0)).strip() if match else ""


def prepare(dataset: Any, args: DatasetArguments) -> Any:
    """Rename ``prompt_column`` to ``prompt``, derive ``answer``, and make prompts conversational if asked."""
    columns = set(dataset.column_names)
    if args.prompt_column not in columns:
        raise ConfigError(f"prompt_column: the dataset has no column {args.prompt_column!r}; it has {', '.join(sorted(columns))}")
    if args.answer_column is not None and args.answer_column not in columns:
        raise ConfigError(f"answer_column: the dataset has no column {args.answer_column!r}; it has {', '.join(sorted(columns))}")
    pattern = re.compile(args.answer_pattern, re.MULTILINE) if args.answer_pattern else None
    chat = args.conversational or args.system_prompt is not None

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        prompt = row[args.prompt_column]
        if chat and isinstance(prompt, str):
            system = [{"role": "system", "content": args.system_prompt}] if args.system_prompt else []
            prompt = [*system, {"role": "user", "content": prompt}]
        out = {"prompt": prompt}
        if args.answer_column is not None:
            out["answer"] = _extract_answer(row[args.answer_column], pattern)
        return out

    removed = [c for c in (args.prompt_column, "answer") if c in columns and c != "prompt"]
    if args.answer_column is None:
        removed = [c for c in removed if c != "answer"]
    return dataset.map(convert, remove_columns=removed or None)


def load_pretraining_dataset(args: DatasetArguments, builtin: BuiltinTask | None = None) -> Any:
    """Text rows (a ``text`` column) for a pretraining term such as PPO-ptx's."""
    if args.pretraining_dataset_name is not None:
        rows = load_split(args.pretraining_dataset_name, None, args.pretraining_dataset_split)
        if "text" not in rows.column_names:
            raise ConfigError(f"pretraining_dataset_name: {args.pretraining_dataset_name} has no `text` column; "
                              f"columns: {', '.join(rows.column_names)}")
        return rows
    task = require(builtin, "pretraining_dataset_name")
    if task.pretraining_dataset is None:
        raise ConfigError("pretraining_dataset_name: the built-in task has no pretraining text; set it")
    return task.pretraining_dataset()


def load_datasets(
    args: DatasetArguments, recipe: Any = None, model: Any = None, tokenizer: Any = None,
    builtin: BuiltinTask | None = None,
) -> tuple[Any, Any | None]:
    """Training data and held-out prompts (or None), with TRL's column names.

    Online recipes train on prompts. Preference recipes train on the built-in task's
    preference pairs (the model's most common wrong answer is rejected) or, for a user
    dataset, on its rows as they are (TRL's ``chosen``/``rejected`` or ``completion``/``label``).
    Held-out prompts are scored the same way for every recipe. ``builtin`` is the task used
    when no dataset is named.
    """
    from rlplug.trl.build import trainer_kind_of

    preference = None if recipe is None else trainer_kind_of(recipe).preference_data
    if args.is_builtin:
        task = require(builtin, "dataset_name")
        train, held_out = task.train_dataset(), task.eval_dataset()
        if preference:
            train = task.preference_dataset(preference, model, tokenizer)
    elif preference:
        train = load_split(args.dataset_name, args.dataset_config, args.dataset_train_split)
        held_out = None
        if args.dataset_test_split is not None:
            held_out = prepare(load_split(args.dataset_name, args.dataset_config, args.dataset_test_split), args)
    else:
        train = prepare(load_split(args.dataset_name, args.dataset_config, args.dataset_train_split), args)
        held_out = None
        if args.dataset_test_split is not None:
            held_out = prepare(load_split(args.dataset_name, args.dataset_config, args.dataset_test_split), args)
    if held_out is not None and args.eval_prompts is not None:
        held_out = held_out.select(range(min(args.eval_prompts, len(held_out))))
    if held_out is not None and len(held_out) == 0:
        held_out = None
    return train, held_out
