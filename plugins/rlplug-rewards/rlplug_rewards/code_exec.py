"""``code_exec``: run the generated Python against the row's tests in the sandbox."""

from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from rlplug_rewards.sandbox import SandboxLimits, SandboxResult, run_tests
from rlplug_rewards.text import column, completion_text

logger = logging.getLogger(__name__)

_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", flags=re.DOTALL)


def extract_code(text: str) -> str:
    """The last ```python fenced block, else the last fenced block of any language, else the whole text."""
    blocks = _FENCE.findall(text)
    python_blocks = [body for language, body in blocks if language.lower() in ("python", "py", "python3")]
    if python_blocks:
        return python_blocks[-1]
    return blocks[-1][1] if blocks else text


def _as_tests(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value] if value.strip() else None
    tests = [str(test) for test in value]
    return tests or None


def code_exec(
    prompts: list[Any], completions: list[Any], *, tests_column: str = "tests", timeout: float = 10.0,
    test_timeout: float = 2.0, cpu_seconds: int = 10, memory_mb: int = 512, max_processes: int = 32,
    output_bytes: int = 1 << 16, workers: int = 2, isolation: str = "auto", landlock: str = "auto",
    sandbox_user: str | int | None = "nobody", python: str | None = None, **kwargs: Any,
) -> list[float | None]:
    """Fraction of the row's tests that the completion's code passes, run in the sandbox.

    Reads the dataset column ``tests`` (param ``tests_column``): a list of Python snippets
    (usually ``assert`` statements) run after the solution in the same namespace, each
    under ``test_timeout`` seconds. The solution runs with ``__name__ == "__solution__"``,
    so ``if __name__ == "__main__":`` blocks do not run. The code is the last ```python
    block of the completion, or the whole completion. A row without tests is None.

    A sandbox failure (timeout, limit, crash, no sandbox) scores 0.0; the reason is
    logged, counted through TRL's ``log_metric`` as ``code_exec/sandbox_failures``, and
    never raised. See :mod:`rlplug_rewards.sandbox` for the isolation and its limits.
    """
    all_tests = [_as_tests(value) for value in column(kwargs, tests_column, "code_exec", len(completions), "tests_column")]
    limits = SandboxLimits(timeout, test_timeout, cpu_seconds, memory_mb, max_processes, output_bytes)

    def score(index: int) -> SandboxResult | None:
        tests = all_tests[index]
        if tests is None:
            return None
        code = extract_code(completion_text(completions[index]))
        return run_tests(code, tests, limits, isolation=isolation, python=python, sandbox_user=sandbox_user,
                         landlock=landlock)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, os.cpu_count() or 1))) as pool:
        results = list(pool.map(score, range(len(completions))))

    failures = [(i, r) for i, r in enumerate(results) if r is not None and r.status != "ok"]
    for index, result in failures:
        logger.warning("code_exec: completion %d scored 0 (%s): %s", index, result.status, result.reason)
    log_metric: Callable[[str, float], None] | None = kwargs.get("log_metric")
    if log_metric is not None:
        log_metric("code_exec/sandbox_failures", float(len(failures)))
    return [None if result is None else result.fraction for result in results]
