"""Preference pairs from scored samples: online / iterative DPO and Curry-DPO. No TRL here.

Each prompt comes with several sampled completions and one scalar score per completion
(a weighted sum of reward functions). Identical completions count once (the first score).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class ScoredPair:
    """One preference pair; ``gap`` is the rank distance of chosen and rejected (1 = adjacent)."""

    row: int
    chosen: str
    rejected: str
    gap: int


def _levels(completions: Sequence[str], scores: Sequence[float]) -> list[tuple[float, str]]:
    """Distinct completions with their scores, best first (ties: first sampled first)."""
    if len(completions) != len(scores):
        raise ValueError(f"{len(completions)} completions but {len(scores)} scores")
    seen: dict[str, float] = {}
    for completion, score in zip(completions, scores):
        seen.setdefault(completion, float(score))
    return [(score, completion) for completion, score in sorted(seen.items(), key=lambda item: -item[1])]


def best_worst_pairs(samples: Sequence[Sequence[str]], scores: Sequence[Sequence[float]]) -> list[ScoredPair]:
    """Per prompt, the best-scored completion against the worst (iterative DPO; Xiong et al. 2024,
    arXiv:2312.11456); among equal scores the first sampled. A prompt whose completions all score the same gives no pair. ``gap`` is
    the number of distinct score levels minus one."""
    pairs = []
    for row, (completions, values) in enumerate(zip(samples, scores, strict=True)):
        levels = _levels(completions, values)
        ranks = sorted({score for score, _ in levels}, reverse=True)
        if len(ranks) > 1:
            worst = next(completion for score, completion in levels if score == ranks[-1])  # first sampled
            pairs.append(ScoredPair(row, levels[0][1], worst, len(ranks) - 1))
    return pairs


def best_vs_frequent_pairs(samples: Sequence[Sequence[str]], scores: Sequence[Sequence[float]]) -> list[ScoredPair]:
    """Per prompt, the best-scored completion against the most often sampled completion that
    scores lower (ties: first sampled): the policy's likeliest mistake, a hard negative.
    ``gap`` is the dense rank distance between the two. No pair when all scores are equal."""
    pairs = []
    for row, (completions, values) in enumerate(zip(samples, scores, strict=True)):
        levels = _levels(completions, values)
        ranks = sorted({score for score, _ in levels}, reverse=True)
        if len(ranks) < 2:
            continue
        best_score, best = levels[0]
        counts: dict[str, int] = {}
        for completion in completions:
            counts[completion] = counts.get(completion, 0) + 1
        worse = [(completion, score) for score, completion in levels if score < best_score]
        first_seen = {completion: i for i, completion in reversed(list(enumerate(completions)))}
        rejected, score = min(worse, key=lambda item: (-counts[item[0]], first_seen[item[0]]))
        pairs.append(ScoredPair(row, best, rejected, ranks.index(score)))
    return pairs


def ranked_pairs(samples: Sequence[Sequence[str]], scores: Sequence[Sequence[float]]) -> list[ScoredPair]:
    """Curry-DPO's pairs (Pattnaik et al. 2024, arXiv:2403.07230; seed 003 §5.3.4): per prompt,
    the best completion against one completion of every lower score level, ``gap`` = the
    level's dense rank distance from the best (R1 vs R4 has gap 3)."""
    pairs = []
    for row, (completions, values) in enumerate(zip(samples, scores, strict=True)):
        levels = _levels(completions, values)
        ranks = sorted({score for score, _ in levels}, reverse=True)
        best = levels[0][1]
        taken: set[float] = {levels[0][0]}
        for score, completion in levels[1:]:
            if score not in taken:
                taken.add(score)
                pairs.append(ScoredPair(row, best, completion, ranks.index(score)))
    return pairs


def curriculum_stages(pairs: Sequence[ScoredPair], stages: int) -> list[list[ScoredPair]]:
    """Split pairs into ``stages`` stages from easy to hard: sorted by ``gap``, largest first
    (stable), then cut into contiguous chunks whose sizes differ by at most one."""
    if stages < 1:
        raise ValueError(f"stages must be at least 1, got {stages}")
    ordered = sorted(pairs, key=lambda pair: -pair.gap)
    size, extra = divmod(len(ordered), stages)
    out, start = [], 0
    for stage in range(stages):
        end = start + size + (1 if stage < extra else 0)
        out.append(list(ordered[start:end]))
        start = end
    return out


def pair_rows(pairs: Sequence[ScoredPair], prompts: Sequence[Any]) -> list[dict[str, Any]]:
    """TRL's paired rows: ``prompt``, ``chosen``, ``rejected``."""
    return [{"prompt": prompts[p.row], "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
