"""The sandboxed side of program execution: runs inside a freshly forked child, locks it down, runs the program.

Layers, strongest available first (what was applied is reported with every result):
- a private network namespace (no network at all) when the kernel lets us create one;
- an unprivileged user (`nobody`) when started as root, so a process-count limit holds
  (root ignores RLIMIT_NPROC) and the file system allows only what `nobody` may do;
- an empty environment (the worker started with only the interpreter's variables);
- no inherited file descriptors but stdin (/dev/null), the capped output file and the result pipe,
  and death with the worker that forked it;
- resource limits: address space, CPU seconds, file size (which also caps printed output),
  open files, processes, no core dumps;
- a seccomp filter (x86-64): the kernel refuses every open (reads too), file changes, sockets, fork,
  exec, signals and the rest listed in `rftt.verify.seccomp`, whatever the program does to
  the interpreter (the layer below is inside the program's reach);
- inside Python, an audit hook that refuses every file opened for writing, sockets, subprocesses,
  forks, exec, signals, ctypes, frame and garbage-collector walks; its state lives in its own
  closure, so a program that reaches this module cannot switch it off. The import allow-list
  keeps honest programs to the libraries they need; it is not a boundary (an allowed module
  can expose others, e.g. `random._os`), which is why the hook checks events, not names.
"""

from __future__ import annotations

import builtins
import ctypes
import errno
import json
import os
import pwd
import resource
import sys
from typing import Any

from rftt.verify.seccomp import install_filter
from rftt.workers import die_with_parent

ALLOWED_IMPORTS = frozenset({
    "math", "cmath", "fractions", "decimal", "numbers", "statistics", "itertools", "functools", "operator",
    "collections", "heapq", "bisect", "random", "string", "re", "datetime", "copy", "sympy", "numpy",
})
_CLONE_NEWNET = 0x40000000
_FORBIDDEN_EVENT_PREFIXES = ("socket.", "subprocess.", "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn",
                             "os.spawn", "os.kill", "os.putenv", "os.unsetenv", "os.chmod", "os.lchmod", "os.chown",
                             "os.lchown", "os.chflags", "os.lchflags", "os.remove", "os.rename", "os.rmdir", "os.symlink",
                             "os.link", "os.mkdir", "os.mkfifo", "os.mknod", "os.truncate", "os.utime", "os.setxattr",
                             "os.removexattr", "shutil.", "ctypes.", "pty.", "signal.", "gc.", "sys._getframe",
                             "sys._current_frames", "sys.settrace", "sys.setprofile", "code.__new__", "webbrowser.",
                             "urllib.", "ftplib.", "http.", "smtplib.")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
"""Open flags that write (or create or truncate): the audit hook refuses them with a clear message (below it, the
seccomp filter refuses every open)."""
RESULT_FD = 3
"""The result pipe's descriptor in the child; every descriptor above it is closed."""


class Forbidden(Exception):
    """The program tried something the sandbox does not allow."""


def _new_network_namespace() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.unshare(_CLONE_NEWNET) == 0
    except OSError:
        return False


def _drop_privileges(workdir: str) -> bool:
    if os.geteuid() != 0:
        return False
    nobody = pwd.getpwnam("nobody")
    os.chown(workdir, nobody.pw_uid, nobody.pw_gid)
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
    return True


def _empty_environment() -> bool:
    """Forget every environment variable: the mapping `os` reads and the interpreter's own copy of it."""
    import posix

    os.environ.clear()  # unsets each in the C library's environment as well
    posix.environ.clear()
    return not os.environ and not posix.environ


def _limit(limits: dict[str, int]) -> None:
    for name, value in (("RLIMIT_AS", limits["memory_bytes"]), ("RLIMIT_CPU", limits["cpu_seconds"]),
                        ("RLIMIT_FSIZE", limits["output_bytes"]), ("RLIMIT_NOFILE", 32), ("RLIMIT_CORE", 0),
                        ("RLIMIT_NPROC", 1)):
        resource.setrlimit(getattr(resource, name), (value, value))


