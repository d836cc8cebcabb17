"""The demo's report: `summary.json`, a printed table, PNG plots and one self-contained `report.html`.

Every number comes from the stages' own files (eval summaries and per-problem records, the
search summary and trees, the RL metrics), so the report can be rebuilt from a run folder.
Plots are written to `plots/` and embedded in the page; example trees are the viewer's
pages, embedded too, so the HTML file stands alone.
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from rftt.config import to_dict
from rftt.data import load_problems
from rftt.demo_budget import DemoPlan
from rftt.demo_settings import paired_run, problem_file, settings_changed
from rftt.jsonl import read_records
from rftt.search.tree import Tree
from rftt.search.viewer import MOVE_COLOURS, render_tree_page
from rftt.stage_accuracy import (
    EVAL_STAGES,
    KIND_HEADER,
    TREE_STAGE,
    eval_rows,
    gains_by_kind,
    kind_rows,
    stage_gains,
    tree_diagnostics,
)
from rftt.tokens import Move, parse_steps
from rftt.train.metrics_log import ROLLOUT_FILE

TREE_DIAGNOSTICS = ("weighted_vote", "majority_vote", "terminals_agree", "pass_at_n")
REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.json"
PLOT_FOLDER = "plots"
def move_usage(run: Path) -> dict[str, dict[str, float]]:
    """Mean number of steps of each move per answer, for every eval stage (functional tokens as written)."""
    usage = {}
    for stage in [*EVAL_STAGES, TREE_STAGE]:
        records = read_records(run / stage / "problems.jsonl")
        completions = [text for record in records for text in record["completions"]]
        if completions:
            counts = Counter(step.move.value for text in completions for step in parse_steps(text))
            usage[stage] = {move.value: counts[move.value] / len(completions) for move in Move}
    return usage


def rl_curve(run: Path) -> list[dict[str, Any]]:
    keys = ("step", "reward", "accuracy", "kl", "dev_accuracy", "response_length", "step_seconds",
            "rolled_out_accuracy", "informative_rolled_out_groups")
    return [{key: record[key] for key in keys if key in record} for record in read_records(run / "rl" / "metrics.jsonl")]


def last_step_rollouts(run: Path, count: int) -> list[dict[str, Any]]:
    """Up to `count` trajectories the last RL step trained on, groups with mixed rewards first, each with its
    question and gold answer: what one update learns from."""
    path = run / "rl" / ROLLOUT_FILE
    records = read_records(path) if path.exists() else []
    if not records or not count:
        return []
    last = [record for record in records if record["step"] == records[-1]["step"]]
    rewards: dict[int, set[float]] = {}
    for record in last:
        rewards.setdefault(record["group"], set()).add(record["reward"])
    last.sort(key=lambda record: len(rewards[record["group"]]) == 1)

    problems = {problem.id: problem for problem in load_problems(problem_file(run, "train"))}  # as RL read them
    return [{"step": record["step"], "group": record["group"], "question": problems[record["problem"]].question,
             "gold": problems[record["problem"]].answer,
             **{key: record[key] for key in ("response", "answer", "reward", "advantage")}}
            for record in last[:count]]


def search_summary(run: Path) -> dict[str, Any]:
    path = run / "search" / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def example_trees(run: Path, count: int) -> list[Tree]:
    """Up to `count` phase-1 trees: the ones with the most correct terminals first (ties: the larger tree)."""
    records = read_records(run / "search" / "trees.jsonl")
    trees = [Tree.from_json(record["tree"]) for record in records]
    trees.sort(key=lambda tree: (-sum(bool(node.correct) for node in tree.nodes), -len(tree.nodes)))
    return trees[:count]


def _plots(run: Path, rows: dict[str, dict[str, Any]], curve: Sequence[dict[str, Any]]) -> dict[str, Path]:
    """accuracy.png (per stage, with intervals), rl.png (reward, accuracy and KL per step), rollouts.png."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    folder = run / PLOT_FOLDER
    folder.mkdir(exist_ok=True)
    paths = {}
    figure, axis = pyplot.subplots(figsize=(6.4, 3.2))
    labels = [row["stage"].replace(", ", "\n") for row in rows.values()]
    values = [100 * row["accuracy"] for row in rows.values()]
    axis.bar(range(len(values)), values, yerr=_error_bars(list(rows.values())), capsize=4, color="#82b366")
    axis.set_xticks(range(len(values)), labels, fontsize=7)
    axis.set_ylabel("held-out accuracy (%)")
    paths["accuracy"] = _save(figure, folder / "accuracy.png")
    if curve:
        figure, (left, right) = pyplot.subplots(1, 2, figsize=(8, 3))
        trained = [point for point in curve if "reward" in point]  # step -1 is the evaluation before training
        steps = [point["step"] + 1 for point in trained]
        left.plot(steps, [point["reward"] for point in trained], label="mean reward")
        left.plot(steps, [point["accuracy"] for point in trained], label="rollout accuracy (groups trained on)")
        if all("rolled_out_accuracy" in point for point in trained):  # an oversampled rollout: every group
            left.plot(steps, [point["rolled_out_accuracy"] for point in trained], label="rollout accuracy (all rolled out)")
        dev = [(point["step"] + 1, point["dev_accuracy"]) for point in curve if "dev_accuracy" in point]
        if dev:
            left.plot(*zip(*dev), marker="o", label="dev accuracy (greedy)")
        left.set_xlabel("RL step")
        left.legend(fontsize=7)
        key, label = ("kl", "KL to the reference") if all("kl" in point for point in trained) else \
            ("response_length", "response length (tokens)")  # without a KL term there is no reference to compare
        right.plot(steps, [point.get(key) for point in trained], color="#b85450")
        right.set_xlabel("RL step")
        right.set_ylabel(label)
        paths["rl"] = _save(figure, folder / "rl.png")
    tree = [row for name, row in rows.items() if name.startswith("tree-")]
    if tree:
        figure, axis = pyplot.subplots(figsize=(4, 3))
        counts = [int(name.split("-")[1]) for name in rows if name.startswith("tree-")]
        axis.errorbar(counts, [100 * row["accuracy"] for row in tree], yerr=_error_bars(tree), marker="o", capsize=4)
        axis.set_xscale("log", base=2)
        axis.set_xlabel("rollouts at inference")
        axis.set_ylabel("held-out accuracy (%)")
        paths["rollouts"] = _save(figure, folder / "rollouts.png")
    return paths


