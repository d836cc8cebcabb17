"""Run model-written Python programs safely: `ProgramExecutor.run_many(programs)`.

Each program runs in its own freshly forked process (from a warm worker that has the
allowed libraries imported; workers start with only the interpreter's environment variables),
locked down by `rftt.verify.sandbox_child`: no file or directory opened at all (no reads either),
an empty environment, no sockets (and no network at all where the kernel grants a network namespace), no
subprocesses, no inherited descriptors, refused by a seccomp filter in the kernel and by an
audit hook in Python, an import allow-list, and limits on wall-clock time, CPU time, memory,
processes, printed output and the returned value. The throw-away directory and every process
are gone when a result comes back. Results carry a value, or a reason: timeout, memory,
output_limit, forbidden, no_value, error. Each result also says which isolation layers applied.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import shutil
import signal
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Sequence

from rftt.verify.sandbox_child import ALLOWED_IMPORTS
from rftt.workers import WorkerPool, die_with_parent, serve_tasks

DEFAULT_TIMEOUT_SECONDS = 5.0
DEFAULT_MEMORY_BYTES = 512 * 2**20
DEFAULT_OUTPUT_BYTES = 64 * 2**10
_WORKER_MARGIN_SECONDS = 5.0
_RESULT_OVERHEAD_BYTES = 4096
OUTPUT_FILE = "stdout.txt"
SYMPY_WARM_UP = """
import sympy
x, n = sympy.symbols("x n")
sympy.solve(x**2 - 4, x); sympy.solveset(x**2 - 4, x); sympy.nsolve(x**2 - 2, x, 1); sympy.linsolve([x - 1], [x])
sympy.integrate(sympy.sin(x), (x, 0, 1)); sympy.diff(sympy.exp(x) * x, x); sympy.limit(sympy.sin(x) / x, x, 0)
sympy.series(sympy.cos(x), x, 0, 4); sympy.summation(n**2, (n, 1, 10)); sympy.product(n, (n, 1, 5))
sympy.simplify(sympy.sin(x)**2 + sympy.cos(x)**2); sympy.factor(x**2 - 1); sympy.expand((x + 1)**3)
sympy.nsimplify(0.5); sympy.Rational(1, 3) + 1; sympy.N(sympy.pi, 20); sympy.sqrt(8); sympy.log(8, 2)
sympy.Matrix([[1, 2], [3, 4]]).det(); sympy.Matrix([[1, 2], [3, 4]]).inv(); sympy.factorint(360); sympy.isprime(97)
sympy.primerange(1, 20); sympy.binomial(5, 2); sympy.gcd(12, 18); sympy.lcm(4, 6); sympy.divisors(12)
sympy.Poly(x**2 + 1, x).all_coeffs(); sympy.apart(1 / (x**2 - 1)); sympy.trigsimp(sympy.sin(x) * sympy.cos(x))
sympy.Eq(x, 1); sympy.Piecewise((x, x > 0), (0, True)); sympy.floor(2.5); sympy.Abs(-x); sympy.latex(x)
"""
"""sympy calls run once in each worker before any program: what they import on first use is then loaded."""
INTERPRETER_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "LANG", "LC_ALL", "LC_CTYPE")
"""The only environment variables a sandbox worker starts with: what the interpreter needs to start and import."""


@dataclass(frozen=True)
class SandboxLimits:
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    output_bytes: int = DEFAULT_OUTPUT_BYTES


@dataclass(frozen=True)
class ExecutionResult:
    """What a program returned (`value`, as text) or why it did not: timeout, memory, output_limit,
    forbidden, no_value (it returned None) or error (with `message`)."""

    ok: bool
    value: str | None = None
    reason: str = "ok"
    message: str = ""
    stdout: str = ""
    isolation: dict[str, bool] = field(default_factory=dict)


def _virtual_memory_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _signal_reason(number: int) -> tuple[str, str]:
    if number == signal.SIGXCPU:
        return "timeout", "the program used up its CPU time"
    if number == signal.SIGXFSZ:
        return "output_limit", "the program printed more than the output limit"
    if number in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT):
        return "memory", f"the program was killed by signal {signal.Signals(number).name} (likely out of memory)"
    return "error", f"the program was killed by signal {signal.Signals(number).name}"


def execute(payload: dict[str, Any], base: str) -> dict[str, Any]:
    """Worker side: fork, lock down and run one program; wait for it under the wall clock; clean up."""
    from rftt.verify import sandbox_child

    workdir = tempfile.mkdtemp(prefix="program-", dir=base)
    output_fd = os.open(os.path.join(workdir, OUTPUT_FILE), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    read_end, write_end = os.pipe()
    limits = {"memory_bytes": _virtual_memory_bytes() + payload["memory_bytes"],
              "cpu_seconds": max(1, int(payload["timeout_seconds"]) + 1), "output_bytes": payload["output_bytes"]}
    child = os.fork()
    if child == 0:
        os.close(read_end)
        os.setsid()
        sandbox_child.run(payload["code"], payload["entry"], workdir, limits, write_end, output_fd)
    os.close(write_end)
    try:
        deadline = time.monotonic() + payload["timeout_seconds"]
        received = _read_until(read_end, deadline, payload["output_bytes"] + _RESULT_OVERHEAD_BYTES)
        try:
            os.killpg(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status = os.waitpid(child, 0)
        result = _result(received, status, time.monotonic() >= deadline, payload)
        result["stdout"] = os.pread(output_fd, payload["output_bytes"], 0).decode("utf-8", errors="replace")
        return result  # printed output read through the worker's own descriptor: the name may point elsewhere
    finally:
        os.close(read_end)
        os.close(output_fd)
        shutil.rmtree(workdir, ignore_errors=True)


def _read_until(descriptor: int, deadline: float, limit: int) -> bytes | None:
    """What the child writes to its result pipe before it closes it or the deadline passes; None past `limit`."""
    chunks, size = [], 0
    while size <= limit:
        ready, _, _ = select.select([descriptor], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(descriptor, 65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks) if size <= limit else None


def _result(received: bytes | None, status: int, past_deadline: bool, payload: dict[str, Any]) -> dict[str, Any]:
    """The child's own result when it wrote a well-formed one, else the reason read from how it ended."""
    if received is None:
        return {"ok": False, "reason": "output_limit", "message": "the program wrote more than a result to its pipe"}
    if received:
        try:
            result = json.loads(received)
        except Exception:  # whatever the program wrote: bad JSON, or JSON nested too deep to parse
            result = None
        if isinstance(result, dict) and isinstance(result.get("ok"), bool) and isinstance(result.get("value", ""), str):
            return result
        return {"ok": False, "reason": "error", "message": "the program wrote a malformed result to its pipe"}
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) != signal.SIGKILL:
        reason, message = _signal_reason(os.WTERMSIG(status))
        return {"ok": False, "reason": reason, "message": message}
    if past_deadline:
        return {"ok": False, "reason": "timeout", "message": f"no result within {payload['timeout_seconds']} s"}
    return {"ok": False, "reason": "error", "message": f"the program ended without a result (status {status})"}


