"""Run untrusted Python against test snippets in a separate, confined process.

This is a security boundary. The layers, outermost first, and what each one relies on:

- **Namespaces** (``isolation="namespace"``, chosen by ``"auto"`` when a probe succeeds):
  the child runs under ``unshare --net --pid --fork --kill-child``. A new network
  namespace has only a loopback interface that is down, so no connection can leave it
  (kernel-enforced; even the host's loopback is unreachable). A new PID namespace ties
  every descendant to the child: when it dies the kernel kills them all. Root uses
  ``--setuid/--setgid`` to drop to ``sandbox_user``; other users add ``--user
  --map-root-user``, which needs unprivileged user namespaces.
- **Process** (always): a new session (``start_new_session``) whose process group is
  SIGKILLed on timeout and after every run; an explicit minimal environment (nothing
  inherited); a fresh temporary working directory, removed afterwards; ``python -I -S``
  (no PYTHON* variables, no site-packages); stdout/stderr to files capped by RLIMIT_FSIZE;
  RLIMIT_CPU, RLIMIT_AS, RLIMIT_NOFILE, RLIMIT_CORE=0; RLIMIT_NPROC against fork bombs.
  RLIMIT_NPROC is not enforced for root, so as root the child always runs as
  ``sandbox_user`` (default ``nobody``) and the limit counts that user's processes
  (shared by concurrent sandboxes). Without namespaces, descendants that leave the
  process group (``setsid``) can outlive the timeout until RLIMIT_CPU stops them.
- **Landlock** (Linux >= 5.13 with the LSM on; ``landlock="auto"`` uses it when present):
  reads only from the interpreter's prefix, ``/usr``, ``/lib*`` and a few system files;
  writes only under the working directory; no ``execve``; with ABI >= 4 no TCP
  bind/connect; with ABI >= 6 no signals or abstract-socket connections out of the
  sandbox. This confines writes and keeps ``/proc/*/environ`` and home directories
  unreadable even when the child runs as the same user as the trainer.
- **Audit hook** (always, Python-level): socket creation and use, ctypes, exec and
  process spawning raise PermissionError. Native code could get around it, so it is
  the only network barrier only when neither namespaces nor Landlock ABI >= 4 exist;
  :func:`isolation_report` says which layers are active.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from rlplug_rewards._sandbox_child import EXIT_OUTPUT_LIMIT, RESULT_MARKER

logger = logging.getLogger(__name__)

_CHILD_SOURCE = Path(__file__).with_name("_sandbox_child.py").read_text()
_SYSTEM_READ_PATHS = ("/usr", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache", "/etc/localtime", "/dev/urandom")
_ISOLATION_MODES = ("auto", "namespace", "process")
_LANDLOCK_MODES = ("auto", "required", "off")


class SandboxUnavailable(RuntimeError):
    """No way to start a confined child was found."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one child. ``timeout`` is the wall clock for the whole child."""

    timeout: float = 10.0
    test_timeout: float = 2.0
    cpu_seconds: int = 10
    memory_mb: int = 512
    max_processes: int = 32
    output_bytes: int = 1 << 16
    open_files: int = 64

    def __post_init__(self) -> None:
        for name in ("timeout", "test_timeout", "cpu_seconds", "memory_mb", "max_processes", "output_bytes", "open_files"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sandbox limit {name} must be > 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class SandboxResult:
    """One run: per-test outcome (None = passed, else why it failed) and the run's status.

    ``status`` is ``ok`` (the child reported), ``timeout``, ``crashed`` (died before
    reporting), ``no_result`` or ``unavailable`` (the sandbox could not start).
    """

    outcomes: tuple[str | None, ...]
    status: str
    reason: str = ""
    landlock_abi: int = 0

    @property
    def passed(self) -> int:
        return sum(outcome is None for outcome in self.outcomes) if self.status == "ok" else 0

    @property
    def fraction(self) -> float:
        return self.passed / len(self.outcomes) if self.outcomes and self.status == "ok" else 0.0


@dataclass(frozen=True)
class Launcher:
    """How children are started on this machine: found once by probing, then reused."""

    mode: str
    python: str
    prefix: tuple[str, ...] = ()
    user: int | None = None
    group: int | None = None
    landlock: str = "auto"
    notes: tuple[str, ...] = field(default=())


def _tasks_of_uid(uid: int) -> int:
    """Threads of every process whose real uid is ``uid`` (what RLIMIT_NPROC counts)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            total += int(fields.get("Threads", "1").strip())
    return total


def _describe_exit(returncode: int) -> str:
    if returncode >= 0:
        return f"exit status {returncode}"
    signum = -returncode
    meaning = {
        signal.SIGXCPU: "CPU time limit",
        signal.SIGXFSZ: "output/file size limit",
        signal.SIGKILL: "killed",
        signal.SIGSEGV: "segmentation fault",
    }.get(signum)
    name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
    return f"signal {name}" + (f" ({meaning})" if meaning else "")


def _wait_without_reaping(pid: int, timeout: float) -> bool:
    """True when ``pid`` exited within ``timeout``; it stays a zombie, so its group id is not reused."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.02)


def _launch(
    launcher: Launcher, limits: SandboxLimits, solution: str, tests: Sequence[str], *, audit_hook: bool = True
) -> SandboxResult:
    """Run one child. ``audit_hook=False`` exists only so tests can check the other layers alone."""
    workdir = tempfile.mkdtemp(prefix="rlplug-sandbox-")
    private = tempfile.mkdtemp(prefix="rlplug-sandbox-io-")
    try:
        if launcher.user is not None:
            os.chown(workdir, launcher.user, launcher.group)
        os.chmod(workdir, 0o700)
        max_processes = limits.max_processes
        if launcher.user is None:
            max_processes += _tasks_of_uid(os.getuid())
        job = {
            "solution": solution,
            "tests": list(tests),
            "workdir": workdir,
            "read_paths": list(_SYSTEM_READ_PATHS),
            "landlock": None if launcher.landlock == "off" else launcher.landlock,
            "test_timeout": limits.test_timeout,
            "cpu_seconds": int(limits.cpu_seconds),
            "memory_bytes": int(limits.memory_mb) << 20,
            "file_size_bytes": int(limits.output_bytes),
            "open_files": int(limits.open_files),
            "max_processes": int(max_processes),
            "audit_hook": audit_hook,
        }
        job_path, out_path, err_path = (Path(private, name) for name in ("job.json", "stdout", "stderr"))
        job_path.write_text(json.dumps(job))
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir, "PYTHONHASHSEED": "0"}
        command = [*launcher.prefix, launcher.python, "-I", "-S", "-c", _CHILD_SOURCE]
        user_kwargs = {}
        if launcher.mode == "process" and launcher.user is not None:
            user_kwargs = {"user": launcher.user, "group": launcher.group, "extra_groups": []}
        with open(job_path, "rb") as stdin, open(out_path, "wb") as stdout, open(err_path, "wb") as stderr:
            try:
                proc = subprocess.Popen(
                    command, stdin=stdin, stdout=stdout, stderr=stderr, cwd=workdir, env=env,
                    start_new_session=True, close_fds=True, **user_kwargs,
                )
            except OSError as exc:
                return SandboxResult((), "unavailable", f"could not start the sandbox: {exc}")
            try:
                finished = _wait_without_reaping(proc.pid, limits.timeout)
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        if not finished:
            return SandboxResult(
                tuple("timeout" for _ in tests), "timeout",
                f"timed out after {limits.timeout:g}s; the child's process group was killed",
            )
        return _read_result(out_path, err_path, proc.returncode, limits, len(tests))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)


