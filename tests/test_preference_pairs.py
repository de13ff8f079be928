"""Preference pairs from scored samples (online DPO, Curry-DPO): hand-computed cases."""

from __future__ import annotations

import pytest

from rlplug.components.preference_pairs import (
    ScoredPair, best_worst_pairs, curriculum_stages, pair_rows, ranked_pairs,
)
from rlplug.demo.plugin import arithmetic_distance

SAMPLES = [["12", "15", "12", "9", "x"], ["7", "7"], ["3", "4", "5"]]
SCORES = [[0.0, -3.0, 0.0, -3.0, -100.0], [1.0, 1.0], [-1.0, 0.0, -1.0]]


def test_best_worst_pairs():
    pairs = best_worst_pairs(SAMPLES, SCORES)
    # Row 0: levels 0 ("12") > -3 ("15" first) > -100 ("x"); row 1 ties: no pair; row 2: "4" over "3".
    assert pairs == [ScoredPair(0, "12", "x", 2), ScoredPair(2, "4", "3", 1)]
    # Negative control: taking the first sample as chosen instead of the best would pick "12" vs "x" in
    # row 0 too, but in row 2 it would pick "3"; the builder must not.
    assert pairs[1].chosen != SAMPLES[2][0]


def test_ranked_pairs_and_curriculum():
    pairs = ranked_pairs(SAMPLES, SCORES)
    assert pairs == [ScoredPair(0, "12", "15", 1), ScoredPair(0, "12", "x", 2), ScoredPair(2, "4", "3", 1)]
    stages = curriculum_stages(pairs, 2)
    # Easy (largest gap) first, stable among equal gaps; sizes 2 and 1.
    assert stages == [[ScoredPair(0, "12", "x", 2), ScoredPair(0, "12", "15", 1)], [ScoredPair(2, "4", "3", 1)]]
    assert [len(s) for s in curriculum_stages(pairs, 3)] == [1, 1, 1]
    assert curriculum_stages([], 2) == [[], []]
    with pytest.raises(ValueError, match="stages must be at least 1"):
        curriculum_stages(pairs, 0)
    assert pair_rows(stages[1], ["p0", "p1", "p2"]) == [{"prompt": "p2", "chosen": "4", "rejected": "3"}]


def test_arithmetic_distance_reward():
    assert arithmetic_distance(["1+2+3="] * 4, ["6", " 8", "x", "4"], answer=["6"] * 4) == [-0.0, -2.0, -100.0, -2.0]
    # Negative control: exact match would tie "8" and "x"; distance ranks them.
    assert arithmetic_distance(["p"] * 2, ["8", "x"], answer=["6"] * 2)[0] > -100.0


def test_digit_segments_of_the_builtin_task():
    from rlplug.demo.arithmetic_preference import digit_segments

    assert digit_segments("15", "16") == {
        "chosen_segments": [1, 1], "rejected_segments": [1, 1],
        "chosen_segment_scores": [[1.0], [1.0]], "rejected_segment_scores": [[0.0], [1.0]],
    }
    # Negative control: a wrong tens digit is the one pushed down, not the right units digit.
    assert digit_segments("15", "25")["rejected_segment_scores"] == [[1.0], [0.0]]
    assert digit_segments("15", "9") == {
        "chosen_segments": [2], "rejected_segments": [1],
        "chosen_segment_scores": [[1.0]], "rejected_segment_scores": [[1.0]],
    }


def test_best_vs_frequent_pairs():
    from rlplug.components.preference_pairs import best_vs_frequent_pairs

    samples = [["15", "16", "16", "x", "x", "x"], ["7", "7"], ["3", "9", "4"]]
    scores = [[0.0, -1.0, -1.0, -100.0, -100.0, -100.0], [1.0, 1.0], [-1.0, 0.0, -1.0]]
    # Row 0: "x" is sampled most (3 times): the likeliest mistake, gap 2; row 2: "3" and "4" once each: first sampled.
    assert best_vs_frequent_pairs(samples, scores) == [ScoredPair(0, "15", "x", 2), ScoredPair(2, "9", "3", 1)]
    # Negative control: the best completion is never its own rejected even when it is the most sampled.
    assert best_vs_frequent_pairs([["5", "5", "5", "6"]], [[0.0, 0.0, 0.0, -1.0]]) == [ScoredPair(0, "5", "6", 1)]
