"""The run summary statistics and plot: exact values from a hand-made log history."""

import json
import math

from rlplug import get_registry
from rlplug.app.report import (
    PLOT_FILE,
    SUMMARY_FILE,
    ReportSpec,
    edge_means,
    headline_metrics,
    metric_series,
    write_report,
)

ONLINE = get_registry().get("trainer_kinds", "online")
ONLINE_REPORT = ReportSpec(headline=ONLINE.report_headline, panels=ONLINE.report_panels)
REWARDS = [0.1, 0.3, 0.2, 0.4, 0.5, 0.5, 0.6, 0.6, 0.7, 0.7, 0.8, 1.0]


def _log_history():
    """12 training logs (steps 10..120) with reward and KL, plus entries that must be ignored."""
    history = [{"step": 10 * (i + 1), "reward": r, "kl": 0.01 * i, "loss": 0.0} for i, r in enumerate(REWARDS)]
    history.insert(5, {"step": 55, "eval_loss": 1.0})  # an eval log: no reward
    history.insert(7, {"step": 65, "reward": math.nan})  # a non-finite value is not a logged point
    # TRL's end-of-training entry, which repeats averaged metrics: not a point of the curve
    history.append({"step": 120, "train_runtime": 3.0, "train_loss": 0.1, "reward": 0.0, "kl": 9.0})
    return history


def test_metric_series_keeps_only_finite_logged_values():
    steps, values = metric_series(_log_history(), "reward")
    assert steps == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]
    assert values == REWARDS


def test_edge_means_use_ceil_of_ten_percent_exact_values():
    # 12 points -> ceil(1.2) = 2 at each edge: (0.1 + 0.3) / 2 and (0.8 + 1.0) / 2.
    first, last = edge_means(REWARDS)
    assert math.isclose(first, 0.2, abs_tol=1e-15)
    assert math.isclose(last, 0.9, abs_tol=1e-15)
    # 5 points -> at least one point at each edge.
    assert edge_means([2.0, 9.0, 9.0, 9.0, 4.0]) == (2.0, 4.0)
    # 20 points -> exactly 2.
    assert edge_means([1.0, 3.0] + [0.0] * 16 + [5.0, 7.0]) == (2.0, 6.0)
    assert edge_means([]) == (None, None)


def test_negative_control_floor_variant_gives_other_numbers():
    """A floor-based edge (int(0.1 * n)) would report 0.1 and 1.0 here: the exact values above catch it."""
    count = max(1, int(0.1 * len(REWARDS)))
    wrong_first, wrong_last = sum(REWARDS[:count]) / count, sum(REWARDS[-count:]) / count
    right_first, right_last = edge_means(REWARDS)
    assert (wrong_first, wrong_last) == (0.1, 1.0)
    assert not math.isclose(wrong_first, right_first) and not math.isclose(wrong_last, right_last)


def test_headline_metrics_are_generic_over_keys():
    history = [{"step": s, "rewards/margins": float(s), "rewards/accuracies": 0.5} for s in range(1, 11)]
    summary = headline_metrics(history, {"margin": "rewards/margins", "accuracy": "rewards/accuracies"})
    assert summary == {"margin_first": 1.0, "margin_last": 10.0, "accuracy_first": 0.5, "accuracy_last": 0.5}
    assert headline_metrics(history, {"reward": "reward"}) == {"reward_first": None, "reward_last": None}


def test_write_report_writes_summary_and_png(tmp_path):
    summary = write_report(tmp_path, _log_history(), ONLINE_REPORT, {"algorithm": "grpo", "steps": 120}, "t")
    on_disk = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert on_disk == summary
    assert on_disk["algorithm"] == "grpo" and on_disk["logged_points"] == 12
    assert math.isclose(on_disk["reward_first"], 0.2) and math.isclose(on_disk["reward_last"], 0.9)
    png = (tmp_path / PLOT_FILE).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_plot_panel_for_a_key_never_logged(tmp_path):
    spec = ReportSpec(headline={"reward": "reward"}, panels=(("reward", "reward"), ("kl", "KL")))
    history = [{"step": 1, "reward": 0.5}, {"step": 2, "reward": 0.75}]
    summary = write_report(tmp_path, history, spec, {}, "no KL")
    assert summary["reward_first"] == 0.5 and summary["reward_last"] == 0.75
    assert (tmp_path / PLOT_FILE).stat().st_size > 0
