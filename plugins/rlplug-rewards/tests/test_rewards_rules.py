"""Exact values for the rule-based rewards: accuracy_math, format_think, overlong_penalty, length_penalty."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from rlplug_rewards import math_answer
from rlplug_rewards.format import format_think
from rlplug_rewards.length import length_penalty, overlong_penalty
from rlplug_rewards.math_answer import accuracy_math

# (completion, reference answer, expected reward)
MATH_CASES = [
    ("1,000", "1000", 1.0),
    ("The total is 1000.", "1,000", 1.0),
    ("1 000", "1000", 1.0),
    ("0.5", "1/2", 1.0),
    ("1/2", "0.5", 1.0),
    ("2.50", "2.5", 1.0),
    ("-3", "-3.0", 1.0),
    (r"\frac{1}{2}", "0.50", 1.0),
    (r"so \boxed{\dfrac{3}{4}}", "0.75", 1.0),
    (r"\boxed{1,000}", "1000", 1.0),
    (r"$1,234.50", "1234.5", 1.0),
    ("<answer>42</answer>", "42", 1.0),
    ("<answer>\n  12  \n</answer>", "12", 1.0),
    ("<answer><answer>7</answer></answer>", "7", 1.0),
    ("<answer>3</answer> no wait <answer>5</answer>", "5", 1.0),
    ("<answer>3</answer> no wait <answer>5</answer>", "3", 0.0),
    ("<think>maybe 12</think><answer>13</answer>", "12", 0.0),
    ("<think>maybe 12</think><answer>13</answer>", "13", 1.0),
    (r"<answer>so \boxed{9} it is, not 8</answer>", "9", 1.0),
    ("<answer>x = 12</answer>", "12", 1.0),
    (r"The answer is \boxed{12}. It took 13 steps.", "12", 1.0),
    ("It took 13 steps, then 12.", "12", 1.0),
    ("The answer is 12.", "12", 1.0),
    ("<answer>Paris</answer>", "paris", 1.0),
    ("0.5", "0.6", 0.0),
    ("1,000", "100", 0.0),
    ("no answer here", "3", 0.0),
    ("", "3", 0.0),
    ("<answer></answer>", "0", 0.0),
    ("<answer>5", "5", 1.0),  # unclosed tag: falls back to the last number
    ("1/0", "0", 0.0),
]


@pytest.mark.parametrize("completion,reference,expected", MATH_CASES)
def test_accuracy_math_exact_values(completion, reference, expected):
    assert accuracy_math([""], [completion], answer=[reference]) == [expected]


def test_accuracy_math_missing_reference_is_unscorable_and_columns_are_configurable():
    conversational = [[{"role": "assistant", "content": r"\boxed{4}"}]]
    assert accuracy_math([""], conversational, answer=["4"]) == [1.0]
    assert accuracy_math(["", ""], ["4", "4"], answer=[None, " "]) == [None, None]
    assert accuracy_math([""], ["<ans>4</ans> 5"], solution=["4"], answer_column="solution", answer_tag="ans") == [1.0]
    with pytest.raises(KeyError, match="column 'answer'"):
        accuracy_math([""], ["4"], solution=["4"])


def test_extraction_and_parsing_helpers():
    assert math_answer.extract_answer(r"\boxed{\frac{1}{\sqrt{4}}}") == r"\frac{1}{\sqrt{4}}"
    assert math_answer.extract_answer("nothing") is None
    assert math_answer.parse_number("1,234,567.5") == math_answer.Fraction(2469135, 2)
    assert math_answer.parse_number("1,2") is None
    assert math_answer.parse_number("abc") is None


def test_negative_control_plain_string_equality_fails_the_table(monkeypatch):
    """A variant without value normalization must get some of the table wrong."""
    monkeypatch.setattr(math_answer, "answers_match", lambda predicted, reference: predicted.strip() == reference.strip())
    wrong = [case for case in MATH_CASES if accuracy_math([""], [case[0]], answer=[case[1]]) != [case[2]]]
    assert {("1,000", "1000"), ("0.5", "1/2"), ("2.50", "2.5")} <= {(c, r) for c, r, _ in wrong}


FORMAT_CASES = [
    ("<think>a</think><answer>b</answer>", 1.0),
    ("<think>\nreason\n</think>\n<answer>\n5\n</answer>\n", 1.0),
    ("<think></think><answer></answer>", 1.0),
    ("<answer>b</answer>", 0.0),
    ("<think>a</think>", 0.0),
    ("<think>a</think> extra <answer>b</answer>", 0.0),
    ("<think>a</think><answer>b</answer> trailing", 0.0),
    ("preamble <think>a</think><answer>b</answer>", 0.0),
    ("<think><think>a</think></think><answer>b</answer>", 0.0),
    ("<think>a</think><answer><answer>b</answer></answer>", 0.0),
    ("<think>a</think><answer>b</answer><answer>c</answer>", 0.0),
    ("<answer>b</answer><think>a</think>", 0.0),
    ("<think>a<answer>b</answer></think><answer>c</answer>", 0.0),
    ("<THINK>a</THINK><ANSWER>b</ANSWER>", 0.0),
]


@pytest.mark.parametrize("completion,expected", FORMAT_CASES)
def test_format_think_exact_values(completion, expected):
    assert format_think([""], [completion]) == [expected]


def test_format_think_configured_tags():
    text = "<reasoning>x</reasoning><final>y</final>"
    assert format_think([""], [text]) == [0.0]
    assert format_think([""], [text], think_tag="reasoning", answer_tag="final") == [1.0]
    assert format_think([""], [[{"role": "assistant", "content": text}]], think_tag="reasoning", answer_tag="final") == [1.0]


def test_negative_control_lax_format_regex_fails_the_table():
    """TRL's think_format_reward pattern only checks the think block; the table must catch that."""
    lax = re.compile(r"^<think>(?!.*<think>)(.*?)</think>.*$", re.DOTALL)
    wrong = [text for text, expected in FORMAT_CASES if (1.0 if lax.match(text) else 0.0) != expected]
    assert "<think>a</think>" in wrong and "<think>a</think><answer>b</answer> trailing" in wrong


