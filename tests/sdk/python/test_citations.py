"""Grounded answers through the Cohere Python SDK (cohere==7.3.1, `ClientV2`): documents and tool
results as sources, citations in `chat()` and as `citation-start`/`citation-end` events in
`chat_stream()`, the citation modes, and the requests Cohere refuses (issue 13).

The facts are invented (Zorblatt, Quenmoor) so the model can only answer from the documents;
requests are greedy with a fixed seed, so a streamed reply and its non-stream twin are the same
reply and must carry the same citations.
"""

import json
import re

import cohere
import pytest
from cohere.core.api_error import ApiError

from conftest import MODEL

ANSWER_DOC = "The capital of Zorblatt is Quenmoor, a city of 40,000 people."
PORTS = {
    "title": "Ports of Zorblatt",
    "snippet": "The largest port of Zorblatt is Dravik, on the eastern coast.",
}
VELMORA = {
    "title": "Velmora",
    "snippet": "The capital of Velmora is Tarnwen, which lies on a river delta.",
}
# A string, an object with an id and an object without one: ids are the given one or `doc:<n>`
# by position.
DOCUMENTS = [ANSWER_DOC, {"id": "ports", "data": PORTS}, {"data": VELMORA}]
# What each source's `document` must be: the document's fields with its id.
CITED_DOCUMENTS = {
    "doc:0": {"id": "doc:0", "text": ANSWER_DOC},
    "ports": {"id": "ports", **PORTS},
    "doc:2": {"id": "doc:2", **VELMORA},
}
KNOWN_DOCUMENTS = {i: " ".join(d.values()) for i, d in CITED_DOCUMENTS.items()}
QUESTION = [{"role": "user", "content": "What is the capital of Zorblatt?"}]
GROUNDED = dict(messages=QUESTION, documents=DOCUMENTS, temperature=0.0, seed=7, max_tokens=48)
# Citation markup a model or a template could leave in the text: Command's `<co: 0>...</co: 0>`
# (and `<co>`), bracketed or bare document ids, tool-result ids.
MARKUP = re.compile(r"</?co\b|<co:|\[\s*doc|\bdoc:\d|\bcall_1\b")
STOP_WORDS = {"the", "and", "for", "are", "was", "with", "that", "this", "from", "which", "its"}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WEATHER = {"city": "Quenmoor", "forecast": "sunny, 23 degrees"}
WEATHER_QUESTION = {"role": "user", "content": "What is the weather forecast for Quenmoor?"}
# Asked again after the result: without it the 135M model repeats the assistant's plan.
FOLLOW_UP = {"role": "user", "content": "So what is the forecast?"}
WEATHER_CALL = {
    "role": "assistant",
    "tool_plan": "I will look up the weather forecast for Quenmoor.",
    "tool_calls": [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Quenmoor"})},
        }
    ],
}
# The tool result in the forms Cohere documents: a document block whose data is a JSON string
# (the docs' own form), and a text block.
TOOL_RESULTS = {
    "document": [{"type": "document", "document": {"data": json.dumps(WEATHER)}}],
    "text": [{"type": "text", "text": json.dumps(WEATHER)}],
}


def tool_history(form):
    return [
        WEATHER_QUESTION,
        WEATHER_CALL,
        {"role": "tool", "tool_call_id": "call_1", "content": TOOL_RESULTS[form]},
        FOLLOW_UP,
    ]


TOOL_ANSWER = dict(tools=[WEATHER_TOOL], tool_choice="NONE", temperature=0.0, seed=7, max_tokens=40)


def words(text):
    return re.findall(r"[^\W_]+", text.lower())


def content_words(text):
    return [w for w in words(text) if len(w) >= 3 and w not in STOP_WORDS]


def text_blocks(message):
    """{content index: text} of the message's text blocks."""
    return {i: block.text for i, block in enumerate(message.content or []) if block.type == "text"}


def key(citation):
    """What a citation says, comparable across chat() and chat_stream()."""
    return (
        citation.content_index,
        citation.start,
        citation.end,
        citation.text,
        citation.type,
        tuple(s.id for s in citation.sources),
    )


