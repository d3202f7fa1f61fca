"""The Cohere Python SDK (cohere==7.3.1, `ClientV2`) against the real cohost binary.

Every test talks to the server only through the SDK, except where the point is what goes over
the wire (the raw stream's `data: [DONE]`, the nulls the SDK sends): those read the bytes with
httpx, the HTTP client the SDK itself uses.
"""

import http.server
import json
import threading
import time
import uuid

import cohere
import httpx
import pytest
from cohere.core.api_error import ApiError

from cohost_server import EMBED_MODEL_NAME
from conftest import MODEL, Server

HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]
GREEDY = {"temperature": 0.0, "max_tokens": 16}
STREAM_TYPES_PLAIN = ["message-start", "content-start", "content-delta", "content-end", "message-end"]


def text_of(response) -> str:
    assert response.message.role == "assistant"
    assert [c.type for c in response.message.content] == ["text"]
    return response.message.content[0].text


def collapse(types):
    """['a','b','b','c'] -> ['a','b','c'], to compare with the documented order."""
    out = []
    for t in types:
        if not out or out[-1] != t:
            out.append(t)
    return out


def stream_all(co, **kwargs):
    events = list(co.chat_stream(model=MODEL, **kwargs))
    text = "".join(e.delta.message.content.text for e in events if e.type == "content-delta")
    return events, text


def assert_error_body(err: ApiError, status: int):
    assert err.status_code == status
    assert isinstance(err.body, dict), err.body
    assert set(err.body) == {"id", "message"}, err.body
    assert isinstance(err.body["message"], str) and err.body["message"]
    uuid.UUID(err.body["id"])


class Recorder:
    """An httpx client for the SDK that remembers each request (method, path, headers, body)."""

    def __init__(self, timeout=120):
        self.requests = []
        self.client = httpx.Client(timeout=timeout, event_hooks={"request": [self._hook]})

    def _hook(self, request: httpx.Request):
        self.requests.append(
            (request.method, request.url.path, dict(request.headers), request.content)
        )


# ---------------------------------------------------------------------------------------------
# chat() and chat_stream()
# ---------------------------------------------------------------------------------------------


def test_chat_returns_id_finish_reason_text_and_usage(co):
    response = co.chat(model=MODEL, messages=HELLO, **GREEDY)
    uuid.UUID(response.id)
    assert response.finish_reason in ("COMPLETE", "MAX_TOKENS")
    assert text_of(response).strip()
    tokens, billed = response.usage.tokens, response.usage.billed_units
    assert isinstance(tokens.input_tokens, (int, float)) and tokens.input_tokens > 0
    assert 0 < tokens.output_tokens <= GREEDY["max_tokens"]
    assert (billed.input_tokens, billed.output_tokens) == (tokens.input_tokens, tokens.output_tokens)


def test_chat_stream_event_sequence_is_exactly_the_documented_one(co):
    events, text = stream_all(co, messages=HELLO, **GREEDY)
    types = [e.type for e in events]
    assert collapse(types) == STREAM_TYPES_PLAIN, types
    assert types.count("content-delta") >= 1
    start, content_start, end = events[0], events[1], events[-1]
    uuid.UUID(start.id)
    assert start.delta.message.role == "assistant"
    assert content_start.index == 0 and content_start.delta.message.content.type == "text"
    assert all(e.index == 0 for e in events if e.type in ("content-delta", "content-end"))
    assert end.delta.finish_reason in ("COMPLETE", "MAX_TOKENS")
    assert end.delta.usage.tokens.output_tokens > 0
    assert text.strip()


def test_stream_text_equals_non_stream_text_for_the_same_greedy_request(co):
    request = dict(messages=[{"role": "user", "content": "Name three colours."}], **GREEDY)
    response = co.chat(model=MODEL, **request)
    events, streamed = stream_all(co, **request)
    assert streamed == text_of(response)
    end = events[-1]
    assert end.delta.finish_reason == response.finish_reason
    assert end.delta.usage.tokens.output_tokens == response.usage.tokens.output_tokens
    assert end.delta.usage.tokens.input_tokens == response.usage.tokens.input_tokens


