"""The program sandbox against hostile programs: each ends with the right reason, leaves nothing behind,
and the pool still answers correct programs afterwards."""

from __future__ import annotations

import os
import platform
import threading
import time

import pytest

from rftt.verify.judge import judge
from rftt.verify.programs import check_programs, extract_program
from rftt.verify.sandbox import ProgramExecutor, SandboxLimits

LIMITS = SandboxLimits(timeout_seconds=2.0, memory_bytes=256 * 2**20, output_bytes=16 * 2**10)

REACH = ("import collections\ndef solution():\n    modules = collections._sys.modules\n    os = modules['os']\n"
         "    real_import = modules['builtins'].__import__\n")
"""The start of a program that reaches `os`, `sys.modules` and the unrestricted import through an allowed module."""

HOSTILE = {
    "infinite_loop": ("def solution():\n    while True:\n        pass\n", "timeout"),
    "fork_bomb": ("import os\ndef solution():\n    while True:\n        os.fork()\n", "forbidden"),
    "fork_through_builtins": ("def solution():\n    __import__('os').fork()\n", "forbidden"),
    "huge_allocation": ("def solution():\n    block = bytearray(8 * 2**30)\n    return len(block)\n", "memory"),
    "write_file": ("def solution():\n    open('/tmp/rftt-sandbox-escape.txt', 'w').write('x')\n", "forbidden"),
    "open_socket": ("import socket\ndef solution():\n    socket.create_connection(('127.0.0.1', 9))\n", "forbidden"),
    "import_subprocess": ("import subprocess\ndef solution():\n    subprocess.run(['true'])\n", "forbidden"),
    "print_a_gigabyte": ("def solution():\n    for _ in range(10**6):\n        print('x' * 1000)\n", "output_limit"),
    "crash": ("def solution():\n    return 1 / 0\n", "error"),
    "no_entry": ("x = 1\n", "error"),
    "returns_nothing": ("def solution():\n    x = 1\n", "no_value"),
    "huge_return_value": ("def solution():\n    return 'x' * 10**7\n", "output_limit"),
    # An allowed module exposes the rest of the interpreter: the audit hook, not the import list, must stop these.
    "fork_through_an_allowed_module": (f"{REACH}    os.fork()\n", "forbidden"),
    "socket_through_an_allowed_module": (f"{REACH}    real_import('socket').socket().connect(('127.0.0.1', 9))\n",
                                         "forbidden"),
    "switch_off_the_audit_hook": (f"{REACH}    child = modules['rftt.verify.sandbox_child']\n"
                                  "    child._FORBIDDEN_EVENT_PREFIXES = ()\n    child.WRITE_FLAGS = 0\n"
                                  "    os.system('true')\n", "forbidden"),
    "patch_the_builtins_then_write": (f"{REACH}    real = modules['builtins']\n"
                                      "    real.any, real.len, real.isinstance = (lambda *a: False,) * 3\n"
                                      "    open('/tmp/rftt-sandbox-escape.txt', 'w').write('x')\n", "forbidden"),
    "write_with_a_bytes_path": ("def solution():\n    open(b'/tmp/rftt-sandbox-escape.txt', 'w').write('x')\n",
                                "forbidden"),
    "relative_import": ("__package__ = 'os'\nfrom . import system\ndef solution():\n    return 1\n", "forbidden"),
    "walk_the_garbage_collector": (f"{REACH}    real_import('gc').get_objects()\n", "forbidden"),
    "forge_the_result_pipe": (f"{REACH}    os.write(3, b'not json')\n    return 1\n", "error"),
    "result_nested_too_deep": (f"{REACH}    os.write(3, b'[' * 20000)\n    os._exit(0)\n", "error"),
}


@pytest.fixture(scope="module")
def executor():
    with ProgramExecutor(workers=2, limits=LIMITS) as pool:
        pool.run("def solution():\n    return 1\n")
        yield pool


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, parent, ...), or None once it is gone."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _processes(keep) -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and keep(entry)]


def _processes_of(uid: int) -> list[int]:
    def owned(entry: str) -> bool:
        try:
            return os.stat(f"/proc/{entry}").st_uid == uid
        except FileNotFoundError:
            return False

    return _processes(owned)


