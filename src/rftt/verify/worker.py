"""The verifier's worker process, started by `VerifierPool` as a plain subprocess over an inherited socket.

A fresh interpreter (not `multiprocessing`), so it works whatever the parent's main module
is: a script without a `__main__` guard, stdin, a notebook. It never outlives a dead
parent: on Linux the kernel kills it when the parent dies, and everywhere each comparison
runs under a CPU-time limit, so even an orphan stuck in one big-integer power (which holds
the GIL, so no Python-level watchdog could stop it) is ended by the kernel.
"""

from __future__ import annotations

import logging
import math
import resource
import sys
from multiprocessing.connection import Connection

from rftt.verify.judgement import Comparison, Verdict, full_verdict
from rftt.workers import die_with_parent, serve_tasks

_CPU_SLACK_SECONDS = 1


def command(socket_fd: int, timeout: float) -> list[str]:
    """The command line that starts a worker on an inherited socket."""
    return [sys.executable, "-c", "from rftt.verify.worker import main; main()", str(socket_fd), str(timeout)]


def _limit_cpu_for_next_task(timeout: float) -> None:
    """Let the next comparison use at most `timeout` (+ slack) more CPU seconds; SIGXCPU ends it after."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    budget = int(usage.ru_utime + usage.ru_stime) + math.ceil(timeout) + _CPU_SLACK_SECONDS
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    resource.setrlimit(resource.RLIMIT_CPU, (budget if hard == resource.RLIM_INFINITY else min(budget, hard), hard))


def compare(comparison: Comparison, timeout: float) -> Verdict | None:
    """One judgement under a CPU-time limit; None when the comparison itself fails."""
    _limit_cpu_for_next_task(timeout)
    try:
        return full_verdict(comparison)
    except Exception:  # math-verify and sympy raise many kinds of errors on odd input
        return None


def main() -> None:
    die_with_parent()
    import math_verify  # noqa: F401  (imported before announcing readiness, so no task pays for it)

    # The pool bounds every comparison itself, so math-verify's "timeout is disabled" warning is noise.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    timeout = float(sys.argv[2])
    serve_tasks(Connection(int(sys.argv[1])), lambda payload: compare(payload, timeout))
