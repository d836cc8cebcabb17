"""The sandboxed side of program execution: runs inside a freshly forked child, locks it down, runs the program.

Layers, strongest available first (what was applied is reported with every result):
- a private network namespace (no network at all) when the kernel lets us create one;
- an unprivileged user (`nobody`) when started as root, so writes outside the throw-away
  directory fail and a process-count limit holds (root ignores RLIMIT_NPROC);
- resource limits: address space, CPU seconds, file size (which also caps printed output),
  open files, processes, no core dumps;
- inside Python, an audit hook that refuses to open files outside the throw-away directory,
  sockets, subprocesses, forks, exec, ctypes and imports outside the allow-list.
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

ALLOWED_IMPORTS = frozenset({
    "math", "cmath", "fractions", "decimal", "numbers", "statistics", "itertools", "functools", "operator",
    "collections", "heapq", "bisect", "random", "string", "re", "datetime", "copy", "sympy", "numpy",
})
_CLONE_NEWNET = 0x40000000
_FORBIDDEN_EVENT_PREFIXES = ("socket.", "subprocess.", "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn",
                             "os.spawn", "os.kill", "os.putenv", "os.chmod", "os.chown", "os.remove", "os.rename",
                             "os.rmdir", "os.symlink", "os.link", "os.mkdir", "os.truncate", "shutil.", "ctypes.",
                             "pty.", "sys._getframe", "webbrowser.", "urllib.", "ftplib.", "http.", "smtplib.")


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


def _limit(limits: dict[str, int]) -> None:
    for name, value in (("RLIMIT_AS", limits["memory_bytes"]), ("RLIMIT_CPU", limits["cpu_seconds"]),
                        ("RLIMIT_FSIZE", limits["output_bytes"]), ("RLIMIT_NOFILE", 32), ("RLIMIT_CORE", 0),
                        ("RLIMIT_NPROC", 1)):
        resource.setrlimit(getattr(resource, name), (value, value))


def _audit(workdir: str):
    root = os.path.realpath(workdir)

    def hook(event: str, arguments: tuple) -> None:
        if event == "open":
            path, mode = arguments[0], arguments[1] if len(arguments) > 1 else "r"
            if isinstance(path, int):
                return
            writing = isinstance(mode, str) and any(flag in mode for flag in "wax+")
            writing = writing or (isinstance(arguments[2] if len(arguments) > 2 else None, int)
                                  and arguments[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing and not os.path.realpath(str(path)).startswith(root + os.sep):
                raise Forbidden(f"writing {path!r} outside the sandbox directory")
        elif event.startswith(_FORBIDDEN_EVENT_PREFIXES):
            raise Forbidden(f"{event} is not allowed")

    return hook


def _restricted_import(original):
    def restricted(name: str, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.split(".")[0] not in ALLOWED_IMPORTS:
            raise Forbidden(f"import of {name!r} is not allowed (allowed: {', '.join(sorted(ALLOWED_IMPORTS))})")
        return original(name, globals, locals, fromlist, level)

    return restricted


def _value_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def run(code: str, entry: str, workdir: str, limits: dict[str, int], result_fd: int) -> None:
    """Lock this (forked) process down, run `code`, call `entry()`, write the outcome as JSON to `result_fd`."""
    isolation = {"network_namespace": _new_network_namespace(), "unprivileged_user": False, "resource_limits": True,
                 "audit_hook": True, "import_allow_list": True}
    os.chdir(workdir)
    isolation["unprivileged_user"] = _drop_privileges(workdir)
    stdout = os.open(os.path.join(workdir, "stdout.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(stdout, 1)
    os.dup2(stdout, 2)
    _limit(limits)
    result: dict[str, Any] = {"isolation": isolation}
    try:
        namespace: dict[str, Any] = {"__name__": "__sandbox__", "__builtins__": dict(vars(builtins))}
        namespace["__builtins__"]["__import__"] = _restricted_import(builtins.__import__)
        sys.addaudithook(_audit(workdir))
        exec(compile(code, "<program>", "exec"), namespace)
        if entry not in namespace or not callable(namespace[entry]):
            raise NameError(f"the program defines no {entry}()")
        result.update(ok=True, value=_value_text(namespace[entry]()))
    except Forbidden as error:
        result.update(ok=False, reason="forbidden", message=str(error))
    except MemoryError:
        result.update(ok=False, reason="memory", message="the program ran out of its memory limit")
    except OSError as error:
        if error.errno == errno.EFBIG:
            result.update(ok=False, reason="output_limit", message="the program printed more than the output limit")
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
    os.write(result_fd, json.dumps(result).encode())
    os._exit(0)