def test_the_skipped_event_guard_sees_the_sdks_warning(no_skipped_stream_events):
    """The guard every test runs under must be able to fail: a stream event the SDK cannot
    validate (logprobs without token_ids), served by a stand-in, is caught by it."""

    class BadStream(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            body = (
                'data: {"type":"message-start","id":"x","delta":{"message":{"role":"assistant"}}}\n\n'
                'data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"a"}}},'
                '"logprobs":{"text":"a"}}\n\n'
                "data: [DONE]\n\n"
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    stand_in = http.server.ThreadingHTTPServer(("127.0.0.1", 0), BadStream)
    threading.Thread(target=stand_in.serve_forever, daemon=True).start()
    try:
        co = cohere.ClientV2(api_key="", base_url=f"http://127.0.0.1:{stand_in.server_port}")
        events = list(co.chat_stream(model=MODEL, messages=HELLO))
    finally:
        stand_in.shutdown()
    assert [e.type for e in events] == ["message-start"]  # the delta was dropped
    messages = [r.getMessage() for r in no_skipped_stream_events.records]
    assert any("Skipping SSE event" in m for m in messages), messages
    no_skipped_stream_events.records.clear()


def test_raw_stream_is_sse_and_ends_with_done(base_url):
    body = {"model": MODEL, "messages": HELLO, "stream": True, **GREEDY}
    with httpx.stream("POST", f"{base_url}/v2/chat", json=body, timeout=120) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        raw = reply.read().decode()
    assert raw.endswith("data: [DONE]\n\n"), raw[-200:]
    frames = [f for f in raw.split("\n\n") if f and not f.startswith(":")]
    datas = []
    for frame in frames:
        lines = [line for line in frame.split("\n") if line.startswith("data:")]
        assert len(lines) == 1, f"one data line per event: {frame!r}"
        datas.append(lines[0][len("data:") :].strip())
    assert datas[-1] == "[DONE]" and datas.count("[DONE]") == 1
    types = [json.loads(d)["type"] for d in datas[:-1]]
    assert collapse(types) == STREAM_TYPES_PLAIN


# ---------------------------------------------------------------------------------------------
# Messages: system, history in both forms, assistant echoes
# ---------------------------------------------------------------------------------------------


def test_system_and_history_in_string_and_block_forms_are_the_same_chat(co):
    as_strings = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "What colour is the sky?"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And grass?"},
    ]
    as_blocks = [
        {"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in as_strings
    ]
    typed = [
        cohere.SystemChatMessageV2(content=as_strings[0]["content"]),
        cohere.UserChatMessageV2(content=as_strings[1]["content"]),
        cohere.AssistantChatMessageV2(content=as_strings[2]["content"]),
        cohere.UserChatMessageV2(content=as_strings[3]["content"]),
    ]
    replies = [co.chat(model=MODEL, messages=m, **GREEDY) for m in (as_strings, as_blocks, typed)]
    single_turn = co.chat(model=MODEL, messages=[as_strings[-1]], **GREEDY)
    first = replies[0]
    for other in replies[1:]:
        assert text_of(other) == text_of(first)
        assert other.usage.tokens.input_tokens == first.usage.tokens.input_tokens
    # The history really reached the prompt.
    assert first.usage.tokens.input_tokens > single_turn.usage.tokens.input_tokens


def test_assistant_turns_echoed_with_tool_calls_tool_plan_and_citations_are_accepted(co):
    call_id = "get_weather_p1t92w7gfgq7"
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "gets the weather of a given location",
                "parameters": {
                    "type": "object",
                    "properties": {"location": {"type": "string"}},
                    "required": ["location"],
                },
            },
        }
    ]
    as_dicts = [
        {"role": "user", "content": "What is the weather in Madrid?"},
        {
            "role": "assistant",
            "tool_plan": "I will look up the weather in Madrid.",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Madrid"}'},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": call_id,
            "content": [
                {"type": "text", "text": "24C"},
                {"type": "document", "document": {"data": {"temperature": "24C"}, "id": "w1"}},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "It is 24C in Madrid."}],
            "citations": [
                {
                    "start": 9,
                    "end": 12,
                    "text": "24C",
                    "type": "TEXT_CONTENT",
                    "content_index": 0,
                    "sources": [
                        {"type": "tool", "id": f"{call_id}:0", "tool_output": {"temperature": "24C"}}
                    ],
                }
            ],
        },
        {"role": "user", "content": "Thanks. Is that warm?"},
    ]
    typed = [
        cohere.UserChatMessageV2(content=as_dicts[0]["content"]),
        cohere.AssistantChatMessageV2(
            tool_plan=as_dicts[1]["tool_plan"],
            tool_calls=[
                cohere.ToolCallV2(
                    id=call_id,
                    type="function",
                    function=cohere.ToolCallV2Function(
                        name="get_weather", arguments='{"location":"Madrid"}'
                    ),
                )
            ],
        ),
        cohere.ToolChatMessageV2(tool_call_id=call_id, content="24C"),
        cohere.AssistantChatMessageV2(
            content="It is 24C in Madrid.",
            citations=[
                cohere.Citation(
                    start=9,
                    end=12,
                    text="24C",
                    type="TEXT_CONTENT",
                    sources=[cohere.ToolSource(id=f"{call_id}:0", tool_output={"temperature": "24C"})],
                )
            ],
        ),
        cohere.UserChatMessageV2(content=as_dicts[4]["content"]),
    ]
    # The point is that the history is accepted: a few tokens of reply are enough.
    short = {"temperature": 0.0, "max_tokens": 4}
    for messages in (as_dicts, typed):
        response = co.chat(model=MODEL, messages=messages, tools=tools, **short)
        assert response.finish_reason in ("COMPLETE", "MAX_TOKENS", "TOOL_CALL")
        assert response.usage.tokens.input_tokens > 0
    events, _ = stream_all(co, messages=as_dicts, tools=tools, **short)
    assert events[0].type == "message-start" and events[-1].type == "message-end"