def _read_result(out_path: Path, err_path: Path, returncode: int, limits: SandboxLimits, n_tests: int) -> SandboxResult:
    with open(out_path, "rb") as handle:
        output = handle.read(limits.output_bytes + 1).decode("utf-8", "replace")
    report = None
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_MARKER):
            try:
                report = json.loads(line[len(RESULT_MARKER):])
            except json.JSONDecodeError:
                report = None
            break
    failed = tuple("no result" for _ in range(n_tests))
    if report is None or returncode != 0:
        with open(err_path, "rb") as handle:
            tail = handle.read(4096).decode("utf-8", "replace").strip().splitlines()[-3:]
        status = "crashed" if returncode != 0 else "no_result"
        reason = f"the child ended with {_describe_exit(returncode)} without a result"
        if returncode == EXIT_OUTPUT_LIMIT:
            reason = f"the output exceeded the limit of {limits.output_bytes} bytes"
        if tail:
            reason += ": " + " | ".join(tail)
        return SandboxResult(failed, status, reason)
    outcomes = tuple(report.get("results", ()))
    if len(outcomes) != n_tests:
        return SandboxResult(failed, "no_result", f"the child reported {len(outcomes)} results for {n_tests} tests")
    return SandboxResult(outcomes, "ok", "", int(report.get("landlock_abi", 0)))


