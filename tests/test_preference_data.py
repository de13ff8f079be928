"""Preference data from the built-in arithmetic task."""

from __future__ import annotations

import pytest

from rlplug.demo import arithmetic_preference as data
from rlplug.demo.arithmetic import split_problems

PROBLEMS = [{"prompt": "1+2+3=", "answer": "6"}, {"prompt": "9+9+9=", "answer": "27"}, {"prompt": "0+0+0=", "answer": "0"}]


def test_deterministic_wrong_answer_is_off_by_one_and_stays_in_range():
    assert [data.deterministic_wrong_answer(a) for a in ("0", "6", "26", "27")] == ["1", "7", "27", "26"]


def test_most_common_wrong_answer_ignores_correct_and_empty_samples(monkeypatch):
    samples = {
        "1+2+3=": ["6", "7", "5", "7", "", "6", "6"],  # 6 is right; 7 is the most common wrong answer
        "9+9+9=": ["27", "27"],  # never wrong: the off-by-one fallback
        "0+0+0=": ["", "", "1"],  # empty samples do not count
    }
    monkeypatch.setattr(data, "generate_completions", lambda model, tokenizer, prompts, *a, **kw: [samples[p] for p in prompts])
    assert data.most_common_wrong_answers(None, None, PROBLEMS) == {"1+2+3=": "7", "9+9+9=": "26", "0+0+0=": "1"}


def test_paired_rows_prefer_the_answer():
    rows = data.paired_preferences(PROBLEMS, {"1+2+3=": "5"}).to_list()
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("6", "5"), ("27", "26"), ("0", "1")]
    assert all(r["answer"] == r["chosen"] for r in rows)


def test_a_wrong_answer_equal_to_the_answer_is_refused():
    with pytest.raises(ValueError, match="equals the correct answer"):
        data.paired_preferences(PROBLEMS, {"1+2+3=": "6"})


def test_unpaired_rows_are_balanced_shuffled_and_reproducible():
    problems = split_problems(0)[0][:50]
    rows = data.unpaired_preferences(problems, seed=3).to_list()
    assert len(rows) == 100 and sum(r["label"] for r in rows) == 50
    assert all((r["completion"] == r["answer"]) == r["label"] for r in rows)
    labels = [r["label"] for r in rows]
    assert labels != [True, False] * 50  # shuffled: KTO samples its batches in order
    assert rows == data.unpaired_preferences(problems, seed=3).to_list()


@pytest.mark.parametrize(
    "algorithm, columns",
    [("dpo", {"prompt", "chosen", "rejected", "answer"}), ("kto", {"prompt", "completion", "label", "answer"})],
)
def test_dataset_for_an_algorithm_has_its_shape(algorithm, columns):
    dataset = data.preference_dataset_for(algorithm)
    assert set(dataset.column_names) == columns
    assert len(dataset) == len(split_problems(0)[0]) * (2 if algorithm == "kto" else 1)


def test_dataset_for_an_online_algorithm_is_refused():
    with pytest.raises(ValueError, match="'grpo' is not a preference algorithm"):
        data.preference_dataset_for("grpo")
