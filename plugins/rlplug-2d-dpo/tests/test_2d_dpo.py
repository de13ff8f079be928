"""2D-DPO: the loss against hand-computed values, the segment data path through TRL's
DPOTrainer (segment sums equal the per-token log-probs summed by hand), and 2 training steps
on a synthetic segment-scored dataset."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM

from rlplug import PreferenceBatch, SegmentBatch, build_trainer, get_registry
from rlplug.core.segments import segment_ids
from rlplug_2d_dpo.losses import two_d_dpo


def log1p_exp_neg(x: float) -> float:
    return math.log1p(math.exp(-x))  # -log sigmoid(x)


def batch_with(chosen_seg, ref_chosen_seg, rejected_seg, ref_rejected_seg, chosen_scores, rejected_scores, mask):
    t = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    segments = SegmentBatch(
        chosen_logps=t(chosen_seg), rejected_logps=t(rejected_seg), ref_chosen_logps=t(ref_chosen_seg),
        ref_rejected_logps=t(ref_rejected_seg), chosen_scores=t(chosen_scores), rejected_scores=t(rejected_scores),
        mask=torch.tensor(mask),
    )
    sums = lambda v: t(v).sum(dim=1)  # noqa: E731
    return PreferenceBatch(
        chosen_logps=sums(chosen_seg), rejected_logps=sums(rejected_seg), chosen_lengths=t([3.0] * len(mask)),
        rejected_lengths=t([3.0] * len(mask)), ref_chosen_logps=sums(ref_chosen_seg),
        ref_rejected_logps=sums(ref_rejected_seg), chosen_nll=t(0.0), segments=segments,
    )


# Row 0: two segments, two aspects. Row 1: one real segment and a padding segment of garbage.
HAND = dict(
    chosen_seg=[[1.0, 2.0], [-0.5, 99.0]], ref_chosen_seg=[[0.5, 1.0], [-1.0, -99.0]],
    rejected_seg=[[-1.0, 0.0], [-2.0, 7.0]], ref_rejected_seg=[[0.0, 0.0], [-1.0, 3.0]],
    chosen_scores=[[[1.0, 0.0], [1.0, 1.0]], [[1.0, 1.0], [5.0, 5.0]]],
    rejected_scores=[[[0.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [5.0, 5.0]]],
    mask=[[True, True], [True, False]],
)


def test_loss_matches_hand_computed_values():
    losses, metrics = two_d_dpo(batch_with(**HAND), beta=1.0)
    # Row 0: log-ratios w = [0.5, 1.0], l = [-1.0, 0.0]; segment scores (aspect mean) r_w = [0.5, 1.0],
    # r_l = [0.0, 0.5]; segment margins 0.5*0.5 - 0*(-1) = 0.25 and 1*1 - 0.5*0 = 1.0.
    # Row 1: w = 0.5, l = -1.0, r_w = 1.0, r_l = 0.5: margin 0.5 + 0.5 = 1.0; the padding segment adds nothing.
    expected = [log1p_exp_neg(0.25) + log1p_exp_neg(1.0), log1p_exp_neg(1.0)]
    assert losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert expected[0] == pytest.approx(0.8892011, abs=1e-6)
    assert metrics["rewards/chosen"].tolist() == pytest.approx([0.25 + 1.0, 0.5], abs=1e-6)
    assert metrics["rewards/rejected"].tolist() == pytest.approx([0.0, -0.5], abs=1e-6)
    # Negative control: one sigmoid over the summed segment margins (sequence-level) is a different loss.
    sequence_level = [log1p_exp_neg(1.25), log1p_exp_neg(1.0)]
    assert losses[0].item() != pytest.approx(sequence_level[0], abs=1e-3)


def test_aspect_weights_and_beta():
    losses, _ = two_d_dpo(batch_with(**HAND), beta=0.5, aspect_weights=[1.0, 0.0])
    # Aspect 0 only: r_w = [1, 1], r_l = [0, 1] (row 0); r_w = 1, r_l = 0 (row 1).
    # Row 0 margins: 1*0.5 - 0 = 0.5 and 1*1 - 1*0 = 1.0; row 1: 0.5 - 0 = 0.5. Times beta 0.5.
    expected = [log1p_exp_neg(0.25) + log1p_exp_neg(0.5), log1p_exp_neg(0.25)]
    assert losses.tolist() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="aspect_weights has 3 entries but the data has 2 aspects"):
        two_d_dpo(batch_with(**HAND), aspect_weights=[1.0, 0.0, 0.0])


def test_one_full_segment_with_unit_scores_is_dpo():
    batch = batch_with(
        chosen_seg=[[-1.2], [-0.3]], ref_chosen_seg=[[-1.0], [-0.9]], rejected_seg=[[-2.0], [-0.1]],
        ref_rejected_seg=[[-1.5], [-0.4]], chosen_scores=[[[1.0]], [[1.0]]], rejected_scores=[[[1.0]], [[1.0]]],
        mask=[[True], [True]],
    )
    dpo = get_registry().get("preference_losses", "dpo_sigmoid")
    assert two_d_dpo(batch, beta=0.1)[0].tolist() == pytest.approx(dpo(batch, beta=0.1)[0].tolist(), abs=1e-7)
    # Negative control: a zero score on the rejected side drops its term, so it is no longer DPO.
    zero = batch_with(
        chosen_seg=[[-1.2], [-0.3]], ref_chosen_seg=[[-1.0], [-0.9]], rejected_seg=[[-2.0], [-0.1]],
        ref_rejected_seg=[[-1.5], [-0.4]], chosen_scores=[[[1.0]], [[1.0]]], rejected_scores=[[[0.0]], [[0.0]]],
        mask=[[True], [True]],
    )
    assert two_d_dpo(zero, beta=0.1)[0].tolist() != pytest.approx(dpo(batch, beta=0.1)[0].tolist(), abs=1e-4)


def test_segment_ids_and_errors():
    assert segment_ids([2, 1], 4, "chosen_segments") == [0, 0, 1, -1]
    with pytest.raises(ValueError, match="chosen_segments covers 5 tokens but the tokenized completion has 4"):
        segment_ids([3, 2], 4, "chosen_segments")
    with pytest.raises(ValueError, match="rejected_segments must be positive"):
        segment_ids([0, 2], 4, "rejected_segments")


def synthetic_dataset() -> Dataset:
    """Two-digit answers, one segment per digit, one aspect: is the digit right (1) or wrong (0).

    The character tokenizer gives one token per digit and TRL appends EOS, so segments [1, 1]
    cover the two digits and leave EOS out.
    """
    rows = []
    for a in range(2, 10):
        for b in range(2, 10):
            answer = a + b + 9
            wrong = answer + 1 if answer % 10 != 9 else answer - 1
            right, bad = str(answer), str(wrong)
            rows.append({
                "prompt": f"{a}+{b}+9=", "chosen": right, "rejected": bad,
                "chosen_segments": [1, 1], "rejected_segments": [1, 1],
                "chosen_segment_scores": [[1.0], [1.0]],
                "rejected_segment_scores": [[float(bad[0] == right[0])], [float(bad[1] == right[1])]],
            })
    return Dataset.from_list(rows[:16])


def trl_fields(tmp_path, **fields):
    return {
        "output_dir": str(tmp_path), "per_device_train_batch_size": 4, "bf16": False, "gradient_checkpointing": False,
        "report_to": "none", "save_strategy": "no", "disable_tqdm": True, "logging_steps": 1, "use_cpu": True,
        "learning_rate": 1e-3, **fields,
    }


def per_token_logps(model, prompt_ids, completion_ids):
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    return logps[len(prompt_ids) - 1:]


def test_trains_two_steps_and_segment_sums_match_the_model(tiny_model_dir, tmp_path, monkeypatch):
    torch.set_default_dtype(torch.float32)
    data = synthetic_dataset()
    trainer = build_trainer("2d_dpo", model=tiny_model_dir, train_dataset=data, **trl_fields(tmp_path, max_steps=2))
    seen = []
    loss = trainer.components.loss

    class Spy:
        name = loss.name

        def __call__(self, batch):
            seen.append(batch)
            return loss(batch)

    monkeypatch.setattr(trainer, "components", dataclasses.replace(trainer.components, loss=Spy()))
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32).eval()
    first_rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    result = trainer.train()
    assert len(seen) == 2 and math.isfinite(result.training_loss)
    first = seen[0]
    assert first.segments.mask.all() and first.segments.chosen_scores.shape == (4, 2, 1)
    # The first batch's rows, recomputed by hand with the initial weights (policy = reference at step 0).
    by_prompt = {tuple(r["prompt_ids"]): r for r in first_rows}
    matched = 0
    for row in by_prompt.values():
        chosen = per_token_logps(initial, row["prompt_ids"], row["chosen_ids"])
        target = torch.tensor([chosen[0].item(), chosen[1].item()])
        hits = [i for i in range(4) if torch.allclose(first.segments.ref_chosen_logps[i], target, atol=1e-5)]
        if hits:
            i = hits[0]
            matched += 1
            assert first.segments.chosen_logps[i].tolist() == pytest.approx(target.tolist(), abs=1e-5)
            # Sequence sums include EOS, which is in no segment: they equal digits + EOS.
            assert first.ref_chosen_logps[i].item() == pytest.approx(chosen.sum().item(), abs=1e-5)
            # Negative control: shifting the segment boundary by one token gives other sums.
            shifted = torch.tensor([chosen[1].item(), chosen[2].item()])
            assert not torch.allclose(first.segments.ref_chosen_logps[i], shifted, atol=1e-3)
    assert matched == 4


def test_missing_segment_column_is_named(tiny_model_dir, tmp_path):
    data = synthetic_dataset().remove_columns("rejected_segment_scores")
    trainer = build_trainer("2d_dpo", model=tiny_model_dir, train_dataset=data, **trl_fields(tmp_path, max_steps=1))
    with pytest.raises(ValueError, match="lacks column\\(s\\) rejected_segment_scores"):
        trainer.train()
