"""``ToolCallParser`` (Hermes ``<tool_call>`` blocks and bare calls, streamed in any cut), ``call_grammar``
and ``fold_tools``: no model needed."""

from __future__ import annotations

import itertools
import json

import pytest

from groupqwen.backends.tool_calls import ToolCallParser, call_grammar, fold_tools, instructions
from groupqwen.errors import BackendError, InvalidRequest
from groupqwen.messages import Message, Tool, ToolCall, ToolCallDelta, Tools

WEATHER = Tool(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = Tool("get_time", None, None)
TOOLS = Tools((WEATHER, TIME))


def _ids() -> object:
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def _parse(
    pieces: list[str], truncated: bool = False, tools: Tools = TOOLS
) -> tuple[str, list[ToolCallDelta], list[ToolCall]]:
    parser = ToolCallParser(tools, "m", new_id=_ids())  # type: ignore[arg-type]
    content, deltas = [], []
    for piece in pieces:
        text, found = parser.feed(piece)
        content.append(text)
        deltas.extend(found)
    text, found = parser.finish(truncated)
    content.append(text)
    deltas.extend(found)
    return "".join(content), deltas, parser.calls


def _cuts(text: str) -> list[list[str]]:
    """``text`` whole, one character at a time, and in every two-piece cut."""
    return [[text], list(text)] + [[text[:i], text[i:]] for i in range(1, len(text))]


def _assembled(deltas: list[ToolCallDelta]) -> list[tuple[str, str, str]]:
    calls: dict[int, list[str]] = {}
    for d in deltas:
        if d.id is not None:
            assert d.index not in calls and d.name is not None
            calls[d.index] = [d.id, d.name, d.arguments]
        else:
            assert d.name is None
            calls[d.index][2] += d.arguments
    return [(i, n, a) for i, n, a in (calls[k] for k in sorted(calls))]


BLOCK = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.mark.parametrize("pieces", _cuts("Let me check.\n" + BLOCK))
def test_a_block_in_any_cut_is_one_call_after_the_text(pieces: list[str]) -> None:
    content, deltas, calls = _parse(pieces)
    assert content == "Let me check."
    assert calls == [ToolCall("call_0", "get_weather", '{"city": "Paris"}')]
    assert _assembled(deltas) == [("call_0", "get_weather", '{"city": "Paris"}')]


def test_the_name_comes_first_and_arguments_stream_in_pieces() -> None:
    parser = ToolCallParser(TOOLS, "m", new_id=lambda: "call_x")
    assert parser.feed('<tool_call>\n{"name": "get_weather", "arguments": ') == (
        "",
        (ToolCallDelta(0, "call_x", "get_weather", ""),),
    )
    assert parser.feed('{"city": "Pa') == ("", (ToolCallDelta(0, arguments='{"city": "Pa'),))
    assert parser.feed('ris"}') == ("", (ToolCallDelta(0, arguments='ris"}'),))
    assert parser.feed("}\n</tool_call>") == ("", ())
    assert parser.calls == [ToolCall("call_x", "get_weather", '{"city": "Paris"}')]


@pytest.mark.parametrize("pieces", _cuts(BLOCK + "\n" + BLOCK.replace("Paris", "Oslo")))
def test_several_calls_get_their_own_index(pieces: list[str]) -> None:
    content, deltas, calls = _parse(pieces)
    assert content == ""
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    assert [d.index for d in deltas if d.id] == [0, 1]


def test_braces_and_quotes_inside_strings_do_not_end_the_arguments() -> None:
    args = '{"city": "a}b{\\"c\\"]", "n": [1, {"x": "}"}]}'
    text = f'<tool_call>{{"name": "get_weather", "arguments": {args}}}</tool_call>'
    for pieces in _cuts(text):
        _, deltas, calls = _parse(pieces)
        assert calls[0].arguments == args
        assert json.loads(_assembled(deltas)[0][2]) == json.loads(args)


def test_fields_in_another_order_are_read_whole() -> None:
    text = '<tool_call>{"arguments": {"city": "Rome"}, "name": "get_weather"}</tool_call>'
    for pieces in _cuts(text):
        _, deltas, calls = _parse(pieces)
        assert calls == [ToolCall("call_0", "get_weather", '{"city": "Rome"}')]
        assert _assembled(deltas) == [("call_0", "get_weather", '{"city": "Rome"}')]


def test_arguments_given_as_a_json_string_are_unwrapped() -> None:
    text = '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}</tool_call>'
    for pieces in _cuts(text):
        _, _, calls = _parse(pieces)
        assert calls == [ToolCall("call_0", "get_weather", '{"city": "Rome"}')]


def test_a_missing_close_tag_at_the_end_is_forgiven() -> None:
    _, _, calls = _parse(['<tool_call>\n{"name": "get_time", "arguments": {}}\n'])
    assert calls == [ToolCall("call_0", "get_time", "{}")]


@pytest.mark.parametrize("pieces", _cuts('  {"name": "get_weather", "arguments": {"city": "Paris"}}'))
def test_a_bare_object_that_is_the_whole_answer_is_a_call(pieces: list[str]) -> None:
    content, deltas, calls = _parse(pieces)
    assert content == ""
    assert calls == [ToolCall("call_0", "get_weather", '{"city": "Paris"}')]
    assert _assembled(deltas) == [("call_0", "get_weather", '{"city": "Paris"}')]


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "Ada", "arguments": {"age": 3}}',  # not an offered function
        '{"answer": 42}',
        "{}",
        'Text first {"name": "get_time", "arguments": {}}',
    ],
)
def test_json_that_is_not_a_call_stays_content(text: str) -> None:
    for pieces in _cuts(text):
        content, deltas, calls = _parse(pieces)
        assert (content, deltas, calls) == (text, [], [])