def _warm_up_libraries() -> None:
    """Run sympy's common operations once, so that the parts it imports on first use (its `solve` imports
    `sympy.tensor`) are loaded before the filter refuses every file open."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            exec(SYMPY_WARM_UP, {})
        except Exception:  # sympy missing or changed: programs that need the part will say `forbidden`
            pass


def worker_main() -> None:
    """A warm worker: allowed libraries imported once, every program forked from here."""
    die_with_parent()
    for module in sorted(ALLOWED_IMPORTS):  # before the lock: the filter refuses every file open, imports' too
        try:
            __import__(module)
        except ImportError:
            pass
    _warm_up_libraries()
    base = sys.argv[2]
    serve_tasks(Connection(int(sys.argv[1])), lambda payload: execute(payload, base))


class ProgramExecutor:
    """A pool of sandbox workers; keeps its throughput when programs hang, crash or misbehave."""

    def __init__(self, workers: int | None = None, limits: SandboxLimits = SandboxLimits()):
        self.limits = limits
        self.warned = False
        self.base = tempfile.mkdtemp(prefix="rftt-sandbox-")
        os.chmod(self.base, 0o711)
        command = [sys.executable, "-c", "from rftt.verify.sandbox import worker_main; worker_main()"]
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        environment = {name: os.environ[name] for name in INTERPRETER_VARIABLES if name in os.environ}
        self.pool = WorkerPool(lambda socket_fd: [*command, str(socket_fd), self.base], self.workers, "sandbox",
                               environment)

    def __enter__(self) -> "ProgramExecutor":
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()

    def run_many(self, programs: Sequence[str], entry: str = "solution") -> list[ExecutionResult]:
        """Run each program and call its `entry()`; one result per program, in order."""
        payloads = [{"code": code, "entry": entry, "timeout_seconds": self.limits.timeout_seconds,
                     "memory_bytes": self.limits.memory_bytes, "output_bytes": self.limits.output_bytes}
                    for code in programs]
        results = []
        for task in self.pool.run(payloads, self.limits.timeout_seconds + _WORKER_MARGIN_SECONDS):
            if task.status == "done" and not task.value.get("isolation", {}).get("no_file_opens", True):
                self._warn_once("this kernel or machine refuses no file opens to sandboxed programs (no seccomp "
                                "filter): they can read what the worker's user can read; run them in a container")
            if task.status == "done":
                value = task.value
                results.append(ExecutionResult(value.get("ok", False), value.get("value"), value.get("reason", "ok"),
                                               value.get("message", ""), value.get("stdout", ""),
                                               value.get("isolation", {})))
            else:
                results.append(ExecutionResult(False, None, "timeout" if task.status == "timeout" else "error",
                                               f"the sandbox worker {task.status}"))
        return results

    def _warn_once(self, message: str) -> None:
        if not self.warned:
            print(f"sandbox: {message}", file=sys.stderr)
            self.warned = True

    def run(self, program: str, entry: str = "solution") -> ExecutionResult:
        return self.run_many([program], entry)[0]

    def close(self) -> None:
        self.pool.close()
        shutil.rmtree(self.base, ignore_errors=True)
