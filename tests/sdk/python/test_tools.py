"""Tool use and structured output through the Cohere Python SDK (cohere==7.3.1, `ClientV2`).

A full tool round trip the way a user writes it: the model calls a tool (`tool_choice="REQUIRED"`,
`strict_tools=True`), the client runs it and sends the result back as a `tool` message next to
the assistant message it got, and the model answers in text. Both legs run once with `chat()`
and once with `chat_stream()`, where the calls are rebuilt from the tool-call events. Plus
`response_format` with a JSON schema, validated with jsonschema_rs.
"""

import json
import re

import cohere
import jsonschema_rs

from conftest import MODEL

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city"],
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": WEATHER_PARAMETERS,
        },
    }
]
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
CALL = dict(tools=TOOLS, tool_choice="REQUIRED", strict_tools=True, temperature=0.0, max_tokens=120)
ANSWER = dict(tools=TOOLS, tool_choice="NONE", temperature=0.0, max_tokens=40)
CALL_ID = re.compile(r"^get_weather_[a-z0-9]{12}$")
MARKUP = ("<tool_calls>", "</tool_calls>", '"arguments"')


def get_weather(city, unit="celsius"):
    """The client-side tool: what a user's code would run for each call."""
    return {"city": city, "temperature": 17 if unit == "celsius" else 63, "unit": unit}


def check_calls(calls):
    """Each call names the defined tool, has a well-formed unique id, and its arguments are a
    JSON string that validates against the tool's schema. Returns [(name, arguments dict)]."""
    assert calls, "no tool call"
    validator = jsonschema_rs.validator_for(WEATHER_PARAMETERS)
    parsed = []
    for call in calls:
        assert call["type"] == "function"
        assert CALL_ID.match(call["id"]), call["id"]
        assert call["name"] == "get_weather"
        arguments = json.loads(call["arguments"])
        assert validator.is_valid(arguments), call["arguments"]
        parsed.append((call["name"], arguments))
    assert len({c["id"] for c in calls}) == len(calls)
    return parsed


def from_response(tool_calls):
    return [
        {"id": c.id, "type": c.type, "name": c.function.name, "arguments": c.function.arguments}
        for c in tool_calls
    ]


def tool_messages(calls):
    """One `tool` message per call, its result as a document block (the form Cohere documents)."""
    return [
        {
            "role": "tool",
            "tool_call_id": call["id"],
            "content": [
                {
                    "type": "document",
                    "document": {"data": get_weather(**json.loads(call["arguments"]))},
                }
            ],
        }
        for call in calls
    ]


def assert_plain_answer(text):
    assert text.strip(), "empty final answer"
    for marker in MARKUP:
        assert marker not in text, text


def test_tool_round_trip_with_chat(co):
    first = co.chat(model=MODEL, messages=QUESTION, **CALL)
    assert first.finish_reason == "TOOL_CALL"
    assert not first.message.content
    calls = from_response(first.message.tool_calls)
    check_calls(calls)
    if first.message.tool_plan is not None:
        for marker in MARKUP:
            assert marker not in first.message.tool_plan

    # The assistant message goes back exactly as the SDK returned it.
    history = [*QUESTION, first.message, *tool_messages(calls)]
    final = co.chat(model=MODEL, messages=history, **ANSWER)
    assert final.finish_reason in ("COMPLETE", "MAX_TOKENS")
    assert not final.message.tool_calls
    assert [c.type for c in final.message.content] == ["text"]
    assert_plain_answer(final.message.content[0].text)
    # The tool result is part of the prompt: the second request is longer than the first by at
    # least the assistant's call and the tool message.
    assert final.usage.tokens.input_tokens > first.usage.tokens.input_tokens + 10


def test_tool_round_trip_with_chat_stream(co):
    events = list(co.chat_stream(model=MODEL, messages=QUESTION, **CALL))
    types = [e.type for e in events]
    assert types[0] == "message-start" and types[-1] == "message-end"
    assert "content-delta" not in types
    assert events[-1].delta.finish_reason == "TOOL_CALL"

    # Rebuild the calls from start/delta/end, checking each call's events are in order.
    calls, open_index, plan = [], None, ""
    for e in events[1:-1]:
        if e.type == "tool-plan-delta":
            assert not calls, "plan after a call"
            plan += e.delta.message.tool_plan
        elif e.type == "tool-call-start":
            assert open_index is None and e.index == len(calls)
            call = e.delta.message.tool_calls
            calls.append(
                {
                    "id": call.id,
                    "type": call.type,
                    "name": call.function.name,
                    "arguments": call.function.arguments or "",
                }
            )
            open_index = e.index
        elif e.type == "tool-call-delta":
            assert e.index == open_index
            calls[open_index]["arguments"] += e.delta.message.tool_calls.function.arguments
        elif e.type == "tool-call-end":
            assert e.index == open_index
            open_index = None
        else:
            raise AssertionError(f"unexpected event {e.type} in a tool-call stream: {types}")
    assert open_index is None
    for marker in MARKUP:
        assert marker not in plan
    streamed = check_calls(calls)

    # Greedy: the same request without streaming makes the same calls (ids are fresh each time).
    same = co.chat(model=MODEL, messages=QUESTION, **CALL)
    assert check_calls(from_response(same.message.tool_calls)) == streamed

    assistant = {
        "role": "assistant",
        "tool_calls": [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in calls
        ],
    }
    if plan:
        assistant["tool_plan"] = plan
    history = [*QUESTION, assistant, *tool_messages(calls)]
    answer_events = list(co.chat_stream(model=MODEL, messages=history, **ANSWER))
    answer_types = [e.type for e in answer_events]
    assert not any(t.startswith("tool-") for t in answer_types), answer_types
    assert answer_events[-1].delta.finish_reason in ("COMPLETE", "MAX_TOKENS")
    text = "".join(
        e.delta.message.content.text for e in answer_events if e.type == "content-delta"
    )
    assert_plain_answer(text)


def test_json_schema_replies_validate_through_the_sdk(co):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "city": {"type": "string", "enum": ["Paris", "Lima", "Oslo", "Other"]},
        },
        "required": ["name", "age", "city"],
    }
    validator = jsonschema_rs.validator_for(schema)
    for seed in range(4):
        response = co.chat(
            model=MODEL,
            messages=[{"role": "user", "content": "Invent a person. Answer in JSON."}],
            response_format={"type": "json_object", "json_schema": schema},
            temperature=1.0,
            seed=seed,
            max_tokens=80,
        )
        assert response.finish_reason == "COMPLETE"
        text = response.message.content[0].text
        assert validator.is_valid(json.loads(text)), text


def test_bad_schema_is_a_bad_request_through_the_sdk(co):
    try:
        co.chat(
            model=MODEL,
            messages=QUESTION,
            response_format={"type": "json_object", "json_schema": {"type": "array"}},
        )
    except cohere.BadRequestError as err:
        assert "schema" in err.body["message"], err.body
    else:
        raise AssertionError("a non-object schema was accepted")
