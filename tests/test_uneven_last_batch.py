"""Issue 11, crash 1: the preference adapters survive an epoch whose last batch is short.

With 8 rows and batches of 7, the last batch holds 1 row; accelerate's
``gather_for_metrics`` trims dim 0 of anything gathered on that batch to 1 element, which
cut the ``[entropy sum, token count]`` pair and crashed DPO and KTO before anything was saved.
"""

from __future__ import annotations

import json
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator

from rlplug.cli import train as main
from rlplug.trl.preference_common import log_token_metrics


def write_rows(path, data: str, rows: int) -> str:
    with open(path, "w") as f:
        for i in range(rows):
            if data == "paired":
                row = {"prompt": f"{i}+1=", "chosen": str(i + 1), "rejected": str(i + 2)}
            else:
                row = {"prompt": f"{i}+1=", "completion": str(i + 1 + i % 2), "label": i % 2 == 0}
            f.write(json.dumps(row) + "\n")
    return str(path)


@pytest.mark.parametrize("algorithm, data", [("dpo", "paired"), ("kto", "unpaired")])
def test_an_epoch_with_a_one_row_last_batch_trains_to_the_end(tmp_path, algorithm, data):
    out = tmp_path / "run"
    argv = [
        "--algorithm", algorithm, "--dataset_name", write_rows(tmp_path / "rows.jsonl", data, 8),
        "--per_device_train_batch_size", "7", "--max_steps", "-1", "--num_train_epochs", "1",
        "--output_dir", str(out),
    ]
    assert main(argv) == 0
    steps = [row for row in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2]
    assert all(row["entropy"] > 0 for row in steps)


class _Outputs(SimpleNamespace):
    pass


def _log_on_last_batch(log) -> dict:
    """Calls ``log`` on the second (1-row) batch of a prepared 8-row loader with batches of 7."""
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(torch.utils.data.DataLoader(list(range(8)), batch_size=7))
    trainer = SimpleNamespace(accelerator=accelerator, _metrics={"train": defaultdict(list)},
                              _total_train_tokens=0, _tp_size=1)
    for index, rows in enumerate(loader):
        if index == 1:
            assert len(rows) == 1 and accelerator.gradient_state.remainder == 1
            log(trainer)
    return trainer._metrics["train"]


def test_the_entropy_of_a_one_row_last_batch_is_its_token_weighted_mean():
    entropy = torch.tensor([[9.0, 0.5, 1.5, 2.0]])  # first column: the prompt token before the shift
    shift_mask = torch.tensor([[1, 1, 0]])
    inputs = {"attention_mask": torch.ones(1, 4, dtype=torch.long)}
    metrics = _log_on_last_batch(lambda trainer: log_token_metrics(
        trainer, "train", _Outputs(entropy=entropy), shift_mask, inputs))
    assert metrics["entropy"] == [1.0]  # (0.5 + 1.5) / 2
    assert metrics["num_tokens"] == [4]


def test_negative_control_gather_for_metrics_cuts_the_pair_on_that_batch():
    """The former code path: the same [sum, count] pair through gather_for_metrics."""

    def former(trainer):
        totals = trainer.accelerator.gather_for_metrics(torch.tensor([2.0, 2.0]))
        totals.reshape(-1, 2)

    with pytest.raises(RuntimeError, match=r"shape '\[-1, 2\]' is invalid for input of size 1"):
        _log_on_last_batch(former)
