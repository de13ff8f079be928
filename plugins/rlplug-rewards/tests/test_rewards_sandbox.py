"""The code_exec sandbox: every escape attempt scores 0 and the next completion still scores.

Each case runs the bad solution and a correct one in the same ``code_exec`` call, so a
case passes only when the bad one gets 0.0 *and* the run goes on (the good one gets 1.0).
Negative controls run the same attack code in a plain subprocess and show it succeeds
there, so the sandbox (not the attack code) is what stops it. Only loopback is targeted.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from rlplug_rewards.code_exec import code_exec, extract_code
from rlplug_rewards.sandbox import SandboxLimits, _tasks_of_uid, find_launcher, isolation_report, run_tests

GOOD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]
FAST = {"timeout": 3.0, "test_timeout": 1.0, "cpu_seconds": 3}


def score_with_good(bad_solution: str, bad_tests: list[str], **params) -> list[float | None]:
    """Score ``bad_solution`` then GOOD in one batch."""
    return code_exec(["", ""], [bad_solution, GOOD], tests=[bad_tests, ADD_TESTS], **{**FAST, **params})


def plain_subprocess(code: str, **kwargs) -> subprocess.CompletedProcess:
    """The negative control: the same code without the sandbox."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, **kwargs)


def test_correct_solution_scores_one_and_partial_scores_fraction():
    partial = "def add(a, b):\n    return a + b if a >= 0 else 7\n"  # fails only the test with a negative a
    half = "def add(a, b):\n    return 4\n"  # passes only add(2, 2) == 4
    rewards = code_exec(["", "", ""], [GOOD, partial, half], tests=[ADD_TESTS] * 3, **FAST)
    assert rewards == [1.0, 2 / 3, 1 / 3]


def test_fenced_code_is_extracted_and_rows_without_tests_are_unscorable():
    fenced = "Here you go:\n```python\n" + GOOD + "```\nDone."
    assert extract_code(fenced) == GOOD
    assert extract_code("```\nx = 1\n```\n```py\ny = 2\n```") == "y = 2\n"
    assert code_exec(["", ""], [fenced, GOOD], tests=[ADD_TESTS, []], **FAST) == [1.0, None]


def test_exit_codes_cannot_fake_a_pass():
    # SystemExit(0) is a failure, and os._exit(0) skips the result line: both score 0.
    assert score_with_good("import sys\nsys.exit(0)", ["assert True"]) == [0.0, 1.0]
    assert score_with_good("import os\nos._exit(0)", ["assert True"]) == [0.0, 1.0]


def test_infinite_loop_is_stopped_by_the_per_test_alarm():
    start = time.monotonic()
    assert score_with_good("while True:\n    pass\n", ["assert True"]) == [0.0, 1.0]
    assert time.monotonic() - start < FAST["timeout"]


def test_infinite_loop_ignoring_the_alarm_is_killed_at_the_wall_clock_timeout():
    bad = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass\n"
    start = time.monotonic()
    result = run_tests(bad, ["assert True"], SandboxLimits(timeout=1.5, test_timeout=0.5, cpu_seconds=10))
    elapsed = time.monotonic() - start
    assert result.status == "timeout" and result.fraction == 0.0
    assert 1.5 <= elapsed < 4.0, elapsed
    assert score_with_good(bad, ["assert True"], timeout=1.5, test_timeout=0.5) == [0.0, 1.0]


def test_memory_bomb_is_stopped_by_its_limit():
    bomb = "blob = bytearray(4 * 1024 ** 3)\n"
    result = run_tests(bomb, ["assert True"], SandboxLimits(memory_mb=256, **FAST))
    assert result.status == "ok" and result.outcomes == ("solution: MemoryError",)
    # Control: an allocation well inside the same limit is fine, so the limit (not the code) stopped the bomb.
    assert run_tests("blob = bytearray(16 * 1024 ** 2)\n", ["assert len(blob) == 16 * 1024 ** 2"],
                     SandboxLimits(memory_mb=256, **FAST)).fraction == 1.0
    assert score_with_good(bomb, ["assert True"], memory_mb=256) == [0.0, 1.0]


