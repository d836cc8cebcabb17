"""The verifier's worker pool: timeouts, dead workers, order of results, and the default pool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from rftt.verify import Outcome, VerifierPool, check_many

# sympy tries to evaluate this tower of powers and does not come back for minutes (the gold is symbolic,
# so the numeric short cuts, which judge unevaluated arithmetic wrong at once, do not apply).
PATHOLOGICAL = r"\boxed{2^{2^{2^{2^{30}}}}}"
SYMBOLIC_GOLD = r"\sqrt{2}"


@pytest.fixture(scope="module")
def warm_pool():
    with VerifierPool(workers=2, timeout=1.0) as pool:
        pool.check_many([r"\boxed{1}"], ["1"])
        yield pool


def test_a_pathological_expression_times_out_within_the_limit(warm_pool):
    started = time.monotonic()
    [outcome] = warm_pool.check_many([PATHOLOGICAL], [SYMBOLIC_GOLD])
    elapsed = time.monotonic() - started
    assert outcome == Outcome(False, "2^{2^{2^{2^{30}}}}", "timeout")
    assert elapsed < warm_pool.timeout + 2.0


def test_the_pool_keeps_answering_beside_and_after_a_timeout(warm_pool):
    predictions = [r"\boxed{5}", PATHOLOGICAL, "so 12 apples", r"\boxed{\frac{1}{2}}", PATHOLOGICAL, "#### 7"]
    golds = ["5", SYMBOLIC_GOLD, "12", "0.5", SYMBOLIC_GOLD, "8"]
    outcomes = warm_pool.check_many(predictions, golds)
    assert [outcome.reason for outcome in outcomes] == ["equal", "timeout", "equal", "equal", "timeout", "not_equal"]
    assert warm_pool.check_many([r"\boxed{x^2}"], ["x^2"]) == [Outcome(True, "x^2", "equal")]


def test_a_worker_killed_mid_comparison_gives_an_error_and_is_replaced():
    with VerifierPool(workers=1, timeout=30.0) as pool:
        pool.check_many(["1"], ["1"])
        victim = pool.pool.processes[0]
        killer = threading.Timer(0.5, victim.kill)
        killer.start()
        [outcome] = pool.check_many([PATHOLOGICAL], [SYMBOLIC_GOLD])
        killer.join()
        assert outcome.reason == "error" and outcome.extracted is not None
        assert pool.pool.processes[0] is not victim
        assert pool.check_many([r"\boxed{4}"], ["4"])[0].correct


def test_many_results_come_back_in_order():
    predictions = [f"The answer is {value}." for value in range(60)]
    golds = [str(value if value % 3 else value + 1) for value in range(60)]
    outcomes = check_many(predictions, golds)
    assert [outcome.correct for outcome in outcomes] == [value % 3 != 0 for value in range(60)]
    assert [outcome.extracted for outcome in outcomes] == [str(value) for value in range(60)]


def test_mismatched_lengths_are_a_caller_error():
    with pytest.raises(ValueError, match="2 predictions but 1 gold"):
        check_many(["1", "2"], ["1"])


def test_importing_the_verifier_does_not_import_torch():
    """Workers import rftt.verify; pulling torch in made each worker take seconds to start."""
    probe = "import sys, rftt.verify; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_check_works_from_a_program_read_on_stdin():
    """multiprocessing's spawn re-runs the parent's main file, which fails for `python -` and the like."""
    program = "from rftt.verify import check\nprint(check('so the answer is 4.', '4').correct)\n"
    result = subprocess.run([sys.executable, "-"], input=program, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True", result.stderr


def test_a_busy_worker_exits_when_its_parent_is_killed():
    program = (
        "import os, sys\n"
        "from rftt.verify import VerifierPool\n"
        "pool = VerifierPool(workers=1, timeout=600)\n"
        "pool.check_many(['1'], ['1'])\n"
        "print(pool.pool.processes[0].pid, flush=True)\n"
        f"pool.check_many([{PATHOLOGICAL!r}], [{SYMBOLIC_GOLD!r}])\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    worker_pid = int(parent.stdout.readline())
    time.sleep(0.5)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(worker_pid):
        time.sleep(0.1)
    assert not _alive(worker_pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = open(f"/proc/{pid}/stat").read().split()[2] if os.path.exists(f"/proc/{pid}/stat") else "X"
    return status != "Z"


def test_an_absolute_tolerance_accepts_loosely_rounded_gold_answers_only_when_asked():
    # SVAMP's gold answers are rounded loosely (0.3333 / 2 is given as 0.165); ReFT compares within 1e-2.
    predictions, golds = [r"\boxed{0.16665}", r"\boxed{8.99955}", r"\boxed{0.18}"], ["0.165", "9", "0.165"]
    assert [outcome.correct for outcome in check_many(predictions, golds)] == [False, False, False]
    assert [outcome.correct for outcome in check_many(predictions, golds, absolute_tolerance=1e-2)] == [True, True, False]
    # the tolerance applies to the numbers as written, not to a percent scaled by 100
    assert [outcome.correct for outcome in check_many([r"\boxed{1\%}", r"\boxed{0.04}"], ["0", "3%"],
                                                      absolute_tolerance=1e-2)] == [False, False]
