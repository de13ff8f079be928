"""The picture of a run: ``rlplug-summary.json`` and a plot, from the trainer's log history.

Generic over metric keys: what a trainer kind reports is data, declared by the kind
(:class:`rlplug.core.trainer_kinds.TrainerKind`): an online run plots TRL's ``reward`` and
``kl``, a preference trainer its margin and accuracy.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

SUMMARY_FILE = "rlplug-summary.json"
PLOT_FILE = "reward.png"
EDGE_FRACTION = 0.1


@dataclass(frozen=True)
class ReportSpec:
    """Which logged keys a trainer kind reports.

    - ``headline``: summary name -> log key; each gives ``<name>_first`` and ``<name>_last``.
    - ``panels``: (log key, axis label) per plot panel, in order.
    """

    headline: dict[str, str]
    panels: tuple[tuple[str, str], ...]


def metric_series(log_history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of every log entry holding a finite ``key``.

    The trainer's closing entry (``train_runtime``) repeats metrics averaged since the last
    log; it is not a point of the curve.
    """
    steps, values = [], []
    for entry in log_history:
        if "train_runtime" in entry:
            continue
        value = entry.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            steps.append(int(entry.get("step", len(steps))))
            values.append(float(value))
    return steps, values


def edge_means(values: Sequence[float], fraction: float = EDGE_FRACTION) -> tuple[float | None, float | None]:
    """Means of the first and of the last ``ceil(fraction * n)`` values (at least one); None when empty."""
    if not values:
        return None, None
    count = max(1, math.ceil(fraction * len(values)))
    return sum(values[:count]) / count, sum(values[-count:]) / count


def headline_metrics(log_history: Sequence[dict[str, Any]], headline: dict[str, str]) -> dict[str, float | None]:
    """``<name>_first`` and ``<name>_last`` for each headline metric."""
    summary: dict[str, float | None] = {}
    for name, key in headline.items():
        first, last = edge_means(metric_series(log_history, key)[1])
        summary[f"{name}_first"], summary[f"{name}_last"] = first, last
    return summary


def _rolling_mean(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_metrics(
    log_history: Sequence[dict[str, Any]], panels: Sequence[tuple[str, str]], path: str | Path, title: str
) -> Path:
    """One panel per metric against the training step, with a rolling mean; a key never logged says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(len(panels), 1, figsize=(8, 3.2 * len(panels)), sharex=True, squeeze=False)
    for axis, (key, label) in zip(axes[:, 0], panels):
        steps, values = metric_series(log_history, key)
        axis.set_ylabel(label, fontsize=11)
        axis.grid(alpha=0.3)
        if not values:
            axis.text(0.5, 0.5, f"'{key}' was not logged in this run", ha="center", va="center", transform=axis.transAxes)
            continue
        axis.plot(steps, values, color="tab:blue", alpha=0.45, linewidth=1, label=key)
        window = max(1, len(values) // 10)
        if window > 1:
            axis.plot(steps, _rolling_mean(values, window), color="tab:blue", linewidth=2, label=f"{key}, rolling mean ({window} logs)")
        axis.legend(loc="best", fontsize=9)
    axes[-1, 0].set_xlabel("training step", fontsize=11)
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(title, fontsize=12)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_report(
    output_dir: str | Path,
    log_history: Sequence[dict[str, Any]],
    spec: ReportSpec,
    fields: dict[str, Any],
    title: str,
) -> dict[str, Any]:
    """Write the summary JSON (``fields`` + headline metrics) and the plot; return the summary."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = {**fields, **headline_metrics(log_history, spec.headline)}
    summary["logged_points"] = len(metric_series(log_history, next(iter(spec.headline.values())))[1])
    (output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    plot_metrics(log_history, spec.panels, output_dir / PLOT_FILE, title)
    return summary
