"""The program sandbox against hostile programs: each ends with the right reason, leaves nothing behind,
and the pool still answers correct programs afterwards."""

from __future__ import annotations

import os
import time

import pytest

from rftt.verify.judge import judge
from rftt.verify.programs import check_programs, extract_program
from rftt.verify.sandbox import ProgramExecutor, SandboxLimits

LIMITS = SandboxLimits(timeout_seconds=2.0, memory_bytes=256 * 2**20, output_bytes=16 * 2**10)

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
}


@pytest.fixture(scope="module")
def executor():
    with ProgramExecutor(workers=2, limits=LIMITS) as pool:
        pool.run("def solution():\n    return 1\n")
        yield pool


def _processes_of(uid: int) -> list[int]:
    owned = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    owned.append(int(entry))
            except FileNotFoundError:
                pass
    return owned


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


def test_extract_program():
    assert extract_program("x\ndef solution():\n    return 1\n") == "def solution():\n    return 1"
    assert extract_program("no program") is None