def test_a_reply_echoed_back_as_history_is_accepted(co):
    first = co.chat(model=MODEL, messages=HELLO, **GREEDY)
    history = [*HELLO, first.message, {"role": "user", "content": "Again, shorter."}]
    second = co.chat(model=MODEL, messages=history, **GREEDY)
    assert text_of(second).strip()
    assert second.usage.tokens.input_tokens > first.usage.tokens.input_tokens


def test_explicit_none_parameters_are_sent_as_null_and_accepted(base_url):
    recorder = Recorder()
    co = cohere.ClientV2(api_key="", base_url=base_url, httpx_client=recorder.client)
    # response_format=None is left out: the SDK itself raises on it (cohere 7.3.1 looks for a
    # deprecated `response_format.schema` key inside None) before sending anything.
    nones = dict(
        tools=None, strict_tools=None, documents=None, citation_options=None, safety_mode=None, stop_sequences=None, temperature=None,
        seed=None, frequency_penalty=None, presence_penalty=None, k=None, p=None,
        logprobs=None, tool_choice=None, thinking=None, priority=None,
    )  # fmt: skip
    response = co.chat(model=MODEL, messages=HELLO, max_tokens=8, **nones)
    assert text_of(response)
    events = list(co.chat_stream(model=MODEL, messages=HELLO, max_tokens=8, **nones))
    assert events[-1].type == "message-end"
    sent = [json.loads(body) for method, path, _, body in recorder.requests if path == "/v2/chat"]
    assert len(sent) == 2
    for body in sent:
        # Proof that the server saw nulls rather than absent keys.
        assert "temperature" in body and body["temperature"] is None, body


# ---------------------------------------------------------------------------------------------
# Generation parameters
# ---------------------------------------------------------------------------------------------


def test_max_tokens_1_gives_max_tokens(co):
    response = co.chat(model=MODEL, messages=HELLO, max_tokens=1, temperature=0.0)
    assert response.finish_reason == "MAX_TOKENS"
    assert response.usage.tokens.output_tokens == 1
    events, _ = stream_all(co, messages=HELLO, max_tokens=1, temperature=0.0)
    assert events[-1].delta.finish_reason == "MAX_TOKENS"


