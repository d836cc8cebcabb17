"""`rftt view`: one self-contained HTML page of a search tree.

Nodes are coloured by move and show visits N and value Q; terminals show their answer
with a tick or a cross; nodes on a path to a correct answer are outlined in green; a
click on a node shows its full step text and statistics. No network: the tree's JSON,
the styles and the script are all inside the page.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from rftt.errors import RfttError
from rftt.jsonl import read_records
from rftt.search.tree import Tree
from rftt.tokens import Move

MOVE_COLOURS = {
    Move.CLARIFY: "#6c8ebf", Move.ANALYZE: "#9673a6", Move.SUBQUESTION: "#d79b00", Move.NEXT_STEP: "#82b366",
    Move.DIRECT_ANSWER: "#b85450", Move.VERIFY: "#d6b656", Move.REFINE: "#10739e", Move.OUTPUT: "#333333",
}

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>rftt tree: __TITLE__</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; display: flex; height: 100vh; }
#tree { flex: 3; overflow: auto; padding: 12px 16px; }
#detail { flex: 2; overflow: auto; padding: 12px 16px; border-left: 1px solid #ccc; background: #fafafa; }
h1 { font-size: 17px; margin: 0 0 4px; } .question { color: #333; margin-bottom: 10px; white-space: pre-wrap; }
.legend span { display: inline-block; margin: 0 8px 6px 0; padding: 1px 7px; border-radius: 9px; color: #fff; }
ul { list-style: none; margin: 0; padding-left: 22px; border-left: 1px dotted #bbb; }
li { margin: 3px 0; }
.node { display: inline-block; cursor: pointer; padding: 2px 8px; border-radius: 6px; border: 2px solid transparent;
        background: #eee; max-width: 720px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.node.on-correct-path { border-color: #2e7d32; } .node.selected { box-shadow: 0 0 0 2px #1565c0; }
.move { color: #fff; border-radius: 5px; padding: 0 5px; margin-right: 6px; font-size: 12px; }
.stats { color: #555; font-size: 12px; margin-right: 6px; } .unwritten { opacity: .45; }
.ok { color: #2e7d32; font-weight: bold; } .bad { color: #c62828; font-weight: bold; }
pre { white-space: pre-wrap; background: #fff; border: 1px solid #ddd; padding: 8px; }
</style></head><body>
<div id="tree"><h1>__TITLE__</h1><div class="question">__QUESTION__</div>
<div class="legend">__LEGEND__</div><div id="root"></div></div>
<div id="detail"><p>Click a node to see its full text.</p></div>
<script>
const TREE = __TREE__;
const COLOURS = __COLOURS__;
const nodes = TREE.nodes;
const good = new Set();
for (const n of nodes) if (n.correct) { let m = n; while (m) { good.add(m.id); m = m.parent === null ? null : nodes[m.parent]; } }
function esc(text) { const d = document.createElement('div'); d.textContent = text ?? ''; return d.innerHTML; }
function label(n) {
  const q = n.visits ? (n.value_sum / n.visits).toFixed(2) : '-';
  const verdict = !n.terminal ? '' : n.reward === null ? ' <span class="stats">(not reached by a rollout)</span>'
    : (n.correct ? ' <span class="ok">&#10003; ' : ' <span class="bad">&#10007; ') + esc(n.answer ?? n.terminal_reason)
    + '</span>';
  const move = n.move ? `<span class="move" style="background:${COLOURS[n.move]}">${n.move}</span>` : '<b>question</b> ';
  return `${move}<span class="stats">N=${n.visits} Q=${q}</span>${esc((n.content || '').slice(0, 90))}${verdict}`;
}
function render(n) {
  const li = document.createElement('li');
  const box = document.createElement('span');
  box.className = 'node' + (good.has(n.id) ? ' on-correct-path' : '') + (n.move && n.content === null ? ' unwritten' : '');
  box.innerHTML = label(n); box.dataset.id = n.id;
  box.onclick = () => show(n, box);
  li.appendChild(box);
  const written = n.children.map(i => nodes[i]).filter(c => c.content !== null);
  if (written.length) { const ul = document.createElement('ul'); written.forEach(c => ul.appendChild(render(c))); li.appendChild(ul); }
  return li;
}
function show(n, box) {
  document.querySelectorAll('.selected').forEach(e => e.classList.remove('selected'));
  box.classList.add('selected');
  const rows = ['visits', 'value_sum', 'prior', 'depth', 'terminal_reason', 'reward', 'answer', 'correct',
                'process_reward', 'generated_tokens'].map(k => `<tr><td>${k}</td><td>${esc(String(n[k]))}</td></tr>`);
  document.getElementById('detail').innerHTML = `<h1>node ${n.id}: ${n.move || 'question'}</h1>`
    + `<pre>${esc(n.move ? n.content : TREE.question)}</pre><table>${rows.join('')}</table>`;
}
const ul = document.createElement('ul'); ul.style.borderLeft = 'none'; ul.style.paddingLeft = '0';
ul.appendChild(render(nodes[0])); document.getElementById('root').appendChild(ul);
</script></body></html>
"""


def render_tree_page(tree: Tree) -> str:
    """The HTML page for one tree."""
    title = html.escape(f"{tree.problem_id} (gold {tree.gold}, {tree.rollouts} rollouts)")
    legend = "".join(f'<span style="background:{colour}">{move.value}</span>' for move, colour in MOVE_COLOURS.items())
    colours = {move.value: colour for move, colour in MOVE_COLOURS.items()}
    tree_json = json.dumps(tree.to_json()).replace("</", "<\\/")
    return (_PAGE.replace("__TITLE__", title).replace("__QUESTION__", html.escape(tree.question))
            .replace("__LEGEND__", legend).replace("__COLOURS__", json.dumps(colours)).replace("__TREE__", tree_json))


def load_tree(run: str | Path, problem_id: str | None) -> Tree:
    """A tree from a search run's trees.jsonl (the first one when no problem id is given)."""
    path = Path(run) / "trees.jsonl" if Path(run).is_dir() else Path(run)
    records = read_records(path)
    if not records:
        raise RfttError(f"{path}: no trees (run `rftt search` first)")
    for record in records:
        if problem_id is None or record["tree"]["problem_id"] == problem_id:
            return Tree.from_json(record["tree"])
    known = ", ".join(record["tree"]["problem_id"] for record in records[:10])
    raise RfttError(f"{path}: no tree for problem {problem_id!r} (first ids: {known})")


def write_tree_page(run: str | Path, problem_id: str | None, output: str | Path | None = None) -> Path:
    """Write the page for one problem of a run; returns its path."""
    tree = load_tree(run, problem_id)
    folder = Path(run) if Path(run).is_dir() else Path(run).parent
    safe_id = "".join(character if character.isalnum() else "_" for character in tree.problem_id)
    path = Path(output) if output else folder / f"tree-{safe_id}.html"
    path.write_text(render_tree_page(tree), encoding="utf-8")
    return path
