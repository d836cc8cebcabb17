"""Whether two runs of `rftt demo` behaved the same: per-problem results of every evaluation stage, the search's
warm-up data and the RL metrics (timings left out). For refactors that must not change behaviour: run
`rftt demo --budget small --seed 0 --output-dir runs/before` on the old code and `... runs/after` on the new.

    python bench/same_behaviour.py runs/before runs/after
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import write_results

EVALUATIONS = ("baseline", "eval-sft", "eval-rl", "eval-rl-tree")
RECORD_FIELDS = ("id", "completions", "extracted", "answer", "correct")
TIMINGS = ("seconds", "step_seconds")


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compare(before: Path, after: Path) -> dict:
    """Per part: how many records, and whether they are the same (the first difference when not)."""
    parts = {}
    for stage in EVALUATIONS:
        old, new = ([{key: record.get(key) for key in RECORD_FIELDS} for record in lines(run / stage / "problems.jsonl")]
                    for run in (before, after))
        parts[stage] = {"records": len(old), "same": old == new}
    old, new = ([{key: value for key, value in row.items() if key not in TIMINGS} for row in lines(run / "rl" / "metrics.jsonl")]
                for run in (before, after))
    parts["rl_metrics"] = {"records": len(old), "same": old == new}
    warm_up = [(run / "search" / "sft.jsonl").read_text() for run in (before, after)]
    parts["search_warm_up_data"] = {"records": warm_up[0].count("\n"), "same": warm_up[0] == warm_up[1]}
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--label", default="latest", help="what the comparison checks (a commit range, say)")
    arguments = parser.parse_args()
    parts = compare(arguments.before, arguments.after)
    for name, part in parts.items():
        print(f"{name:<22}{part['records']:>6}  {'same' if part['same'] else 'DIFFERENT'}")
    write_results("same_behaviour", {"label": arguments.label, "before": str(arguments.before),
                                     "after": str(arguments.after), "parts": parts,
                                     "all_same": all(part["same"] for part in parts.values())})


if __name__ == "__main__":
    main()