def _peak_tasks_during(uid: int, run) -> tuple[int, object]:
    peak = 0
    done = threading.Event()

    def watch():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tasks_of_uid(uid))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run()
    finally:
        done.set()
        watcher.join()
    return peak, result


FORK_BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"


def test_fork_bomb_is_contained_and_cleaned_up():
    launcher = find_launcher()
    uid = launcher.user if launcher.user is not None else os.getuid()
    baseline = _tasks_of_uid(uid)
    limits = SandboxLimits(max_processes=8, timeout=3.0, test_timeout=1.0, cpu_seconds=3)
    peak, result = _peak_tasks_during(uid, lambda: run_tests(FORK_BOMB, ["assert True"], limits))
    assert result.fraction == 0.0
    assert peak - baseline <= 8, peak
    time.sleep(0.2)
    assert _tasks_of_uid(uid) <= baseline, "fork bomb processes outlived the sandbox"
    # Negative control: with a higher limit the same bomb really does fork past 8, so the watcher sees forks.
    loose = SandboxLimits(max_processes=40, timeout=3.0, test_timeout=1.0, cpu_seconds=3)
    loose_peak, _ = _peak_tasks_during(uid, lambda: run_tests(FORK_BOMB, ["assert True"], loose))
    assert loose_peak - baseline > 8, loose_peak
    time.sleep(0.2)
    assert _tasks_of_uid(uid) <= baseline
    assert score_with_good(FORK_BOMB, ["assert True"], max_processes=8) == [0.0, 1.0]


@pytest.fixture
def loopback_listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


def _connect_code(port: int) -> str:
    return f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).close()\nconnected = True\n"


@pytest.mark.parametrize("isolation", ["auto", "process"])
def test_socket_connection_fails(loopback_listener, isolation):
    code = _connect_code(loopback_listener)
    assert plain_subprocess(code).returncode == 0  # negative control: unsandboxed, the connection succeeds
    result = run_tests(code, ["assert connected"], SandboxLimits(**FAST), isolation=isolation)
    assert result.status == "ok" and result.outcomes[0].startswith("solution: "), result
    assert score_with_good(code, ["assert connected"], isolation=isolation) == [0.0, 1.0]


def _kernel_layers_available() -> tuple[bool, int]:
    """(network namespace usable, Landlock ABI), probed independently of the sandbox code."""
    namespace = subprocess.run(
        ["unshare", "--net", "true"] if os.geteuid() == 0 else ["unshare", "-rn", "true"], capture_output=True
    ).returncode == 0
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return namespace, max(int(abi), 0)


def test_each_network_layer_blocks_a_connection_on_its_own(loopback_listener):
    """Without the audit hook: the namespace alone, then Landlock alone, block the connection; neither -> it connects."""
    from rlplug_rewards.sandbox import _launch

    namespace, landlock_abi = _kernel_layers_available()
    code, tests, limits = _connect_code(loopback_listener), ["assert connected"], SandboxLimits(**FAST)
    bare = find_launcher("process", landlock="off")
    # Negative control: a sandbox with no network layer at all lets the connection through.
    assert _launch(bare, limits, code, tests, audit_hook=False).fraction == 1.0
    checked = []
    if namespace:
        alone = _launch(find_launcher("namespace", landlock="off"), limits, code, tests, audit_hook=False)
        assert alone.outcomes[0].startswith("solution: "), alone
        checked.append("namespace")
    if landlock_abi >= 4:
        alone = _launch(find_launcher("process", landlock="required"), limits, code, tests, audit_hook=False)
        assert alone.outcomes[0].startswith("solution: "), alone
        checked.append("landlock")
    # With neither kernel layer, only the Python audit hook would stand between the code and the network.
    assert checked, "neither a network namespace nor Landlock >= 4 is available here"


