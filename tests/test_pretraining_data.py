"""PPO-ptx's pretraining text from ``rlplug train``: a user's text dataset, or the built-in
task's labelled examples; a dataset without a ``text`` column is named."""

from __future__ import annotations

import json

import pytest

from rlplug.app.config import ConfigError, DatasetArguments
from rlplug.app.data import load_pretraining_dataset
from rlplug.demo import BUILTIN_TASK


def test_the_built_in_task_gives_its_warm_up_examples():
    rows = load_pretraining_dataset(DatasetArguments(), BUILTIN_TASK)
    assert rows.column_names == ["text"] and len(rows) == 100
    prompt, answer = rows[0]["text"].split("=")
    assert sum(int(term) for term in prompt.split("+")) == int(answer)  # a correct labelled example


def test_a_user_text_file_is_read_and_a_missing_column_is_named(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps({"text": t}) for t in ["one", "two"]))
    assert load_pretraining_dataset(DatasetArguments(pretraining_dataset_name=str(good)))["text"] == ["one", "two"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"content": "x"}))
    with pytest.raises(ConfigError, match="pretraining_dataset_name: .* has no `text` column; columns: content"):
        load_pretraining_dataset(DatasetArguments(pretraining_dataset_name=str(bad)))


def test_without_a_built_in_task_the_field_is_named():
    with pytest.raises(ValueError, match="pretraining_dataset_name"):
        load_pretraining_dataset(DatasetArguments(), None)
