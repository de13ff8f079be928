"""Checkpoint and resume, for every trainer kind: training 4 steps straight and training 2,
saving, and resuming for the last 2 in a fresh trainer give bitwise-equal weights."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from conformance_kit import make, rows, weights

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class StepCounter(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


def test_resume_from_checkpoint_is_bitwise_equal_to_an_uninterrupted_run(kind, tiny_model_dir, tmp_path):
    fields = dict(max_steps=4, save_strategy="steps", save_steps=2)
    straight = make(kind, tiny_model_dir, tmp_path / "straight", rows(kind, 16), **fields)
    straight.train()
    final = weights(straight.model)

    resumed = make(kind, tiny_model_dir, tmp_path / "resumed", rows(kind, 16), **fields)
    counter = StepCounter()
    resumed.add_callback(counter)
    resumed.train(resume_from_checkpoint=str(tmp_path / "straight" / "checkpoint-2"))
    assert counter.steps == 2 and resumed.state.global_step == 4, "the resumed run did not start at step 2"
    after_resume = weights(resumed.model)
    assert final.keys() == after_resume.keys()
    unequal = [name for name in final if not torch.equal(final[name], after_resume[name])]
    assert not unequal, f"resumed weights differ from the uninterrupted run: {unequal[:3]}"

    # Negative control: the saved step-2 weights differ from the final ones, so the comparison
    # above would catch a resume that kept the checkpoint's weights or lost the last two steps.
    at_checkpoint = AutoModelForCausalLM.from_pretrained(str(tmp_path / "straight" / "checkpoint-2"),
                                                         dtype=torch.float32)
    assert any(not torch.equal(p, final[name]) for name, p in at_checkpoint.named_parameters())
