"""The code that runs first inside a sandboxed child, before any untrusted code.

The parent passes this file's source to ``python -I -S -c`` and the job as JSON on stdin.
It is self-contained (standard library only, Python 3.8+) because the child may run an
interpreter other than the parent's. In order, it:

1. reads the job, then sets resource limits (CPU, address space, file size, open files,
   processes, no core dumps);
2. applies a Landlock ruleset when the kernel has one: reads only from the interpreter's
   files and a few system paths, writes only under the working directory, no ``execve``,
   and (Landlock ABI >= 4) no TCP bind/connect;
3. installs an audit hook that refuses socket creation and use, ctypes, ``exec`` and
   process spawning (Python-level: native code could bypass it, which is why the
   namespace and Landlock layers come first);
4. runs the solution, then each test, each under a per-test alarm, with stdout/stderr
   swallowed; prints one result line ``RLPLUG_SANDBOX_RESULT {json}`` and exits.
"""

import ctypes
import json
import os
import resource
import signal
import sys

RESULT_MARKER = "RLPLUG_SANDBOX_RESULT "
EXIT_OUTPUT_LIMIT = 120  # the result line could not be written: the output file hit RLIMIT_FSIZE

# Landlock (linux/landlock.h). Syscall numbers 444-446 are the same on every architecture.
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1, 2, 4, 8
_FS_V1_ALL = (1 << 13) - 1
_FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 2
_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV

_BLOCKED_EVENT_PREFIXES = (
    "socket.", "ctypes.", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen",
    "os.startfile", "sys.addaudithook", "_posixsubprocess",
)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def set_limits(job):
    limits = [
        (resource.RLIMIT_CPU, job["cpu_seconds"], job["cpu_seconds"] + 1),
        (resource.RLIMIT_AS, job["memory_bytes"], job["memory_bytes"]),
        (resource.RLIMIT_FSIZE, job["file_size_bytes"], job["file_size_bytes"]),
        (resource.RLIMIT_NOFILE, job["open_files"], job["open_files"]),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    if job.get("max_processes") is not None:
        limits.append((resource.RLIMIT_NPROC, job["max_processes"], job["max_processes"]))
    for which, soft, hard in limits:
        resource.setrlimit(which, (soft, hard))


def _landlock_abi(libc):
    abi = libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return abi if abi > 0 else 0


def _add_path_rule(libc, ruleset_fd, path, access, fs_mask):
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not os.path.isdir(path):
            access &= _FILE_RIGHTS
        rule = _PathBeneathAttr(access & fs_mask, fd)
        if libc.syscall(_SYS_ADD_RULE, ruleset_fd, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_add_rule failed for " + path)
    finally:
        os.close(fd)


def apply_landlock(workdir, read_paths):
    """Restrict this process and its children; returns the Landlock ABI used (0: none)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = _landlock_abi(libc)
    if abi == 0:
        return 0
    fs_mask = _FS_V1_ALL
    if abi >= 2:
        fs_mask |= _FS_REFER
    if abi >= 3:
        fs_mask |= _FS_TRUNCATE
    if abi >= 5:
        fs_mask |= _FS_IOCTL_DEV
    attr = _RulesetAttr(fs_mask, 0, 0)
    size = 8
    if abi >= 4:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
        size = 24
    ruleset_fd = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset_fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for path in read_paths:
            _add_path_rule(libc, ruleset_fd, path, _FS_READ_FILE | _FS_READ_DIR, fs_mask)
        for path in ("/dev/null", "/dev/zero"):
            _add_path_rule(libc, ruleset_fd, path, _FS_READ_FILE | _FS_WRITE_FILE, fs_mask)
        _add_path_rule(libc, ruleset_fd, workdir, fs_mask & ~_FS_EXECUTE, fs_mask)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(_SYS_RESTRICT_SELF, ruleset_fd, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset_fd)
    return abi


def _refuse_blocked_events(event, args):
    if event.startswith(_BLOCKED_EVENT_PREFIXES):
        raise PermissionError("blocked in the sandbox: " + event)


class _Sink:
    """A text stream that keeps nothing: the untrusted code's prints go nowhere."""

    def write(self, text):
        return len(text)

    def flush(self):
        pass


class _TestTimeout(BaseException):
    pass


def _on_alarm(signum, frame):
    raise _TestTimeout()


def _run_with_alarm(code, namespace, seconds):
    """None when ``code`` ran, else the name of what stopped it."""
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        exec(code, namespace)
        return None
    except _TestTimeout:
        return "timeout"
    except BaseException as exc:  # SystemExit counts as a failure too
        return type(exc).__name__
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def run_job(job):
    namespace = {"__name__": "__solution__"}
    solution_error = None
    try:
        solution = compile(job["solution"], "<solution>", "exec")
    except BaseException as exc:
        solution_error = type(exc).__name__
    if solution_error is None:
        solution_error = _run_with_alarm(solution, namespace, job["test_timeout"])
    results = []
    for index, test in enumerate(job["tests"]):
        if solution_error is not None:
            results.append("solution: " + solution_error)
            continue
        try:
            code = compile(test, "<test %d>" % index, "exec")
        except BaseException as exc:
            results.append("test does not compile: " + type(exc).__name__)
            continue
        results.append(_run_with_alarm(code, namespace, job["test_timeout"]))
    return results


def main():
    job = json.loads(sys.stdin.read())
    set_limits(job)
    read_paths = job["read_paths"] + [sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix]
    landlock_abi = apply_landlock(job["workdir"], read_paths) if job["landlock"] else 0
    if job["landlock"] == "required" and landlock_abi == 0:
        raise RuntimeError("Landlock is required but this kernel has none")
    if job.get("audit_hook", True):
        sys.addaudithook(_refuse_blocked_events)
    signal.signal(signal.SIGALRM, _on_alarm)
    stdout = sys.stdout
    sys.stdout = sys.stderr = _Sink()
    results = run_job(job)
    try:
        stdout.write("\n" + RESULT_MARKER + json.dumps({"results": results, "landlock_abi": landlock_abi}) + "\n")
        stdout.flush()
    except OSError:
        os._exit(EXIT_OUTPUT_LIMIT)
    os._exit(0)


if __name__ == "__main__":
    main()