def _ids(*lengths: int) -> list[list[int]]:
    return [[7] * n for n in lengths]


# L_max = 10, L_cache = 4: free up to 6 tokens, then -1/4 per token, -1 at 10 and beyond.
OVERLONG = {0: 0.0, 5: 0.0, 6: 0.0, 7: -0.25, 8: -0.5, 9: -0.75, 10: -1.0, 11: -1.0, 40: -1.0}


def test_overlong_penalty_at_the_thresholds():
    lengths = list(OVERLONG)
    rewards = overlong_penalty([""] * len(lengths), [""] * len(lengths), completion_ids=_ids(*lengths),
                               max_completion_length=10, cache_length=4)
    assert rewards == list(OVERLONG.values())
    chars = overlong_penalty(["", ""], ["x" * 6, "x" * 10], max_completion_length=10, cache_length=4, unit="chars")
    assert chars == [0.0, -1.0]


def test_overlong_penalty_matches_trl_soft_overlong_punishment():
    from trl.rewards import get_soft_overlong_punishment

    lengths = list(range(0, 16))
    trl_values = get_soft_overlong_punishment(max_completion_len=10, soft_punish_cache=4)(_ids(*lengths))
    ours = overlong_penalty([""] * 16, [""] * 16, completion_ids=_ids(*lengths), max_completion_length=10, cache_length=4)
    assert ours == trl_values


def test_negative_control_wrong_slope_is_caught():
    wrong = {n: min(0.0, (6 - n) / 10) if n <= 10 else -1.0 for n in OVERLONG}
    assert wrong != OVERLONG


def test_overlong_penalty_bad_params():
    with pytest.raises(ValueError, match="cache_length"):
        overlong_penalty([""], [""], completion_ids=_ids(3), max_completion_length=10, cache_length=0)
    with pytest.raises(ValueError, match="completion_ids"):
        overlong_penalty([""], [""], max_completion_length=10, cache_length=4)
    with pytest.raises(ValueError, match="unit"):
        overlong_penalty([""], [""], max_completion_length=10, cache_length=4, unit="words")


def test_length_penalty_exact_values():
    rewards = length_penalty([""] * 4, [""] * 4, completion_ids=_ids(0, 4, 8, 12), max_completion_length=8, coef=0.5)
    assert rewards == [0.0, -0.25, -0.5, -0.5]


def test_length_params_come_from_the_trainer_config():
    from rlplug.components.rewards import build_reward_functions

    config = SimpleNamespace(max_completion_length=10)
    (overlong,), _ = build_reward_functions([{"name": "overlong_penalty", "cache_length": 4}], config)
    assert overlong.params == {"max_completion_length": 10, "cache_length": 4}
    assert overlong([""] * 3, [""] * 3, completion_ids=_ids(6, 8, 10)) == [0.0, -0.5, -1.0]
    (explicit,), _ = build_reward_functions([{"name": "overlong_penalty", "cache_length": 4, "max_completion_length": 20}], config)
    assert explicit([""], [""], completion_ids=_ids(10)) == [0.0]
