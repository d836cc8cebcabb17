"""Functional tokens: vocabulary, embedding initialisation, grammar, rendering and parsing."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from rftt.tokens import (
    FUNCTIONAL_TOKENS_FILE,
    LEGAL_NEXT_MOVES,
    FunctionalTokenError,
    FunctionalTokens,
    Move,
    Step,
    TextTags,
    add_functional_tokens,
    first_illegal_step,
    is_legal_trace,
    legal_next_moves,
    load_step_tags,
    moves_of,
    parse_move,
    parse_steps,
    render_steps,
    save_step_tags,
)
from rftt.tokens.vocabulary import closing_init_text, opening_init_text

from conftest import build_tiny_model

ALL_TAGS = [tag for move in Move for tag in (move.opening_tag, move.closing_tag)]


# --- vocabulary ---------------------------------------------------------------------------------


def test_every_functional_token_encodes_to_one_id(tiny_model, tiny_tokenizer):
    assert len(tiny_tokenizer.encode("<analyze>", add_special_tokens=False)) > 1
    tokens = add_functional_tokens(tiny_model, tiny_tokenizer)
    ids = [tiny_tokenizer.encode(tag, add_special_tokens=False) for tag in ALL_TAGS]
    assert all(len(token_ids) == 1 for token_ids in ids)
    assert len({token_ids[0] for token_ids in ids}) == 16
    assert sorted(tokens.all_ids) == sorted(token_ids[0] for token_ids in ids)


def test_tags_stay_single_ids_inside_running_text(tiny_model, tiny_tokenizer):
    tokens = add_functional_tokens(tiny_model, tiny_tokenizer)
    ids = tiny_tokenizer.encode("the answer<output>\\boxed{47}</output>done", add_special_tokens=False)
    assert tokens.opening_ids[Move.OUTPUT] in ids and tokens.closing_ids[Move.OUTPUT] in ids


def test_embeddings_grow_to_the_new_vocabulary(tiny_model, tiny_tokenizer):
    size_before = len(tiny_tokenizer)
    add_functional_tokens(tiny_model, tiny_tokenizer)
    assert len(tiny_tokenizer) == size_before + 16
    assert tiny_model.get_input_embeddings().num_embeddings == len(tiny_tokenizer)
    assert tiny_model.get_output_embeddings().weight.shape[0] == len(tiny_tokenizer)


def test_spare_padded_rows_are_used_before_resizing(tiny_tokenizer):
    model = build_tiny_model(len(tiny_tokenizer), padded_rows=20)
    rows_before = model.get_input_embeddings().num_embeddings
    tokens = add_functional_tokens(model, tiny_tokenizer)
    assert model.get_input_embeddings().num_embeddings == rows_before
    assert max(tokens.all_ids) < rows_before


def _word_mean(matrix: torch.Tensor, tokenizer, words: str) -> torch.Tensor:
    return matrix[tokenizer.encode(words, add_special_tokens=False)].mean(dim=0)


@pytest.mark.parametrize("tied", [True, False])
def test_embedding_rows_start_at_the_mean_of_the_move_words(tiny_tokenizer, tied):
    model = build_tiny_model(len(tiny_tokenizer), tied=tied)
    tokens = add_functional_tokens(model, tiny_tokenizer)
    matrices = [model.get_input_embeddings().weight]
    if not tied:
        matrices.append(model.get_output_embeddings().weight)
        assert matrices[0].data_ptr() != matrices[1].data_ptr()
    for matrix in matrices:
        for move in Move:
            opening = matrix[tokens.opening_ids[move]]
            closing = matrix[tokens.closing_ids[move]]
            torch.testing.assert_close(opening, _word_mean(matrix, tiny_tokenizer, opening_init_text(move)))
            torch.testing.assert_close(closing, _word_mean(matrix, tiny_tokenizer, closing_init_text(move)))
            assert not torch.allclose(opening, closing)


def test_adding_twice_keeps_ids_and_rows(tiny_model, tiny_tokenizer):
    first = add_functional_tokens(tiny_model, tiny_tokenizer)
    with torch.no_grad():
        tiny_model.get_input_embeddings().weight[first.opening_ids[Move.VERIFY]] = 1.0
    second = add_functional_tokens(tiny_model, tiny_tokenizer)
    assert first == second
    assert torch.all(tiny_model.get_input_embeddings().weight[first.opening_ids[Move.VERIFY]] == 1.0)


def test_ids_survive_save_and_load(tmp_path, tiny_model, tiny_tokenizer):
    tokens = add_functional_tokens(tiny_model, tiny_tokenizer)
    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    save_step_tags(tmp_path, tokens)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    reloaded_model = LlamaForCausalLM.from_pretrained(tmp_path)
    assert load_step_tags(tmp_path, reloaded_tokenizer) == tokens
    assert FunctionalTokens.from_tokenizer(reloaded_tokenizer) == tokens
    for token_id in tokens.all_ids:
        torch.testing.assert_close(
            reloaded_model.get_input_embeddings().weight[token_id], tiny_model.get_input_embeddings().weight[token_id]
        )


def test_load_rejects_ids_that_differ_from_the_record(tmp_path, tiny_model, tiny_tokenizer):
    tokens = add_functional_tokens(tiny_model, tiny_tokenizer)
    record = tokens.to_json()
    record["moves"]["verify"]["opening_id"] += 1
    (tmp_path / FUNCTIONAL_TOKENS_FILE).write_text(json.dumps(record))
    with pytest.raises(FunctionalTokenError, match="moves.verify"):
        load_step_tags(tmp_path, tiny_tokenizer)


def test_checkpoint_without_record_has_no_functional_tokens(tmp_path, tiny_tokenizer):
    assert load_step_tags(tmp_path, tiny_tokenizer) is None


def test_reading_ids_from_a_tokenizer_without_the_tokens_explains_the_fix(tiny_tokenizer):
    with pytest.raises(FunctionalTokenError, match="add_functional_tokens"):
        FunctionalTokens.from_tokenizer(tiny_tokenizer)


def test_tokenizer_only_addition(tiny_tokenizer):
    tokens = add_functional_tokens(None, tiny_tokenizer, [Move.ANALYZE, Move.OUTPUT])
    assert tokens.moves == (Move.ANALYZE, Move.OUTPUT)
    assert len(tiny_tokenizer.encode("<verify>", add_special_tokens=False)) > 1


# --- grammar ------------------------------------------------------------------------------------


def test_grammar_matches_the_released_table():
    assert set(legal_next_moves(None)) == {Move.CLARIFY, Move.SUBQUESTION, Move.ANALYZE, Move.NEXT_STEP}
    assert set(legal_next_moves(Move.SUBQUESTION)) == {Move.NEXT_STEP, Move.DIRECT_ANSWER}
    assert set(legal_next_moves(Move.DIRECT_ANSWER)) == {Move.OUTPUT, Move.VERIFY}
    assert Move.REFINE in legal_next_moves(Move.VERIFY) and Move.REFINE not in legal_next_moves(Move.NEXT_STEP)
    assert legal_next_moves(Move.OUTPUT) == ()
    assert set(LEGAL_NEXT_MOVES) == {None, *Move}


def test_output_is_reachable_from_every_move_but_is_never_first():
    assert Move.OUTPUT not in legal_next_moves(None)
    for move in Move:
        if move is not Move.OUTPUT:
            reachable, frontier = set(), [move]
            while frontier:
                for following in legal_next_moves(frontier.pop()):
                    if following not in reachable:
                        reachable.add(following)
                        frontier.append(following)
            assert Move.OUTPUT in reachable, move


def test_legal_and_illegal_traces():
    legal = [Move.CLARIFY, Move.ANALYZE, Move.NEXT_STEP, Move.VERIFY, Move.REFINE, Move.NEXT_STEP, Move.OUTPUT]
    assert is_legal_trace(legal, require_terminal=True)
    assert first_illegal_step(legal) is None
    assert first_illegal_step([Move.OUTPUT]) == 0
    assert first_illegal_step([Move.ANALYZE, Move.CLARIFY]) == 1
    assert first_illegal_step([Move.NEXT_STEP, Move.OUTPUT, Move.NEXT_STEP]) == 2
    assert is_legal_trace([Move.NEXT_STEP]) and not is_legal_trace([Move.NEXT_STEP], require_terminal=True)
    assert not is_legal_trace([], require_terminal=True)


@pytest.mark.parametrize("name", ["analyze", "<analyze>", "</analyze>", "Next Step", "next_step"])
def test_parse_move_accepts_common_spellings(name):
    assert parse_move(name) in (Move.ANALYZE, Move.NEXT_STEP)


def test_parse_move_rejects_unknown_names():
    with pytest.raises(ValueError, match="valid moves: clarify"):
        parse_move("<analysis>")


# --- render and parse ---------------------------------------------------------------------------

TRACE = [
    Step(Move.CLARIFY, "We need 12 + 35."),
    Step(Move.ANALYZE, " Add the tens, then the ones.\n"),
    Step(Move.NEXT_STEP, "10 + 30 = 40 and 2 + 5 = 7"),
    Step(Move.VERIFY, ""),
    Step(Move.OUTPUT, "\\boxed{47}"),
]


def test_render_writes_each_step_between_its_tags():
    text = render_steps(TRACE[:2])
    assert text == "<clarify>We need 12 + 35.</clarify><analyze> Add the tens, then the ones.\n</analyze>"


def test_parse_of_render_is_identity():
    assert parse_steps(render_steps(TRACE)) == TRACE
    unclosed = [*TRACE[:-1], Step(Move.OUTPUT, "\\boxed{4", closed=False)]
    assert parse_steps(render_steps(unclosed)) == unclosed


def test_parse_token_ids_of_render_is_identity(tiny_model, tiny_tokenizer):
    tokens = add_functional_tokens(tiny_model, tiny_tokenizer)
    ids = tiny_tokenizer.encode(render_steps(TRACE), add_special_tokens=False)
    assert tokens.parse_token_ids(ids, tiny_tokenizer) == TRACE


def test_step_spans_locate_the_closing_tokens(tiny_model, tiny_tokenizer):
    tokens = add_functional_tokens(tiny_model, tiny_tokenizer)
    ids = tiny_tokenizer.encode(render_steps(TRACE), add_special_tokens=False)
    spans = tokens.step_spans(ids)
    assert moves_of(TRACE) == [span.move for span in spans]
    for span in spans:
        assert ids[span.open_index] == tokens.opening_ids[span.move]
        assert ids[span.close_index] == tokens.closing_ids[span.move]
        assert list(span.content) == ids[span.open_index + 1 : span.close_index]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("no tags at all", []),
        ("<analyze>open to the end", [Step(Move.ANALYZE, "open to the end", closed=False)]),
        (
            "<analyze>cut short<next_step>1 + 1 = 2</next_step>",
            [Step(Move.ANALYZE, "cut short", closed=False), Step(Move.NEXT_STEP, "1 + 1 = 2")],
        ),
        ("<analyze>wrong close</verify>after", [Step(Move.ANALYZE, "wrong close", closed=False)]),
        ("</output>stray<clarify>x</clarify>", [Step(Move.CLARIFY, "x")]),
        ("preamble <clarify>x</clarify> between <output>5</output>", [Step(Move.CLARIFY, "x"), Step(Move.OUTPUT, "5")]),
        ("<analysis>not a move</analysis>", []),
        ("<clarify><clarify>y</clarify>", [Step(Move.CLARIFY, "", closed=False), Step(Move.CLARIFY, "y")]),
        ("<output>a < b and c > d</output>", [Step(Move.OUTPUT, "a < b and c > d")]),
    ],
    ids=["empty", "plain", "unclosed", "cut-by-next", "wrong-close", "stray-close", "outside-text",
         "unknown-tag", "double-open", "angle-brackets"],
)
def test_parse_malformed_traces(text, expected):
    assert parse_steps(text) == expected


def test_parse_token_ids_of_a_truncated_generation(tiny_model, tiny_tokenizer):
    tokens = add_functional_tokens(tiny_model, tiny_tokenizer)
    ids = tiny_tokenizer.encode(render_steps(TRACE), add_special_tokens=False)[:-3]
    steps = tokens.parse_token_ids(ids, tiny_tokenizer)
    assert moves_of(steps) == moves_of(TRACE)
    assert steps[-1].closed is False and all(step.closed for step in steps[:-1])


# --- text tags (the --no-functional-tokens ablation) --------------------------------------------

TEXT_TRACE = "<analyze>First the bracket.</analyze><next_step>5 - 11 = -6.</next_step><output>\\boxed{-6}</output>"


def test_text_tags_encode_a_trace_tag_by_tag_and_find_its_steps_again(tiny_tokenizer):
    tags = TextTags.from_tokenizer(tiny_tokenizer)
    ids = tags.encode_trace(TEXT_TRACE, tiny_tokenizer)
    assert tiny_tokenizer.decode(ids) == TEXT_TRACE
    assert ids[: len(tags.opening(Move.ANALYZE))] == tags.opening(Move.ANALYZE)
    spans = tags.step_spans(ids)
    expected = parse_steps(TEXT_TRACE)
    assert [span.move for span in spans] == [step.move for step in expected]
    assert [tiny_tokenizer.decode(list(span.content)) for span in spans] == [step.content for step in expected]
    assert spans[-1].close_index == len(ids) - 1  # the last token of `</output>`
    analyze_close = spans[0].close_index
    assert ids[analyze_close - len(tags.closing(Move.ANALYZE)) + 1 : analyze_close + 1] == tags.closing(Move.ANALYZE)
    assert len(tags.opening(Move.VERIFY)) > 1 and tags.stops()["stop"][0] == "<clarify>"


def test_text_tag_spans_report_an_unclosed_step(tiny_tokenizer):
    tags = TextTags.from_tokenizer(tiny_tokenizer)
    spans = tags.step_spans(tags.encode_trace("<next_step>5 - 11<output>\\boxed{1}", tiny_tokenizer))
    assert [(span.move, span.closed) for span in spans] == [(Move.NEXT_STEP, False), (Move.OUTPUT, False)]


def test_text_tag_logprobs_are_the_sum_over_the_tags_tokens(tiny_model, tiny_tokenizer):
    from rftt.engine import make_engine

    tiny_model.eval()
    engine = make_engine("hf", model=tiny_model, tokenizer=tiny_tokenizer)
    tags = TextTags.from_tokenizer(tiny_tokenizer)
    prefixes = [tiny_tokenizer.encode("the answer is", add_special_tokens=False), tiny_tokenizer.encode("12 +")]
    moves = [Move.VERIFY, Move.NEXT_STEP, Move.OUTPUT]
    scores = tags.opening_logprobs(engine.next_token_logprobs, prefixes, moves)
    for prefix, row in zip(prefixes, scores):
        for move, score in zip(moves, row):
            tag = tags.opening(move)
            with torch.no_grad():
                logits = tiny_model(torch.tensor([prefix + tag])).logits[0].float()
            expected = sum(torch.log_softmax(logits[len(prefix) - 1 + index], dim=-1)[token].item()
                           for index, token in enumerate(tag))
            assert score == pytest.approx(expected, abs=1e-4)


def test_text_tags_survive_save_and_load_and_clash_with_tag_tokens(tmp_path, tiny_model, tiny_tokenizer):
    tags = TextTags.from_tokenizer(tiny_tokenizer)
    save_step_tags(tmp_path, tags)
    assert json.loads((tmp_path / FUNCTIONAL_TOKENS_FILE).read_text())["kind"] == "text"
    assert load_step_tags(tmp_path, tiny_tokenizer) == tags
    add_functional_tokens(tiny_model, tiny_tokenizer)
    with pytest.raises(FunctionalTokenError, match="field kind"):
        load_step_tags(tmp_path, tiny_tokenizer)