def test_auto_isolation_uses_a_network_namespace_when_the_machine_allows_one():
    probe = subprocess.run(["unshare", "--net", "true"] if os.geteuid() == 0 else ["unshare", "-rn", "true"],
                           capture_output=True)
    launcher = find_launcher("auto")
    assert launcher.mode == ("namespace" if probe.returncode == 0 else "process"), isolation_report(launcher)


def test_writing_outside_the_temp_dir_fails(tmp_path):
    tmp_path.chmod(0o777)  # even a world-writable directory outside the sandbox must stay untouched
    target = tmp_path / "escaped.txt"
    shared_tmp = os.path.join(tempfile.gettempdir(), f"rlplug-escape-{os.getpid()}.txt")
    code = (
        "import os\nwritten = []\n"
        f"for path in [{str(target)!r}, {shared_tmp!r}]:\n"
        "    try:\n        open(path, 'w').write('x')\n        written.append(path)\n    except OSError:\n        pass\n"
        f"try:\n    os.symlink({str(tmp_path)!r}, 'link')\n    open('link/via_symlink.txt', 'w').write('x')\n"
        "    written.append('symlink')\nexcept OSError:\n    pass\n"
        "open('inside.txt', 'w').write('ok')\ninside = open('inside.txt').read()\n"
    )
    tests = ["assert written", "assert inside == 'ok'"]
    assert run_tests(code, tests, SandboxLimits(**FAST)).outcomes == ("AssertionError", None)
    assert score_with_good(code, ["assert written"]) == [0.0, 1.0]
    assert not target.exists() and not os.path.exists(shared_tmp) and not (tmp_path / "via_symlink.txt").exists()
    # Negative control: unsandboxed, the same code writes outside.
    scratch = tempfile.mkdtemp()
    try:
        assert plain_subprocess(code + "assert written\n", cwd=scratch).returncode == 0
        assert target.exists()
    finally:
        for path in (str(target), shared_tmp):
            if os.path.exists(path):
                os.remove(path)


def test_the_parent_environment_is_invisible(monkeypatch):
    monkeypatch.setenv("RLPLUG_TEST_SECRET", "s3cret")
    code = (
        "import os\nfound = os.environ.get('RLPLUG_TEST_SECRET')\n"
        "try:\n"
        f"    found = found or ('s3cret' if b'RLPLUG_TEST_SECRET' in open('/proc/{os.getpid()}/environ', 'rb').read() else None)\n"
        "except OSError:\n    pass\n"
    )
    tests = ["assert found == 's3cret'"]
    assert plain_subprocess(code + tests[0]).returncode == 0  # negative control: an inheriting child sees it
    assert run_tests(code, tests, SandboxLimits(**FAST)).outcomes == ("AssertionError",)
    assert score_with_good(code, tests) == [0.0, 1.0]


def test_output_is_capped():
    flood = "import os\nos.write(1, b'x' * (1 << 20))\n"
    result = run_tests(flood, ["assert True"], SandboxLimits(output_bytes=1 << 16, **FAST))
    assert result.fraction == 0.0 and "output" in result.reason, result
    assert score_with_good(flood, ["assert True"], output_bytes=1 << 16) == [0.0, 1.0]


def test_the_temp_dir_is_fresh_and_removed(monkeypatch):
    created = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args, **kwargs):
        path = real_mkdtemp(*args, **kwargs)
        created.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    code = "import os\nbefore = sorted(os.listdir('.'))\nopen('left_behind.txt', 'w').write('x')\n"
    assert run_tests(code, ["assert before == []"], SandboxLimits(**FAST)).fraction == 1.0
    assert created and not any(os.path.exists(path) for path in created)


def test_a_sandbox_that_cannot_start_scores_zero_with_a_logged_reason(caplog):
    with caplog.at_level(logging.WARNING, logger="rlplug_rewards.code_exec"):
        rewards = code_exec([""], [GOOD], tests=[ADD_TESTS], isolation="process", python="/nonexistent/python3", **FAST)
    assert rewards == [0.0]
    assert any("unavailable" in record.getMessage() for record in caplog.records)