def _python_candidates(python: str | None) -> list[str]:
    if python is not None:
        return [python]
    found = [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3") or ""]
    return [path for path in dict.fromkeys(found) if path and os.path.exists(path)]


def _sandbox_ids(sandbox_user: str | int | None) -> tuple[int | None, int | None]:
    if os.geteuid() != 0:
        return None, None
    if sandbox_user is None:
        raise ValueError(
            "code_exec runs as root here, where RLIMIT_NPROC is not enforced: set sandbox_user "
            "(default 'nobody') to an unprivileged user"
        )
    entry = pwd.getpwuid(sandbox_user) if isinstance(sandbox_user, int) else pwd.getpwnam(sandbox_user)
    return entry.pw_uid, entry.pw_gid


def _namespace_prefix(user: int | None, group: int | None) -> tuple[str, ...]:
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    common = ("--net", "--pid", "--fork", "--kill-child")
    if user is None:
        return (unshare, "--user", "--map-root-user", *common)
    return (unshare, *common, "--setuid", str(user), "--setgid", str(group))


@functools.lru_cache(maxsize=None)
def find_launcher(
    isolation: str = "auto", python: str | None = None, sandbox_user: str | int | None = "nobody",
    landlock: str = "auto",
) -> Launcher:
    """Probe (once per argument set) how to start a confined child; raise SandboxUnavailable if none works."""
    if isolation not in _ISOLATION_MODES:
        raise ValueError(f"isolation must be one of {', '.join(_ISOLATION_MODES)}, got {isolation!r}")
    if landlock not in _LANDLOCK_MODES:
        raise ValueError(f"landlock must be one of {', '.join(_LANDLOCK_MODES)}, got {landlock!r}")
    user, group = _sandbox_ids(sandbox_user)
    modes = ["namespace", "process"] if isolation == "auto" else [isolation]
    failures = []
    probe_limits = SandboxLimits(timeout=30.0)
    for mode in modes:
        prefix = _namespace_prefix(user, group) if mode == "namespace" else ()
        for candidate in _python_candidates(python):
            launcher = Launcher(mode, candidate, prefix, user, group, landlock)
            result = _launch(launcher, probe_limits, "", ["assert True"])
            if result.status == "ok" and result.passed == 1:
                notes = [] if result.landlock_abi else ["no Landlock: writes and reads are confined only by the user id"]
                if mode == "process":
                    notes.append("no network namespace: the network is blocked by Landlock (TCP) and the audit hook")
                    if isolation == "auto":
                        logger.warning("code_exec sandbox runs without namespaces: %s", "; ".join(failures))
                return Launcher(mode, candidate, prefix, user, group, landlock, tuple(notes))
            failures.append(f"{mode} with {candidate}: {result.reason or result.status}")
    raise SandboxUnavailable("no sandbox could be started: " + "; ".join(failures))


def isolation_report(launcher: Launcher) -> str:
    """One line saying which isolation layers are active."""
    who = f"uid {launcher.user}" if launcher.user is not None else "the trainer's uid"
    text = f"{launcher.mode} isolation, python {launcher.python}, runs as {who}"
    return text + ("; " + "; ".join(launcher.notes) if launcher.notes else "")


def run_tests(
    solution: str, tests: Sequence[str], limits: SandboxLimits | None = None, *, isolation: str = "auto",
    python: str | None = None, sandbox_user: str | int | None = "nobody", landlock: str = "auto",
) -> SandboxResult:
    """Run ``solution`` then each test snippet in a confined child. Never raises for the child's behaviour."""
    try:
        launcher = find_launcher(isolation, python, sandbox_user, landlock)
    except SandboxUnavailable as exc:
        return SandboxResult(tuple("unavailable" for _ in tests), "unavailable", str(exc))
    return _launch(launcher, limits or SandboxLimits(), solution, tests)