def check_citations(citations, texts, source_kind, known_ids, quotes):
    """Each citation is a span of its text block (code points, Python indexing) with the
    documented type and non-empty sources of the right kind whose ids came from the request.
    `quotes`: every content word of the cited text is in its sources' text (FAST's spans are
    quotes by construction); else it shares at least one with them (ACCURATE may attribute a
    paraphrase, and its precision is measured by tests/eval/grounding)."""
    for c in citations:
        assert isinstance(c, cohere.Citation)
        assert c.type == "TEXT_CONTENT", c
        assert c.content_index in texts, (c.content_index, texts)
        block = texts[c.content_index]
        assert 0 <= c.start < c.end <= len(block), c
        assert block[c.start : c.end] == c.text, (c, block)
        assert c.sources, c
        for s in c.sources:
            assert isinstance(s, source_kind), s
            assert s.id in known_ids, (s.id, known_ids)
        cited = " ".join(known_ids[s.id] for s in c.sources)
        missing = [w for w in content_words(c.text) if w not in words(cited)]
        if quotes:
            assert not missing, f"{c.text!r} cites {[s.id for s in c.sources]} without {missing}"
        else:
            assert len(missing) < len(content_words(c.text)), (
                f"{c.text!r} shares nothing with {cited!r}"
            )


def stream(co, **request):
    """The stream's events, its text per content block, and its citations, checking the order:
    each citation-start holds one Citation, has the next index, comes after the text it covers
    and before its block's content-end, and is closed by its citation-end before the next one."""
    events = list(co.chat_stream(model=MODEL, **request))
    assert events[0].type == "message-start" and events[-1].type == "message-end"
    texts, ended, citations, open_citation = {}, set(), [], None
    for e in events:
        if e.type == "content-start":
            texts[e.index] = ""
        elif e.type == "content-delta":
            assert e.index not in ended
            assert not MARKUP.search(e.delta.message.content.text), e
            texts[e.index] += e.delta.message.content.text
        elif e.type == "content-end":
            assert open_citation is None, "content-end inside a citation"
            ended.add(e.index)
        elif e.type == "citation-start":
            assert open_citation is None, "citation-start before the previous citation-end"
            assert e.index == len(citations), (e.index, len(citations))
            citation = e.delta.message.citations
            assert isinstance(citation, cohere.Citation), citation  # one object, not a list
            block = citation.content_index
            assert block in texts and block not in ended, "citation outside its open text block"
            assert citation.end <= len(texts[block]), "citation before the text it covers"
            citations.append(citation)
            open_citation = e.index
        elif e.type == "citation-end":
            assert e.index == open_citation, (e.index, open_citation)
            open_citation = None
    assert open_citation is None
    assert set(texts) == ended
    return events, texts, citations


def assert_no_markup(texts):
    for text in texts.values():
        assert not MARKUP.search(text), text


# ---------------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------------


def test_chat_with_documents_cites_the_document_that_holds_the_answer(co):
    response = co.chat(model=MODEL, **GROUNDED)
    texts = text_blocks(response.message)
    assert list(texts) == [0], response.message.content
    assert "Quenmoor" in texts[0], texts  # the documents reached the prompt
    citations = response.message.citations
    assert citations, f"no citations for {texts[0]!r}"
    check_citations(citations, texts, cohere.DocumentSource, KNOWN_DOCUMENTS, quotes=False)
    for c in citations:
        for s in c.sources:
            assert s.document == CITED_DOCUMENTS[s.id], s
    # The answer is cited, to the document that holds it, and that document holds the citation.
    answer = [c for c in citations if "Quenmoor" in c.text]
    assert answer and all("doc:0" in [s.id for s in c.sources] for c in answer), citations
    check_citations(answer, texts, cohere.DocumentSource, {"doc:0": ANSWER_DOC}, quotes=True)
    assert_no_markup(texts)
    # In order and not overlapping.
    spans = [(c.start, c.end) for c in citations]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans


@pytest.mark.parametrize("mode", ["ACCURATE", "FAST"])
def test_stream_citations_follow_their_text_and_equal_the_non_stream_ones(co, mode):
    request = dict(GROUNDED, citation_options={"mode": mode})
    response = co.chat(model=MODEL, **request)
    assert response.message.citations, mode
    events, texts, citations = stream(co, **request)
    assert texts == text_blocks(response.message)
    assert [key(c) for c in citations] == [key(c) for c in response.message.citations]
    for streamed, whole in zip(citations, response.message.citations):
        assert [s.document for s in streamed.sources] == [s.document for s in whole.sources]
    # Citation events sit between the first delta and the content-end of their block.
    types = [e.type for e in events]
    first_cite = types.index("citation-start")
    assert types.index("content-delta") < first_cite
    assert max(i for i, t in enumerate(types) if t == "citation-end") < types.index("content-end")
    assert events[-1].delta.finish_reason == response.finish_reason


