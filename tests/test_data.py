"""Dataset loaders: each format on a small file written here, with one bad row each."""

from __future__ import annotations

import json
import re

import pytest

from rftt.data import PRESETS, DataError, DatasetSpec, Problem, load_problems


def write_jsonl(path, rows: list) -> str:
    """One row a line; a str row is written verbatim (to make invalid JSON)."""
    path.write_text("\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n")
    return str(path)


def write_json_array(path, rows: list) -> str:
    path.write_text(json.dumps(rows, indent=2))
    return str(path)


GSM8K_ROW = {"question": "Ann has 2 apples and buys 3. How many?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"}
BIG_GSM8K_ROW = {"question": "How many grams?", "answer": "1000 * 2 = 2000\n#### 2,000"}

# name, file name, writer, two good rows, one bad row, the bad row's field, expected first Problem fields
CASES = [
    ("gsm8k", "test.jsonl", write_jsonl, [GSM8K_ROW, BIG_GSM8K_ROW],
     {"question": "No final answer here", "answer": "2 + 3 = 5"}, "answer",
     {"id": "gsm8k/test/0", "answer": "5", "solution": "2 + 3 = 5"}),
    ("svamp", "test.json", write_json_array,
     [{"item_id": "svamp_1", "question": "q1", "answer_value": "14.0"},
      {"item_id": "svamp_2", "question": "q2", "answer_value": 2.5}],
     {"item_id": "svamp_3", "question": "q3"}, "answer_value",
     {"id": "svamp_1", "answer": "14", "source": "svamp"}),
    ("math500", "test.jsonl", write_jsonl,
     [{"problem": "p1", "answer": "\\frac{1}{2}", "solution": "s", "unique_id": "test/algebra/1.json",
       "subject": "Algebra", "level": 2},
      {"problem": "p2", "answer": "3", "unique_id": "test/algebra/2.json"}],
     {"problem": ["not", "text"], "answer": "1", "unique_id": "u"}, "problem",
     {"id": "test/algebra/1.json", "answer": "\\frac{1}{2}", "metadata": {"subject": "Algebra", "level": 2}}),
    ("mawps", "multiarith.jsonl", write_jsonl,
     [{"input": "There are 3 and 4 more.", "target": 7.0}, {"input": "q", "target": 8}],
     {"input": "q", "target": None}, "target",
     {"id": "mawps/multiarith/0", "answer": "7"}),
    ("asdiv", "test.jsonl", write_jsonl,
     [{"body": "Seven red apples.", "question": "How many?", "answer": "9 (apples)", "formula": "7+2=9", "idx": 0},
      {"body": "b", "question": "Ratio?", "answer": "3:4", "idx": 1}],
     {"body": "b", "question": "", "answer": "1", "idx": 2}, "question",
     {"id": "asdiv/0", "question": "Seven red apples. How many?", "answer": "9"}),
    ("mathqa", "test_choice.json", write_json_array,
     [{"item_id": "mathqa_0", "question": "q\na ) 1 , b ) 2", "answer_value": "a"},
      {"item_id": "mathqa_1", "question": "q", "answer_value": "b"}],
     {"question": "no id", "answer_value": "c"}, "item_id",
     {"id": "mathqa_0", "answer": "a"}),
    ("aime24", "aime24_test.jsonl", write_jsonl,
     [{"id": 60, "problem": "p", "answer": "204", "solution": "s"}, {"id": 61, "problem": "p", "answer": "25"}],
     {"id": 62, "problem": "p", "answer": {"value": 3}}, "answer",
     {"id": "aime24/60", "answer": "204", "solution": "s"}),
    ("amc23", "amc23_test.jsonl", write_jsonl,
     [{"id": 0, "problem": "p", "answer": 27.0}, {"id": 1, "problem": "p", "answer": 0.5}],
     {"id": 2, "answer": 3.0}, "problem",
     {"id": "amc23/0", "answer": "27"}),
]


@pytest.mark.parametrize(("name", "file", "writer", "good", "bad", "field", "expected"), CASES, ids=[c[0] for c in CASES])
def test_benchmark_loader(tmp_path, name, file, writer, good, bad, field, expected):
    folder = tmp_path / name
    folder.mkdir()
    path = writer(folder / file, [*good, bad])
    with pytest.raises(DataError) as raised:
        load_problems(name, path=str(folder))
    message = str(raised.value)
    assert path in message and f"field {field!r}" in message
    bad_line = path_line_of_last_record(path)
    assert raised.value.line == bad_line and f"line {bad_line}" in message

    problems = load_problems(name, path=path, skip_bad=True)
    assert len(problems) == 2 and len(problems.skipped) == 1
    assert all(isinstance(problem, Problem) for problem in problems)
    for key, value in expected.items():
        assert getattr(problems[0], key) == value, key