@pytest.mark.parametrize(
    "text",
    ["Hello, world!", "a < b and c <tool", "<tool_cal", "x\n\n  ", "<tool_calls> is not a tag"],
)
def test_plain_text_comes_through_unchanged(text: str) -> None:
    for pieces in _cuts(text):
        assert _parse(pieces) == (text, [], [])


def test_text_after_a_call_is_content_without_the_layout() -> None:
    content, _, calls = _parse([BLOCK + "\n\nDone."])
    assert content == "Done." and len(calls) == 1


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', "not among the request's tools"),
        ('<tool_call>{"name": "get_time", "arguments": [1]}</tool_call>', "not a JSON object"),
        ('<tool_call>{"name": "get_time", "arguments": {"a": }}</tool_call>', "not valid JSON"),
        ("<tool_call>not json</tool_call>", "not valid JSON"),
        ('<tool_call>{"name": "get_time"}</tool_call>', '"name" and "arguments"'),
        ('<tool_call>{"name": "get_time", "arguments": {}} extra</tool_call>', "unexpected text"),
        ('<tool_call>{"name": "get_time", "arguments": {"a": 1', "end before"),
        ('<tool_call>{"name": "get_time", "arguments": "nope"}</tool_call>', "string that is not JSON"),
    ],
)
def test_unusable_calls_are_a_clear_error(text: str, why: str) -> None:
    with pytest.raises(BackendError, match="model 'm' wrote a tool call that cannot be used") as info:
        _parse([text])
    assert why in info.value.message


def test_a_call_cut_by_max_tokens_keeps_what_was_streamed() -> None:
    content, deltas, calls = _parse(['<tool_call>{"name": "get_weather", "arguments": {"city": "Par'], True)
    assert content == ""
    assert _assembled(deltas) == [("call_0", "get_weather", '{"city": "Par')]
    assert calls[0].arguments == '{"city": "Par'


def test_a_block_cut_before_its_name_is_text() -> None:
    assert _parse(['<tool_call>{"na'], truncated=True) == ('<tool_call>{"na', [], [])