# ---------------------------------------------------------------------------------------------
# Tool results
# ---------------------------------------------------------------------------------------------


def check_tool_citations(citations, texts, quotes):
    assert citations, f"no citations for {texts}"
    result = {"call_1:0": json.dumps(WEATHER)}
    check_citations(citations, texts, cohere.ToolSource, result, quotes)
    for c in citations:
        for s in c.sources:
            assert s.type == "tool"
            assert isinstance(s.tool_output, dict) and s.tool_output, s
            # The tool's output as a dict: its keys, or the JSON text of the result.
            shown = json.dumps(s.tool_output)
            assert "sunny" in shown and "Quenmoor" in shown, s.tool_output
    # The forecast the answer quotes is cited, and is in the result.
    forecast = [c for c in citations if "sunny" in c.text.lower()]
    assert forecast, citations
    check_citations(forecast, texts, cohere.ToolSource, result, quotes=True)
    assert_no_markup(texts)


@pytest.mark.parametrize("form", sorted(TOOL_RESULTS))
def test_chat_cites_tool_results(co, form):
    response = co.chat(model=MODEL, messages=tool_history(form), **TOOL_ANSWER)
    assert not response.message.tool_calls
    texts = text_blocks(response.message)
    assert "sunny" in texts[0].lower(), texts  # the answer quotes the tool result
    check_tool_citations(response.message.citations, texts, quotes=False)


def test_chat_stream_cites_tool_results_like_chat(co):
    request = dict(
        messages=tool_history("document"), citation_options={"mode": "FAST"}, **TOOL_ANSWER
    )
    response = co.chat(model=MODEL, **request)
    events, texts, citations = stream(co, **request)
    assert not any(e.type.startswith("tool-call") for e in events)
    assert texts == text_blocks(response.message)
    check_tool_citations(citations, texts, quotes=True)
    assert [key(c) for c in citations] == [key(c) for c in response.message.citations]
    assert [s.tool_output for c in citations for s in c.sources] == [
        s.tool_output for c in response.message.citations for s in c.sources
    ]


# ---------------------------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------------------------


def test_off_mode_gives_no_citations_and_no_events_and_the_same_text_as_fast(co):
    fast = co.chat(model=MODEL, **GROUNDED, citation_options={"mode": "FAST"})
    assert fast.message.citations, text_blocks(fast.message)
    for mode in ("OFF", "disabled"):  # DISABLED is OFF's other name; modes ignore case
        off = co.chat(model=MODEL, **GROUNDED, citation_options={"mode": mode})
        assert not off.message.citations, (mode, off.message.citations)
        # FAST aligns the reply with its sources after the fact: the text is the same reply.
        assert text_blocks(off.message) == text_blocks(fast.message)
    events, texts, citations = stream(co, **GROUNDED, citation_options={"mode": "OFF"})
    assert not citations
    assert not [e.type for e in events if e.type.startswith("citation")]
    assert texts == text_blocks(fast.message)


def test_fast_mode_in_lower_case_cites(co):
    response = co.chat(model=MODEL, **GROUNDED, citation_options={"mode": "fast"})
    assert response.message.citations
    texts = text_blocks(response.message)
    check_citations(
        response.message.citations, texts, cohere.DocumentSource, KNOWN_DOCUMENTS, quotes=True
    )


# ---------------------------------------------------------------------------------------------
# Requests Cohere refuses: 400 in the {id, message} shape, naming the problem
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, named",
    [
        (
            {"documents": [{"id": "a", "data": {"text": "x"}}, {"id": "a", "data": {"text": "y"}}]},
            "duplicate",
        ),
        ({"documents": ["x"], "citation_options": {"mode": "SOMETIMES"}}, "citation_options.mode"),
        ({"documents": ["x"], "response_format": {"type": "json_object"}}, "response_format"),
        ({"documents": ["x", 7]}, "documents[1]"),
        ({"documents": [{"data": [1, 2]}]}, "documents[0].data"),
    ],
    ids=["duplicate-ids", "unknown-mode", "response-format", "not-a-document", "data-not-object"],
)
def test_bad_grounding_requests_are_bad_requests(co, extra, named):
    with pytest.raises(ApiError) as caught:
        co.chat(model=MODEL, messages=QUESTION, max_tokens=8, **extra)
    err = caught.value
    assert isinstance(err, cohere.BadRequestError), type(err)
    assert err.status_code == 400
    assert isinstance(err.body, dict) and set(err.body) == {"id", "message"}, err.body
    assert named in err.body["message"], err.body