def _error_bars(rows: Sequence[dict[str, Any]]) -> list[list[float]]:
    """Distances (in points of percent) from each accuracy down and up to its interval's ends."""
    return [[max(0.0, 100 * (row["accuracy"] - row["interval"][0])) for row in rows],
            [max(0.0, 100 * (row["interval"][1] - row["accuracy"])) for row in rows]]


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    from matplotlib import pyplot

    pyplot.close(figure)
    return path


def build_summary(run: Path, config: Any, stages: dict[str, dict[str, Any]],
                  plan: DemoPlan | None = None) -> dict[str, Any]:
    """Everything the report shows, as data; with a budget's plan, each stage's planned seconds beside its own."""
    planned = plan.seconds if plan is not None else {}
    return {
        "config": to_dict(config),
        "accuracy": eval_rows(run),
        "gains": stage_gains(run),
        "by_kind": gains_by_kind(run),
        "tree_search": tree_diagnostics(run),
        "search": search_summary(run),
        "rl_curve": rl_curve(run),
        "rl_rollouts": last_step_rollouts(run, config.example_rollouts),
        "moves_per_answer": move_usage(run),
        "stages": {name: {"seconds": round(record["seconds"], 1), "planned_seconds": planned.get(name),
                          "command": record.get("command"), "done": record["done"],
                          "reused_from": record.get("reused_from")}
                   for name, record in stages.items()},
        "plan": plan.to_dict() if plan is not None else None,
        "total_seconds": round(sum(record["seconds"] for record in stages.values()), 1),
        "paired_run": paired_run_accuracy(run, config),
    }


def paired_run_accuracy(run: Path, config: Any) -> dict[str, Any] | None:
    """Accuracy per stage of the ablation's pair of this run (same demo, other `functional_tokens`), if it ran.
    A pair whose other settings differ is named with those settings instead, since its numbers do not compare."""

    other = paired_run(run, config.functional_tokens)
    path = other / SUMMARY_FILE
    if other == run or not path.exists():
        return None
    pair = {"run": str(other), "functional_tokens": not config.functional_tokens}
    differing = settings_changed(other, to_dict(config), ignore=("functional_tokens", "output_dir"))
    if differing:
        return {**pair, "other_settings": differing, "accuracy": {}}
    accuracy = json.loads(path.read_text())["accuracy"]
    return {**pair, "accuracy": {name: {key: row[key] for key in ("accuracy", "interval", "problems")}
                                 for name, row in accuracy.items()}}


def _copied_from(stage: dict[str, Any]) -> str:
    """For a stage copied from another run (`rftt demo --from-run`), which run; else nothing."""
    return f" (copied from {stage['reused_from']}, seconds as measured there)" if stage.get("reused_from") else ""