def test_stop_sequence_ends_the_reply_before_the_sequence(co):
    request = dict(messages=[{"role": "user", "content": "Count from one to ten in words."}])
    full = text_of(co.chat(model=MODEL, temperature=0.0, max_tokens=40, **request))
    # A stop sequence taken from the middle of the greedy reply: the same request with it must
    # end right before its first occurrence.
    assert len(full) >= 8, f"greedy reply too short to pick a stop sequence: {full!r}"
    stop = full[len(full) // 2 :][:3]
    cut = full[: full.index(stop)]
    assert cut.strip(), (full, stop)
    response = co.chat(model=MODEL, temperature=0.0, max_tokens=40, stop_sequences=[stop], **request)
    assert response.finish_reason == "STOP_SEQUENCE"
    assert stop not in text_of(response)
    assert text_of(response) == cut
    events, streamed = stream_all(
        co, temperature=0.0, max_tokens=40, stop_sequences=[stop], **request
    )
    assert events[-1].delta.finish_reason == "STOP_SEQUENCE"
    assert streamed == cut


def test_seed_gives_the_same_text_twice_at_temperature_1(co):
    def sample(seed):
        reply = co.chat(
            model=MODEL,
            messages=[{"role": "user", "content": "Write a sentence about the sea."}],
            temperature=1.0, p=0.99, k=0, seed=seed, max_tokens=10,
        )  # fmt: skip
        return text_of(reply)

    first, again = sample(1234), sample(1234)
    assert first == again
    # The seed matters: other seeds at temperature 1 do not all give the same text.
    others = {sample(seed) for seed in (1, 2, 3)}
    assert len(others | {first}) > 1


def test_logprobs_in_chat_cover_the_text(co):
    response = co.chat(model=MODEL, messages=HELLO, logprobs=True, **GREEDY)
    items = response.logprobs
    assert items, "logprobs requested but absent"
    assert "".join(item.text for item in items) == text_of(response)
    assert sum(len(item.token_ids) for item in items) == response.usage.tokens.output_tokens or (
        response.finish_reason == "COMPLETE"
    )
    for item in items:
        assert item.token_ids and len(item.logprobs) == len(item.token_ids)
        assert all(lp <= 0.0 for lp in item.logprobs)


def test_logprobs_on_every_content_delta(co):
    events, text = stream_all(co, messages=HELLO, logprobs=True, **GREEDY)
    deltas = [e for e in events if e.type == "content-delta"]
    assert deltas
    for e in deltas:
        assert e.logprobs is not None, e
        assert e.logprobs.text == e.delta.message.content.text
        assert e.logprobs.token_ids and len(e.logprobs.logprobs) == len(e.logprobs.token_ids)
        assert all(lp <= 0.0 for lp in e.logprobs.logprobs)
    # Greedy: the same tokens as the non-stream reply.
    response = co.chat(model=MODEL, messages=HELLO, logprobs=True, **GREEDY)
    assert [t for e in deltas for t in e.logprobs.token_ids] == [
        t for item in response.logprobs for t in item.token_ids
    ]


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_bad_parameters_raise_bad_request_error(co):
    with pytest.raises(cohere.BadRequestError) as caught:
        co.chat(model=MODEL, messages=HELLO, temperature=5.0)
    assert_error_body(caught.value, 400)
    assert "temperature" in caught.value.body["message"]
    with pytest.raises(cohere.BadRequestError) as caught:
        list(co.chat_stream(model=MODEL, messages=HELLO, p=0.0))
    assert_error_body(caught.value, 400)
    with pytest.raises(cohere.BadRequestError) as caught:
        co.chat(model=MODEL, messages=[])
    assert_error_body(caught.value, 400)


def test_unknown_model_raises_not_found_error(co):
    with pytest.raises(cohere.NotFoundError) as caught:
        co.chat(model="no-such-model", messages=HELLO)
    assert_error_body(caught.value, 404)
    assert "no-such-model" in caught.value.body["message"]
    with pytest.raises(cohere.NotFoundError) as caught:
        list(co.chat_stream(model="no-such-model", messages=HELLO))
    assert_error_body(caught.value, 404)
    with pytest.raises(cohere.NotFoundError) as caught:
        co.models.get("no-such-model")
    assert_error_body(caught.value, 404)


@pytest.fixture(scope="module")
def auth_server():
    with Server("--api-key", "right-key", "--max-concurrent", "1") as server:
        yield server


def test_wrong_key_raises_unauthorized_error_when_auth_is_on(auth_server):
    for key in ("wrong-key", ""):
        co = cohere.ClientV2(api_key=key, base_url=auth_server.url)
        with pytest.raises(cohere.UnauthorizedError) as caught:
            co.chat(model=MODEL, messages=HELLO, max_tokens=2)
        assert_error_body(caught.value, 401)
        with pytest.raises(cohere.UnauthorizedError):
            list(co.chat_stream(model=MODEL, messages=HELLO, max_tokens=2))
        with pytest.raises(cohere.UnauthorizedError):
            check_api_key(co)
    good = cohere.ClientV2(api_key="right-key", base_url=auth_server.url)
    assert text_of(good.chat(model=MODEL, messages=HELLO, max_tokens=2))
    assert check_api_key(good) is True


def test_empty_api_key_works_against_an_open_server_and_sends_no_authorization(base_url):
    recorder = Recorder()
    co = cohere.ClientV2(api_key="", base_url=base_url, httpx_client=recorder.client)
    assert text_of(co.chat(model=MODEL, messages=HELLO, max_tokens=2))
    assert check_api_key(co) is True
    assert recorder.requests
    assert all("authorization" not in headers for _, _, headers, _ in recorder.requests)


def long_request(max_tokens):
    """A request that keeps a slot busy: the greedy reply to this prompt is a long story."""
    return {
        "model": MODEL,
        "messages": [
            {"role": "user", "content": "Write a long story about a dragon who learns to fly."}
        ],
        "temperature": 0.0,
        "max_tokens": max_tokens,
    }


class HeldStream:
    """A raw streamed request, held open until `close()`. The server answers a stream's headers
    and `message-start` as soon as the request is queued, so returning from here means the
    engine has it; `wait_for_delta` also waits until it is running."""

    def __init__(self, url, wait_for_delta):
        self.client = httpx.Client(timeout=120)
        request = {**long_request(1000), "stream": True}
        self.response = self.client.send(
            self.client.build_request("POST", f"{url}/v2/chat", json=request), stream=True
        )
        assert self.response.status_code == 200, self.response.read()
        self.lines = self.response.iter_lines()
        self.wait_for("message-start")
        if wait_for_delta:
            self.wait_for("content-delta")

    def wait_for(self, event_type):
        for line in self.lines:
            if line.startswith("data:") and f'"type":"{event_type}"' in line:
                return
        raise AssertionError(f"stream ended before {event_type}")

    def close(self):
        self.response.close()
        self.client.close()


@pytest.fixture(scope="module")
def one_slot_server():
    with Server("--max-concurrent", "1", "--max-queue", "1") as server:
        yield server


def test_overload_raises_too_many_requests_error(one_slot_server):
    url = one_slot_server.url
    running = HeldStream(url, wait_for_delta=True)  # holds the one slot
    queued = HeldStream(url, wait_for_delta=False)  # holds the one place in the queue
    try:
        co = cohere.ClientV2(api_key="", base_url=url)
        with pytest.raises(cohere.TooManyRequestsError) as caught:
            co.chat(model=MODEL, messages=HELLO, max_tokens=2, request_options={"max_retries": 0})
        assert_error_body(caught.value, 429)
        assert caught.value.headers.get("retry-after")
        with pytest.raises(cohere.TooManyRequestsError) as caught:
            list(co.chat_stream(model=MODEL, messages=HELLO, max_tokens=2))
        assert_error_body(caught.value, 429)
    finally:
        running.close()
        queued.close()
    # Once the load is gone the same client is served again.
    assert text_of(
        cohere.ClientV2(api_key="", base_url=url).chat(model=MODEL, messages=HELLO, max_tokens=2)
    )


def test_breaking_out_of_chat_stream_frees_the_slot(one_slot_server):
    co = cohere.ClientV2(api_key="", base_url=one_slot_server.url, timeout=300)
    request = long_request(100)
    # Precondition, so the test can fail: this request really runs to max_tokens, so a slot
    # that is not freed would stay busy for the whole reply.
    started = time.monotonic()
    reference = co.chat(**request)
    full_run_s = time.monotonic() - started
    assert reference.finish_reason == "MAX_TOKENS", text_of(reference)

    cancelled_before = one_slot_server.log().count("finish=CANCELLED")
    seen = 0
    for event in co.chat_stream(**request):
        if event.type == "content-delta":
            seen += 1
            if seen == 3:
                break
    broke_at = time.monotonic()
    # With one slot, this request is served only after the abandoned one is cancelled.
    follow_up = co.chat(model=MODEL, messages=HELLO, max_tokens=4, temperature=0.0)
    waited = time.monotonic() - broke_at
    assert text_of(follow_up)
    assert waited < full_run_s / 2, (
        f"the follow-up waited {waited:.1f} s; a full reply takes {full_run_s:.1f} s"
    )
    # The server logged the abandoned stream as cancelled, not as finished.
    assert one_slot_server.log().count("finish=CANCELLED") == cancelled_before + 1
    assert httpx.get(f"{one_slot_server.url}/health").status_code == 200
    assert one_slot_server.alive()


# ---------------------------------------------------------------------------------------------
# Models, keys, tokenizer
# ---------------------------------------------------------------------------------------------


def test_models_list_and_get(co):
    listed = co.models.list()
    names = [m.name for m in listed.models]
    assert MODEL in names
    model = co.models.get(MODEL)
    assert model.name == MODEL
    assert "chat" in model.endpoints
    assert model.context_length and model.context_length > 0
    assert model.tokenizer_url and model.tokenizer_url.endswith("/tokenizer.json")
    assert co.models.list(endpoint="chat").models
    # The shared server also serves the embedding model.
    assert [m.name for m in co.models.list(endpoint="embed").models] == [EMBED_MODEL_NAME]


def check_api_key(co) -> bool:
    """`check_api_key()` through the SDK's generated endpoint: cohere 7.3.1 replaces the public
    `co.check_api_key()` with a stub that raises a deprecation ValueError before any request."""
    return co.with_raw_response.check_api_key().data.valid


def test_check_api_key(co):
    with pytest.raises(ValueError, match="deprecated"):
        co.check_api_key()  # the SDK's own stub, no request made
    assert check_api_key(co) is True


TOKENIZE_TEXT = "Hello, world! Tokenizers split text: ünïcödé and 12345."


def test_tokenize_and_detokenize_online_round_trip(co):
    tokenized = co.tokenize(text=TOKENIZE_TEXT, model=MODEL, offline=False)
    assert tokenized.tokens and len(tokenized.token_strings) == len(tokenized.tokens)
    back = co.detokenize(tokens=tokenized.tokens, model=MODEL, offline=False)
    assert back.text == TOKENIZE_TEXT
    # Each token's own text; a token holding part of a multi-byte character cannot be shown
    # alone, so the pieces join back to the text only where it is ASCII.
    ascii_text = "Hello, world! Tokenizers split text."
    ascii_tokens = co.tokenize(text=ascii_text, model=MODEL, offline=False)
    assert "".join(ascii_tokens.token_strings) == ascii_text


def test_tokenize_and_detokenize_offline_use_the_served_tokenizer(base_url):
    recorder = Recorder()
    co = cohere.ClientV2(api_key="", base_url=base_url, httpx_client=recorder.client)
    online = co.tokenize(text=TOKENIZE_TEXT, model=MODEL, offline=False).tokens
    recorder.requests.clear()
    # The SDK falls back to the API silently when the offline path fails, so load the
    # tokenizer the way it does first: any failure here is a real failure.
    tokenizer = co.fetch_tokenizer(model=MODEL)
    assert tokenizer.encode(TOKENIZE_TEXT, add_special_tokens=False).ids == online
    offline = co.tokenize(text=TOKENIZE_TEXT, model=MODEL, offline=True)
    assert offline.tokens == online
    assert offline.token_strings == []  # what the SDK's offline path returns
    back = co.detokenize(tokens=offline.tokens, model=MODEL, offline=True)
    assert back.text == TOKENIZE_TEXT
    paths = [path for _, path, _, _ in recorder.requests]
    assert "/v1/tokenize" not in paths and "/v1/detokenize" not in paths, paths
    assert all("sdk-api-warning-message" not in h for _, _, h, _ in recorder.requests)
    # The SDK logs the download size from a HEAD request; the server answers it.
    head = httpx.head(f"{base_url}/tokenizer.json")
    assert head.status_code == 200 and int(head.headers["content-length"]) > 1000