def test_ids_are_unique_by_default() -> None:
    parser = ToolCallParser(TOOLS, "m")
    parser.feed(BLOCK + BLOCK)
    ids = [c.id for c in parser.calls]
    assert len(set(ids)) == 2 and all(i.startswith("call_") and len(i) == 29 for i in ids)


def test_the_grammar_names_each_offered_function() -> None:
    grammar = call_grammar(TOOLS)
    assert grammar.startswith('root ::= "<tool_call>"')
    assert '("\\n" "<tool_call>"' in grammar  # parallel: more blocks may follow
    assert "get_weather" in grammar and "get_time" in grammar
    assert grammar.count("root ::=") == 1


def test_a_named_choice_and_no_parallel_calls_narrow_the_grammar() -> None:
    grammar = call_grammar(Tools((WEATHER, TIME), choice="named", name="get_time", parallel=False))
    assert "get_time" in grammar and "get_weather" not in grammar
    assert '("\\n" "<tool_call>"' not in grammar


def test_a_schema_llama_cpp_cannot_enforce_is_a_400() -> None:
    bad = Tool("f", None, {"$ref": "#/definitions/missing"})
    with pytest.raises(InvalidRequest) as info:
        call_grammar(Tools((bad,)))
    assert info.value.param == "tools"


def test_fold_tools_for_a_template_without_tools() -> None:
    messages = (
        Message("system", "Be brief."),
        Message("user", "Weather in Paris?"),
        Message("assistant", "", tool_calls=(ToolCall("c1", "get_weather", '{"city": "Paris"}'),)),
        Message("tool", "18 C", tool_call_id="c1"),
        Message("tool", "sunny", tool_call_id="c2"),
    )
    folded = fold_tools(messages, TOOLS)
    assert folded[0].role == "system"
    assert folded[0].content == "Be brief.\n\n" + instructions(TOOLS)
    assert '"name": "get_weather"' in folded[0].content and "<tools>" in folded[0].content
    assert folded[2] == Message(
        "assistant", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    assert folded[3] == Message(
        "user", "<tool_response>\n18 C\n</tool_response>\n<tool_response>\nsunny\n</tool_response>"
    )
    assert len(folded) == 4
    # with tool_choice none the model is not told about the tools, but the history still reads right
    assert fold_tools(messages, Tools((WEATHER,), choice="none"))[0] == Message("system", "Be brief.")


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{\n  "name": "get_weather",\n  "arguments": {"city": "Paris"}\n}\n```',
        '```\n{"name": "get_weather", "arguments": {"city": "Paris"}}```\n',
    ],
)
def test_a_bare_call_in_a_code_block_is_a_call(text: str) -> None:
    for pieces in _cuts(text):
        content, deltas, calls = _parse(pieces)
        assert content == ""
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
        assert json.loads(_assembled(deltas)[0][2]) == {"city": "Paris"}


def test_text_after_a_bare_call_is_kept() -> None:
    content, _, calls = _parse(['{"name": "get_time", "arguments": {}}\nThat is all.'])
    assert len(calls) == 1 and content == "That is all."


def test_a_code_block_that_is_not_a_call_stays_content() -> None:
    text = '```json\n{"a": 1}\n```'
    for pieces in _cuts(text):
        assert _parse(pieces) == (text, [], [])


def test_bare_calls_one_after_another_are_several_calls() -> None:
    text = '{"name": "get_time", "arguments": {}}\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
    for pieces in _cuts(text):
        content, deltas, calls = _parse(pieces)
        assert content == ""
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [
            ("get_time", {}),
            ("get_weather", {"city": "Oslo"}),
        ]
        assert [d.index for d in deltas if d.id] == [0, 1]


def test_without_parallel_calls_the_first_call_is_done() -> None:
    parser = ToolCallParser(Tools((WEATHER,), parallel=False), "m")
    parser.feed('<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}')
    assert not parser.done
    parser.feed("</tool_call>")
    assert parser.done
    assert not ToolCallParser(TOOLS, "m").done