def _planned(stage: dict[str, Any]) -> str:
    return f" (planned {stage['planned_seconds']:.1f} s)" if stage.get("planned_seconds") is not None else ""


def format_table(summary: dict[str, Any]) -> str:
    """The accuracy table and the wall time of each stage, for the terminal."""
    lines = [f"{'stage':<40}{'accuracy':>10}  {'95% interval':<15}{'answered':>9}{'acc|answered':>14}"]
    for row in summary["accuracy"].values():
        low, high = row["interval"]
        lines.append(f"{row['stage']:<40}{row['accuracy']:>10.1%}  {f'{low:.1%}-{high:.1%}':<15}"
                     f"{row.get('extraction_rate', 0):>9.1%}{row.get('accuracy_among_extracted', 0):>14.1%}")
    lines.append("")
    lines += [f"{gain['to']:<40}{gain['difference']:>+10.1%}  standard error {gain['standard_error']:.1%}, "
              f"{gain['gained']} problems gained, {gain['lost']} lost" for gain in summary["gains"].values()]
    lines.append("")
    lines += ["  ".join(f"{cell:<16}" for cell in row) for row in [KIND_HEADER, *kind_rows(summary)]]
    lines += [f"tree search, {count} rollouts: " + ", ".join(f"{key} {value:.1%}" for key, value in values.items())
              for count, values in summary["tree_search"].items()]
    lines.append("")
    lines += [f"{name:<16}{stage['seconds']:>8.1f} s{_planned(stage)}{_copied_from(stage)}"
              for name, stage in summary["stages"].items()]
    lines.append(f"{'total':<16}{summary['total_seconds']:>8.1f} s")
    return "\n".join(lines)


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], css_class: str | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<table{attribute}><tr>{head}</tr>{body}</table>"


_STYLE = """body { font: 14px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 24px auto; padding: 0 16px; }
table { border-collapse: collapse; margin: 8px 0 18px; } td, th { border: 1px solid #ccc; padding: 3px 9px; }
th { background: #f3f3f3; } td { text-align: right; } td:first-child { text-align: left; }
code { background: #f3f3f3; padding: 1px 4px; } iframe { width: 100%; height: 430px; border: 1px solid #ccc; }
img { max-width: 100%; } .move { color: #fff; border-radius: 4px; padding: 0 5px; }
table.text td { text-align: left; } table.text td:nth-child(4) { font-family: monospace; font-size: 12px; }"""