def _children_of(pid: int) -> list[int]:
    return _processes(lambda entry: (fields := _stat_fields(entry)) is not None and int(fields[1]) == pid)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_ends_with_the_right_reason_and_leaves_nothing(executor, name):
    code, reason = HOSTILE[name]
    started = time.monotonic()
    result = executor.run(code)
    assert (result.ok, result.reason) == (False, reason), result
    assert time.monotonic() - started < LIMITS.timeout_seconds + 3
    assert os.listdir(executor.base) == []
    assert not os.path.exists("/tmp/rftt-sandbox-escape.txt")
    if os.geteuid() == 0:
        import pwd

        assert _processes_of(pwd.getpwnam("nobody").pw_uid) == []
    assert len(result.stdout) <= LIMITS.output_bytes


def test_the_pool_still_answers_correct_programs_afterwards(executor):
    programs = [f"import math\ndef solution():\n    return math.factorial({n}) // 2\n" for n in range(3, 11)]
    results = executor.run_many(programs + [HOSTILE["infinite_loop"][0]] + programs)
    values = [result.value for result in results]
    expected = [str(__import__("math").factorial(n) // 2) for n in range(3, 11)]
    assert values[:8] == expected and values[9:] == expected and results[8].reason == "timeout"


def test_results_say_which_isolation_applied(executor):
    result = executor.run("from fractions import Fraction\ndef solution():\n    return Fraction(3, 4) * 2\n")
    assert result.ok and result.value == "3/2"
    assert result.isolation["resource_limits"] and result.isolation["audit_hook"]
    if os.geteuid() == 0:
        assert result.isolation["unprivileged_user"]


def test_program_answers_are_checked_against_the_gold(executor):
    completions = [
        "Let me write code.\n```python\ndef solution():\n    apples = 29 * 7\n    return apples\n```",
        "def solution():\n    return 203.0\n",
        "def solution():\n    return 202\n",
        "I cannot write a program for this.",
    ]
    outcomes, executions = check_programs(completions, ["203", "203", "203", "203"], executor)
    assert [outcome.correct for outcome in outcomes] == [True, True, False, False]
    assert executions[3] is None and outcomes[3].reason == "no_answer"


def test_judge_runs_program_answers_and_states_text_answers():
    programs = ["def solution():\n    return 0.3333 / 2\n", "def solution():\n    return 0.3333 / 3\n"]
    assert [outcome.correct for outcome in judge(programs, ["0.165", "0.165"], answer_format="program")] == [False, False]
    outcomes = judge(programs, ["0.165", "0.165"], answer_format="program", absolute_tolerance=1e-2)
    assert [outcome.correct for outcome in outcomes] == [True, False] and outcomes[0].extracted == "0.16665"
    assert [outcome.correct for outcome in judge(["The answer is 7.", "so 8"], ["7", "7"], answer_format="text")] == [True, False]


ESCAPE = "/tmp/rftt-sandbox-escape.txt"
RAW_MEMORY = (f"{REACH}    np = modules['numpy']\n    child = modules['rftt.verify.sandbox_child']\n"
              "    class View:\n        pass\n"
              "    def poke(address, value):\n        view = View()\n"
              "        view.__array_interface__ = {'shape': (1,), 'typestr': '<i8', 'data': (address, False),"
              " 'version': 3}\n        np.asarray(view)[0] = value\n"
              "    poke(id(child._FORBIDDEN_EVENT_PREFIXES) + 16, 0)\n    poke(id(child.WRITE_FLAGS) + 24, 0)\n")
"""Raw memory writes through numpy's array interface (no audit event) empty the hook's refused events and
write flags: past this point only the kernel's seccomp filter stands in the way."""


needs_seccomp = pytest.mark.skipif(platform.machine() != "x86_64", reason="the seccomp filter covers x86-64 only")


@needs_seccomp
@pytest.mark.parametrize("attempt", [
    f"os.close(os.open({ESCAPE!r}, os.O_WRONLY | os.O_CREAT, 0o600))",
    "modules['_socket'].socket()",
    "os.kill(os.getppid(), 0)",
    f"os.mkfifo({ESCAPE!r})",
    "fcntl = modules['fcntl']\n    fcntl.fcntl(os.pipe()[0], fcntl.F_SETOWN, os.getppid())",  # SIGIO to another
    "os.sched_setaffinity(os.getppid(), {0})",
    "modules['fcntl'].flock(0, 2)",
    f"libc = modules['ctypes'].CDLL(None, use_errno=True)\n    if libc.syscall(452, -100, {ESCAPE!r}.encode(), 0o777, 0):"
    "\n        raise OSError(modules['ctypes'].get_errno(), 'fchmodat2')",  # a call newer than the filter
    "libc = modules['ctypes'].CDLL(None, use_errno=True)\n    if libc.prctl(1, 0, 0, 0, 0):"
    "\n        raise OSError(modules['ctypes'].get_errno(), 'clearing the parent-death signal')",
])
def test_the_kernel_refuses_what_a_program_past_the_audit_hook_tries(executor, attempt):
    result = executor.run(f"{RAW_MEMORY}    {attempt}\n    return 'escaped'\n")
    assert result.isolation.get("seccomp"), result
    assert (result.reason, result.message.startswith("the kernel refused")) == ("forbidden", True), result
    assert not os.path.exists(ESCAPE)


@needs_seccomp
def test_a_sub_interpreter_without_the_audit_hook_cannot_write_files(executor):
    code = f"open({ESCAPE!r}, 'w').write('x')"
    result = executor.run(f"{REACH}    real_import('_testcapi').run_in_subinterp({code!r})\n    return 1\n")
    assert not os.path.exists(ESCAPE), result


def test_a_program_holds_only_its_own_descriptors(executor):
    """The worker's socket to the pool (which unpickles what it reads) must not reach the program."""
    result = executor.run(f"{REACH}    held = []\n    for fd in range(1024):\n        try:\n"
                          "            os.fstat(fd)\n            held.append(fd)\n        except OSError:\n"
                          "            pass\n    return held\n")
    assert (result.ok, result.value) == (True, "[0, 1, 2, 3]"), result


def test_truncating_a_file_through_os_open_is_forbidden(executor, tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("kept")
    result = executor.run(f"{REACH}    os.open({str(target)!r}, os.O_RDONLY | os.O_TRUNC)\n")
    assert (result.ok, result.reason) == (False, "forbidden") and target.read_text() == "kept"


def test_a_program_dies_with_its_worker():
    """A program still running when its worker dies must not outlive it (the parent-death signal)."""
    with ProgramExecutor(workers=1, limits=SandboxLimits(timeout_seconds=30.0)) as pool:
        pool.run("def solution():\n    return 1\n")
        worker = pool.pool.processes[0]
        running = threading.Thread(target=pool.run, args=("def solution():\n    while True:\n        pass\n",))
        running.start()
        deadline, programs = time.monotonic() + 10, []
        while not programs and time.monotonic() < deadline:
            programs = _children_of(worker.pid)
            time.sleep(0.05)
        assert programs, "the program did not start"
        worker.kill()
        running.join(timeout=30)
        time.sleep(0.5)
        assert [pid for pid in programs if (_stat_fields(pid) or ["Z"])[0] != "Z"] == []



def test_prose_after_the_program_is_cut_off(executor):
    completion = "def solution():\n    pairs = 29 * 7\n    return pairs\nThe answer is 203.\n"
    assert extract_program(completion) == "def solution():\n    pairs = 29 * 7\n    return pairs"
    assert check_programs([completion], ["203"], executor)[0][0].correct
    assert extract_program("def solution():\nreturn 1\n") == "def solution():\nreturn 1"  # left for the sandbox


def test_extract_program():
    assert extract_program("x\ndef solution():\n    return 1\n") == "def solution():\n    return 1"
    assert extract_program("no program") is None


def test_majority_vote_over_program_answers_counts_returned_values_only():
    """maj@k over programs votes on what they return (5 and 5.0 agree); a program returning None has no vote."""
    from rftt.voting import majority_vote

    programs = ["def solution():\n    return 5\n", "def solution():\n    return 10 / 2\n",
                "def solution():\n    return 7\n", "def solution():\n    x = 7\n",
                "def solution():\n    x = 7\n", "def solution():\n    x = 7\n"]
    outcomes = judge(programs, ["5"] * len(programs), answer_format="program")
    assert [outcome.extracted for outcome in outcomes][3:] == [None, None, None]
    vote = majority_vote([outcome.extracted for outcome in outcomes], [outcome.correct for outcome in outcomes])
    assert vote.correct and float(vote.answer) == 5


HIERARCHY = ("def solution():\n"
             "    warnings = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'catch_warnings'][0]\n"
             "    builtins = warnings()._module.__builtins__\n"
             "    os = builtins['__import__']('os')\n")
"""The start of a program that reaches the real `__import__`, `os` and `open` through the class hierarchy."""
SECRET = "rftt-sandbox-secret-7a1c"


@pytest.fixture(scope="module")
def secret_executor(tmp_path_factory):
    """An executor started while the parent's environment holds a secret, and a readable file that holds one."""
    secret_file = tmp_path_factory.mktemp("secret") / "secret.txt"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o644)
    os.environ["RFTT_SANDBOX_TEST_SECRET"] = SECRET
    try:
        with ProgramExecutor(workers=1, limits=LIMITS) as pool:
            yield pool, str(secret_file)
    finally:
        del os.environ["RFTT_SANDBOX_TEST_SECRET"]


@pytest.mark.parametrize("body", [
    "    return len(os.listdir('/'))\n",
    "    return len(os.scandir('/').__next__().name)\n",
    "    return builtins['open'](SECRET_FILE).read()\n",
    "    return builtins['__import__']('io').open(SECRET_FILE).read()\n",
    "    return os.read(os.open(SECRET_FILE, os.O_RDONLY), 100)\n",
    "    return builtins['open']('/proc/self/environ', 'rb').read()\n",
    "    return os.environ['RFTT_SANDBOX_TEST_SECRET']\n",
    "    return builtins['__import__']('posix').environ[b'RFTT_SANDBOX_TEST_SECRET']\n",
])
def test_the_class_hierarchy_reaches_no_file_no_directory_and_no_environment(secret_executor, body):
    executor, secret_file = secret_executor
    result = executor.run(HIERARCHY.replace("def solution", f"SECRET_FILE = {secret_file!r}\ndef solution") + body)
    assert not result.ok and result.reason in ("forbidden", "error", "no_value"), result
    assert result.value is None and SECRET not in result.message and SECRET not in result.stdout
    if platform.machine() == "x86_64":
        assert result.isolation["no_file_opens"] and result.isolation["empty_environment"]
    assert executor.run("def solution():\n    return 6 * 7\n").value == "42"  # the worker is still usable


def test_a_program_sees_an_empty_environment(secret_executor):
    executor, _ = secret_executor
    result = executor.run(HIERARCHY + "    return repr(dict(os.environ)) + repr(builtins['__import__']('posix').environ)\n")
    assert (result.ok, result.value) == (True, "{}{}"), result


def test_every_allowed_module_imports_under_the_lock(executor):
    from rftt.verify.sandbox_child import ALLOWED_IMPORTS

    imports = "".join(f"import {name}\n" for name in sorted(ALLOWED_IMPORTS))
    result = executor.run(imports + "def solution():\n    return sympy.Rational(1, 3) + fractions.Fraction(1, 6)\n")
    assert (result.ok, result.value) == (True, "1/2"), result


def test_sympy_parts_imported_on_first_use_work_under_the_lock(executor):
    """sympy's solve imports sympy.tensor when first called: the worker's warm-up loads such parts before the lock."""
    result = executor.run("import sympy\ndef solution():\n    x, n = sympy.symbols('x n')\n"
                          "    return (max(sympy.solve(x**2 - 4, x)) + sympy.integrate(x, (x, 0, 2))\n"
                          "            + sympy.limit(sympy.sin(x) / x, x, 0) + sympy.summation(n, (n, 1, 3))\n"
                          "            + sympy.Matrix([[2, 0], [0, 2]]).inv()[0, 0]\n"
                          "            + sympy.simplify(sympy.cos(x)**2 + sympy.sin(x)**2))\n")
    assert (result.ok, result.value) == (True, "25/2"), result