def _audit(prefixes: tuple[str, ...] = _FORBIDDEN_EVENT_PREFIXES, write_flags: int = WRITE_FLAGS,
           forbidden: type[Exception] = Forbidden, str_type: type = str, int_type: type = int, type_of: type = type,
           length=len):
    """The audit hook. Everything it reads, builtins included, is bound here, so patching this module's
    globals or the builtins module cannot change it, and it never calls the program's objects."""

    def hook(event: str, arguments: tuple) -> None:
        if event == "open":
            mode = arguments[1] if length(arguments) > 1 else None
            flags = arguments[2] if length(arguments) > 2 else 0
            if type_of(mode) is str_type:
                writing = "w" in mode or "a" in mode or "x" in mode or "+" in mode
            else:
                writing = mode is not None
            if writing or (type_of(flags) is int_type and flags & write_flags) or type_of(flags) is not int_type:
                raise forbidden("opening a file for writing is not allowed")
        elif event.startswith(prefixes):
            raise forbidden(f"{event} is not allowed")

    return hook


def _restricted_import(original):
    def restricted(name: str, globals=None, locals=None, fromlist=(), level=0):
        if level != 0:
            raise Forbidden("relative imports are not allowed")
        if name.split(".")[0] not in ALLOWED_IMPORTS:
            raise Forbidden(f"import of {name!r} is not allowed (allowed: {', '.join(sorted(ALLOWED_IMPORTS))})")
        return original(name, globals, locals, fromlist, level)

    return restricted


def _keep_only_sandbox_descriptors(result_fd: int, output_fd: int) -> None:
    """stdin from /dev/null, stdout and stderr to the capped output file (opened by the worker), the result
    pipe at RESULT_FD, every other descriptor (the worker's socket to the pool among them) closed."""
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.dup2(result_fd, RESULT_FD)
    os.closerange(RESULT_FD + 1, os.sysconf("SC_OPEN_MAX"))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    if null not in (0, 1, 2, RESULT_FD):
        os.close(null)


def _value_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _outcome(value: Any, limit: int) -> dict[str, Any]:
    """The returned value as a result: none, too long, or its text."""
    if value is None:
        return {"ok": False, "reason": "no_value", "message": "solution() returned None"}
    text = _value_text(value)
    if len(text) > limit:
        return {"ok": False, "reason": "output_limit", "message": f"the returned value has {len(text)} characters"}
    return {"ok": True, "value": text}


def run(code: str, entry: str, workdir: str, limits: dict[str, int], result_fd: int, output_fd: int) -> None:
    """Lock this (forked) process down, run `code`, call `entry()`, write the outcome as JSON to `result_fd`
    (printed output goes to `output_fd`)."""
    isolation = {"network_namespace": _new_network_namespace(), "unprivileged_user": False, "resource_limits": True,
                 "seccomp": False, "no_file_opens": False, "empty_environment": _empty_environment(),
                 "audit_hook": True, "import_allow_list": True}
    os.chdir(workdir)
    _keep_only_sandbox_descriptors(result_fd, output_fd)
    isolation["unprivileged_user"] = _drop_privileges(workdir)
    die_with_parent()  # after the user change, which clears the parent-death signal
    _limit(limits)
    isolation["seccomp"] = isolation["no_file_opens"] = install_filter()  # last: it refuses calls made above
    result: dict[str, Any] = {"isolation": isolation}
    try:
        namespace: dict[str, Any] = {"__name__": "__sandbox__", "__builtins__": dict(vars(builtins))}
        namespace["__builtins__"]["__import__"] = _restricted_import(builtins.__import__)
        sys.addaudithook(_audit())
        exec(compile(code, "<program>", "exec"), namespace)
        if entry not in namespace or not callable(namespace[entry]):
            raise NameError(f"the program defines no {entry}()")
        result.update(_outcome(namespace[entry](), limits["output_bytes"]))
    except Forbidden as error:
        result.update(ok=False, reason="forbidden", message=str(error))
    except MemoryError:
        result.update(ok=False, reason="memory", message="the program ran out of its memory limit")
    except OSError as error:
        if error.errno == errno.EFBIG:
            result.update(ok=False, reason="output_limit", message="the program printed more than the output limit")
        elif error.errno == errno.EPERM:
            result.update(ok=False, reason="forbidden", message=f"the kernel refused a call: {error}"[:500])
        else:
            result.update(ok=False, reason="error", message=f"OSError: {error}"[:500])
    except RecursionError as error:
        result.update(ok=False, reason="error", message=f"RecursionError: {error}")
    except BaseException as error:  # the program's own failure, whatever it is
        result.update(ok=False, reason="error", message=f"{type(error).__name__}: {error}"[:500])
    try:
        sys.stdout.flush()
    except OSError:
        pass
    os.write(RESULT_FD, json.dumps(result).encode())
    os._exit(0)