def render_page(summary: dict[str, Any], plots: dict[str, Path], trees: Sequence[Tree]) -> str:
    """The self-contained HTML report."""
    accuracy = _table(["stage", "problems", "accuracy", "95% interval", "answers stated", "accuracy among stated"],
                      [[row["stage"], row["problems"], f"{row['accuracy']:.1%}",
                        f"{row['interval'][0]:.1%} - {row['interval'][1]:.1%}",
                        f"{row.get('extraction_rate', 0):.1%}", f"{row.get('accuracy_among_extracted', 0):.1%}"]
                       for row in summary["accuracy"].values()])
    moves = _table(["stage", *[move.value for move in Move]],
                   [[stage, *[f"{usage[move.value]:.2f}" for move in Move]]
                    for stage, usage in summary["moves_per_answer"].items()])
    stages = _table(["stage", "wall seconds", "planned seconds", "command to re-run it alone"],
                    [[name, stage["seconds"], stage.get("planned_seconds") or "",
                      (stage["command"] or "") + _copied_from(stage)]
                     for name, stage in summary["stages"].items()])
    search = _table(["", "value"], [[key, f"{value:.2f}" if isinstance(value, float) else value]
                                    for key, value in summary["search"].items()])
    gains = _table(["change", "accuracy difference", "standard error (paired)", "problems gained", "problems lost"],
                   [[f"{gain['from']} -> {gain['to']}", f"{gain['difference']:+.1%}", f"{gain['standard_error']:.1%}",
                     gain["gained"], gain["lost"]] for gain in summary["gains"].values()])
    pair = _paired_table(summary)
    kinds = _table(KIND_HEADER, kind_rows(summary))
    tree_search = _table(["rollouts", *TREE_DIAGNOSTICS], [[count, *[f"{values[key]:.1%}" for key in TREE_DIAGNOSTICS]]
                                                          for count, values in summary["tree_search"].items()])
    rollouts = _rollouts_section(summary["rl_rollouts"])
    legend = " ".join(f'<span class="move" style="background:{MOVE_COLOURS[move]}">{move.value}</span>' for move in Move)
    frames = "".join(f"<h3>{html.escape(tree.question)}</h3><iframe srcdoc=\"{html.escape(render_tree_page(tree))}\">"
                     "</iframe>" for tree in trees)
    figures = {name: _image(path) for name, path in plots.items()}
    config = summary["config"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>rftt demo report</title><style>{_STYLE}</style></head><body>
<h1>rftt demo: RFTT on {html.escape(str(config['task']['name']))}</h1>
<p>Model <code>{html.escape(config['model'])}</code>, seed {config['seed']}, total wall time
{summary['total_seconds'] / 60:.1f} minutes. Accuracy is greedy (or tree-search) accuracy on held-out problems;
"answers stated" counts answers given in the taught format (<code>\\boxed{{}}</code> or an <code>&lt;output&gt;</code>
step), which separates format from skill.</p>
<h2>Accuracy per stage</h2>{accuracy}
<p>Each stage against the one before it, on the same problems:</p>{gains}
<p>By kind of problem (a problem may be of several kinds):</p>{kinds}{figures.get('accuracy', '')}{pair}
<h2>RL: reward and KL per step</h2>{figures.get('rl', '<p>no RL steps yet</p>')}{rollouts}
<h2>Accuracy against inference-time rollouts</h2>{figures.get('rollouts', '<p>not run</p>')}
<p>What the search had to work with: the weighted vote reported above, a plain majority vote of the same terminals,
the share of problems whose answered terminals all agree (no vote can change those), and pass@N (some terminal
correct: the ceiling of any vote).</p>{tree_search}
<h2>Functional tokens: steps of each move per answer</h2>{moves}
<h2>Phase-1 search</h2>{search}
<h2>Example phase-1 trees</h2><p>{legend}</p>{frames}
<h2>Stages, wall time and how to re-run each</h2>{stages}
</body></html>
"""


def _rollouts_section(rollouts: Sequence[dict[str, Any]]) -> str:
    """The last RL step's trajectories (`rl/rollouts.jsonl` has every step's)."""
    if not rollouts:
        return ""
    rows = [[rollout["group"], rollout["question"], rollout["gold"], rollout["response"], rollout["answer"],
             f"{rollout['reward']:.2f}", f"{rollout['advantage']:+.2f}"] for rollout in rollouts]
    return (f"<h3>What step {rollouts[0]['step']} trained on</h3><p>Trajectories of the last step, groups (one "
            "prompt each) with mixed rewards first; the advantage is the mean over the response's tokens. Every "
            "step's are in <code>rl/rollouts.jsonl</code>.</p>"
            + _table(["group", "question", "gold", "response", "answer", "reward", "advantage"], rows, "text"))


def _paired_table(summary: dict[str, Any]) -> str:
    """Both runs of the functional-token ablation side by side, when the pair has run."""
    pair = summary.get("paired_run")
    if not pair:
        return ""
    if pair.get("other_settings"):
        return (f"<h3>Ablation</h3><p>The pair run <code>{html.escape(pair['run'])}</code> ran with other settings "
                f"({html.escape(', '.join(pair['other_settings']))}), so it is not compared here.</p>")
    with_tokens = not pair["functional_tokens"]
    names = ("functional tokens", "tags as plain text") if with_tokens else ("tags as plain text", "functional tokens")
    rows = [[row["stage"], _accuracy_cell(row), _accuracy_cell(pair["accuracy"].get(name))]
            for name, row in summary["accuracy"].items()]
    return (f"<h3>Ablation: functional tokens against the same tags as plain text</h3><p>Pair run: "
            f"<code>{html.escape(pair['run'])}</code></p>" + _table(["stage", f"this run ({names[0]})", names[1]], rows))


def _accuracy_cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "not run"
    return f"{row['accuracy']:.1%} ({row['interval'][0]:.1%} - {row['interval'][1]:.1%})"


def write_report(run: Path, config: Any, stages: dict[str, dict[str, Any]],
                 plan: DemoPlan | None = None) -> dict[str, Any]:
    """Write summary.json, the plots and report.html into the run folder; print the table; return the summary."""
    summary = build_summary(run, config, stages, plan)
    plots = _plots(run, summary["accuracy"], summary["rl_curve"])
    summary["plots"] = {name: str(path.relative_to(run)) for name, path in plots.items()}
    (run / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    trees = example_trees(run, config.example_trees)
    (run / REPORT_FILE).write_text(render_page(summary, plots, trees))
    print("\n" + format_table(summary))
    print(f"\nreport: {run / REPORT_FILE}")
    return summary