def path_line_of_last_record(path: str) -> int:
    """The line where the last record starts: the last line for JSONL, the last '{' line for a JSON array."""
    lines = open(path).read().splitlines()
    if path.endswith(".jsonl"):
        return len(lines)
    return max(number for number, line in enumerate(lines, start=1) if line.strip().startswith("{"))


def test_gsm8k_thousands_separator_and_calculator_notes(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [GSM8K_ROW, BIG_GSM8K_ROW])
    problems = load_problems("gsm8k", path=str(tmp_path), split="train")
    assert [problem.answer for problem in problems] == ["5", "2000"]
    assert "<<" not in problems[0].solution


def test_invalid_json_line_names_the_line_and_can_be_skipped(tmp_path):
    path = write_jsonl(tmp_path / "test.jsonl", [GSM8K_ROW, '{"question": "cut off', BIG_GSM8K_ROW])
    with pytest.raises(DataError, match=r"test.jsonl line 2: not valid JSON"):
        load_problems("gsm8k", path=path)
    problems = load_problems("gsm8k", path=path, skip_bad=True)
    assert [problem.id for problem in problems] == ["gsm8k/test/0", "gsm8k/test/2"]
    assert len(problems.skipped) == 1


def test_broken_json_array_is_an_error_with_a_line(tmp_path):
    path = tmp_path / "test.json"
    path.write_text('[\n  {"item_id": "a", "question": "q", "answer_value": "1"},\n  {"item_id": \n')
    with pytest.raises(DataError, match=r"test.json line \d+: not valid JSON"):
        load_problems("svamp", path=str(path), skip_bad=True)


def test_svamp_program_split_keeps_the_program(tmp_path):
    program = "def solution():\n    return 29 * 7\n"
    write_json_array(tmp_path / "train_pot.json",
                     [{"item_id": "svamp_0", "question": "q", "answer_cot": program, "answer_value": "203.0"}])
    [problem] = load_problems("svamp", path=str(tmp_path), split="train_pot")
    assert problem.solution == program.strip() and problem.answer == "203"


def test_any_json_file_with_a_field_mapping(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [{"q": "1+1?", "a": 2, "key": "x1", "why": "adding"}, {"q": "2+2?"}])
    fields = {"question": "q", "answer": "a", "id": "key", "solution": "why"}
    with pytest.raises(DataError, match=r"mine.jsonl line 2: field 'a': missing"):
        load_problems("json", path=path, fields=fields)
    [problem] = load_problems("json", path=path, fields=fields, skip_bad=True)
    assert (problem.id, problem.question, problem.answer, problem.solution) == ("x1", "1+1?", "2", "adding")


def test_field_mapping_rejects_unknown_keys(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [{"question": "q", "answer": "1"}])
    with pytest.raises(DataError, match=r"field 'fields': unknown keys \['gold'\]"):
        load_problems("json", path=path, fields={"gold": "answer"})


def test_hub_dataset_through_datasets_from_a_local_folder(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [{"problem": "3+4?", "solution_value": "7"}, {"problem": "5+5?"}])
    spec = DatasetSpec(name=f"hub:{tmp_path}", split="test", fields={"question": "problem", "answer": "solution_value"})
    with pytest.raises(DataError, match=r"row 2: field 'solution_value': missing"):
        load_problems(spec)
    problems = load_problems(spec, skip_bad=True)
    assert [(problem.question, problem.answer) for problem in problems] == [("3+4?", "7")]
    assert len(problems.skipped) == 1


def test_hub_dataset_that_cannot_be_loaded(tmp_path):
    with pytest.raises(DataError, match="could not load"):
        load_problems(f"hub:{tmp_path / 'nothing-here'}")


def test_generated_arithmetic_is_reproducible_and_sized():
    first = load_problems("arithmetic", size=20, seed=5)
    again = load_problems("arithmetic", size=20, seed=5)
    other = load_problems("arithmetic", size=20, seed=5000)
    assert first == again and first != other and len(first) == 20
    for problem in first:
        assert problem.source == "reasoning_gym/basic_arithmetic"
        assert str(eval(problem.metadata["expression"])) == problem.answer  # the generator's own expression


