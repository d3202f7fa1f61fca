"""Thinking blocks through the real SDK. No small model we can fetch thinks, so the server side
is the encoder's golden output for a scripted thinking reply (crates/server/tests/golden/,
written and checked by crates/server/tests/it/sse_golden.rs), served to the SDK through an httpx
mock transport: the SDK must parse the thinking block, streamed and not, with its strict types."""

import pathlib

import cohere
import httpx

GOLDEN = pathlib.Path(__file__).resolve().parents[3] / "crates/server/tests/golden"


def client(body: bytes, content_type: str):
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v2/chat"
        return httpx.Response(200, content=body, headers={"content-type": content_type})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return cohere.ClientV2(api_key="", base_url="http://cohost.test", httpx_client=http)


def ask(co, **extra):
    return dict(
        model="qwen3",
        messages=[{"role": "user", "content": "hi"}],
        thinking={"type": "enabled", "token_budget": 64},
        **extra,
    )


def test_a_thinking_reply_is_block_0_before_the_text():
    body = (GOLDEN / "thinking-response.json").read_bytes()
    co = client(body, "application/json")
    response = co.chat(**ask(co))
    thinking, text = response.message.content
    assert thinking.type == "thinking" and thinking.thinking == "The user greets me."
    assert text.type == "text" and text.text == "Hello! How can I help?"
    assert response.finish_reason == "COMPLETE"


def test_a_streamed_thinking_block_has_thinking_deltas_then_the_text_block():
    body = (GOLDEN / "thinking-stream.sse").read_bytes()
    co = client(body, "text/event-stream")
    events = list(co.chat_stream(**ask(co)))
    kinds = [e.type for e in events]
    assert kinds[0] == "message-start" and kinds[-1] == "message-end"
    starts = [e for e in events if e.type == "content-start"]
    assert [(s.index, s.delta.message.content.type) for s in starts] == [(0, "thinking"), (1, "text")]
    thinking = "".join(
        e.delta.message.content.thinking for e in events if e.type == "content-delta" and e.index == 0
    )
    text = "".join(e.delta.message.content.text for e in events if e.type == "content-delta" and e.index == 1)
    assert thinking == "The user greets me."
    assert text == "Hello! How can I help?"
    ends = [e.index for e in events if e.type == "content-end"]
    assert ends == [0, 1]