TWO_TERMS = re.compile(r"^Calculate (\d{1,3}) ([+-]) (\d{1,3})\.$")


def test_the_arithmetic_preset_is_exactly_two_non_negative_terms_without_parentheses_or_negation():
    problems = load_problems("arithmetic", size=2000, seed=1)
    operators = set()
    for problem in problems:
        match = TWO_TERMS.match(problem.question)
        assert match, problem.question
        left, operator, right = match.groups()
        operators.add(operator)
        assert max(int(left), int(right)) <= 100  # reasoning-gym's "2 digits" reaches 100 (21 of 4,000 terms)
        assert int(problem.answer) == (int(left) + int(right) if operator == "+" else int(left) - int(right))
    assert operators == {"+", "-"}
    assert any(int(problem.answer) < 0 for problem in problems)  # a difference may still be negative


def test_the_preset_with_negation_and_parentheses_generates_both():
    problems = load_problems("arithmetic_with_negation_and_parentheses", size=2000, seed=1)
    expressions = [problem.metadata["expression"] for problem in problems]
    assert all(re.fullmatch(r"[-+() 0-9]+", expression) for expression in expressions)
    assert sum("(" in expression for expression in expressions) > 100
    assert sum(bool(re.search(r"[-+] -\d|^-|\( -", expression)) for expression in expressions) > 100
    assert all(len(re.findall(r"\d+", expression)) == 2 for expression in expressions)


def test_a_preset_description_lists_every_option_it_is_generated_with():
    for name, preset in PRESETS.items():
        for key, value in preset.options.items():
            assert f"{key}={value!r}" in preset.description, (name, key)
    assert "no parentheses, no negation" in PRESETS["arithmetic"].description


def test_any_reasoning_gym_task_and_its_option_errors():
    problems = load_problems("reasoning_gym:basic_arithmetic", size=3, seed=1, options={"max_terms": 3})
    assert len(problems) == 3
    with pytest.raises(DataError, match="reasoning-gym task no_such_task"):
        load_problems("reasoning_gym:no_such_task", size=3)
    with pytest.raises(DataError, match="reasoning-gym task basic_arithmetic"):
        load_problems("reasoning_gym:basic_arithmetic", size=3, options={"no_such_option": 1})


def test_limit_keeps_the_first_problems():
    assert [problem.id for problem in load_problems("arithmetic", size=10, limit=3)] == [
        "basic_arithmetic/0/0", "basic_arithmetic/0/1", "basic_arithmetic/0/2"]


def test_offset_leaves_out_the_first_problems_so_a_dev_split_and_training_never_overlap():
    everything = [problem.id for problem in load_problems("arithmetic", size=10)]
    dev = [problem.id for problem in load_problems("arithmetic", size=10, limit=3)]
    training = [problem.id for problem in load_problems("arithmetic", size=10, offset=3)]
    assert dev + training == everything
    assert [problem.id for problem in load_problems("arithmetic", size=10, offset=3, limit=2)] == everything[3:5]
    with pytest.raises(DataError, match="field 'offset': must be 0 or more"):
        load_problems("arithmetic", size=10, offset=-1)


def test_settings_errors_name_the_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("RFTT_DATA", raising=False)
    with pytest.raises(DataError, match="field 'name': unknown dataset"):
        load_problems("gsm9k")
    with pytest.raises(DataError, match="field 'size': not used by benchmark datasets"):
        load_problems("gsm8k", path=str(tmp_path), size=3)
    with pytest.raises(DataError, match="field 'colour': unknown setting"):
        load_problems("arithmetic", colour="red")
    with pytest.raises(DataError, match="field 'path': no data location"):
        load_problems("gsm8k")
    with pytest.raises(DataError, match="field 'split': unknown split 'dev'"):
        load_problems("gsm8k", path=str(tmp_path), split="dev")
    with pytest.raises(DataError, match="no such file"):
        load_problems("gsm8k", path=str(tmp_path))


def test_data_folder_from_the_environment(tmp_path, monkeypatch):
    (tmp_path / "gsm8k").mkdir()
    write_jsonl(tmp_path / "gsm8k" / "test.jsonl", [GSM8K_ROW])
    monkeypatch.setenv("RFTT_DATA", str(tmp_path))
    assert [problem.answer for problem in load_problems("gsm8k")] == ["5"]
