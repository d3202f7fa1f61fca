// The TypeScript Cohere SDK (cohere-ai 8.1.0, CohereClientV2) against the real cohost binary.
// Run by tests/sdk/run.sh with COHOST_SDK_URL set to a running server: node --test ts/
import assert from "node:assert/strict";
import { test } from "node:test";

import { Cohere, CohereClientV2, CohereError } from "cohere-ai";

const url = process.env.COHOST_SDK_URL;
if (!url) throw new Error("COHOST_SDK_URL is not set: run tests/sdk/run.sh");
const MODEL = process.env.COHOST_SDK_MODEL ?? "SmolLM2-135M-Instruct.Q4_1";
// An open server: an empty token makes the SDK send no Authorization header.
const co = new CohereClientV2({ token: "", environment: url, timeoutInSeconds: 120 });
const HELLO = [{ role: "user", content: "Say hello in one short sentence." }];
const GREEDY = { temperature: 0, maxTokens: 16 };

function collapse(types) {
  return types.filter((t, i) => i === 0 || types[i - 1] !== t);
}

async function streamAll(request) {
  const events = [];
  for await (const event of await co.chatStream({ model: MODEL, ...request })) {
    events.push(event);
  }
  const text = events
    .filter((e) => e.type === "content-delta")
    .map((e) => e.delta.message.content.text)
    .join("");
  return { events, text };
}

function textOf(response) {
  assert.equal(response.message.role, "assistant");
  assert.deepEqual(
    response.message.content.map((c) => c.type),
    ["text"],
  );
  return response.message.content[0].text;
}

test("chat returns id, finish reason, text and usage", async () => {
  const response = await co.chat({ model: MODEL, messages: HELLO, ...GREEDY });
  assert.match(response.id, /^[0-9a-f-]{36}$/);
  assert.ok(["COMPLETE", "MAX_TOKENS"].includes(response.finishReason), response.finishReason);
  assert.ok(textOf(response).trim().length > 0);
  assert.ok(response.usage.tokens.inputTokens > 0);
  assert.ok(response.usage.tokens.outputTokens > 0);
  assert.equal(response.usage.billedUnits.outputTokens, response.usage.tokens.outputTokens);
});

test("chatStream gives exactly the documented events and the non-stream text", async () => {
  const request = { messages: [{ role: "user", content: "Name three colours." }], ...GREEDY };
  const { events, text } = await streamAll(request);
  const types = events.map((e) => e.type);
  assert.deepEqual(collapse(types), [
    "message-start",
    "content-start",
    "content-delta",
    "content-end",
    "message-end",
  ]);
  assert.match(events[0].id, /^[0-9a-f-]{36}$/);
  assert.equal(events[1].index, 0);
  const end = events.at(-1);
  assert.ok(end.delta.usage.tokens.outputTokens > 0);
  const response = await co.chat({ model: MODEL, ...request });
  assert.equal(text, textOf(response));
  assert.equal(end.delta.finishReason, response.finishReason);
});

test("logprobs arrive on every content delta", async () => {
  const { events } = await streamAll({ messages: HELLO, logprobs: true, ...GREEDY });
  const deltas = events.filter((e) => e.type === "content-delta");
  assert.ok(deltas.length > 0);
  for (const e of deltas) {
    assert.equal(e.logprobs.text, e.delta.message.content.text);
    assert.ok(e.logprobs.tokenIds.length > 0);
    assert.equal(e.logprobs.logprobs.length, e.logprobs.tokenIds.length);
  }
});

test("a bad parameter raises the typed BadRequestError with id and message", async () => {
  await assert.rejects(
    co.chat({ model: MODEL, messages: HELLO, temperature: 5 }),
    (err) => {
      assert.ok(err instanceof Cohere.BadRequestError, `got ${err?.constructor?.name}`);
      assert.ok(err instanceof CohereError);
      assert.equal(err.statusCode, 400);
      assert.deepEqual(Object.keys(err.body).sort(), ["id", "message"]);
      assert.match(err.body.message, /temperature/);
      return true;
    },
  );
});

test("an unknown model raises NotFoundError, also for a stream", async () => {
  await assert.rejects(
    (async () => {
      for await (const _ of await co.chatStream({ model: "no-such-model", messages: HELLO })) {
        // nothing arrives
      }
    })(),
    (err) => {
      assert.ok(err instanceof Cohere.NotFoundError, `got ${err?.constructor?.name}`);
      assert.equal(err.statusCode, 404);
      assert.match(err.body.message, /no-such-model/);
      assert.ok(err.body.id);
      return true;
    },
  );
});

// The SDK ends a stream at any data line containing the substring "[DONE]" (its terminator
// check). A reply whose text contains "[DONE]" must still arrive whole: the server escapes "["
// inside JSON strings. The model writes "[DONE]" as several tokens, so on its own it would never
// put it in one delta; a stop sequence that starts with "[DONE]" makes the server hold those
// tokens back until the match fails and then send them as one delta, which is the case to prove.
// The non-stream reply is checked first, so the test cannot pass vacuously.
test("a delta whose text contains [DONE] does not end the stream early", async () => {
  const request = {
    // One example turn is enough for the small default model to copy the bracketed word.
    messages: [
      { role: "user", content: "Say [OK]" },
      { role: "assistant", content: "[OK]" },
      { role: "user", content: "Say [DONE]" },
    ],
    temperature: 0,
    maxTokens: 24,
    stopSequences: ["[DONE]~~never~~"],
  };
  const response = await co.chat({ model: MODEL, ...request });
  const expected = textOf(response);
  assert.ok(expected.includes("[DONE]"), `precondition: the model must say [DONE]: ${expected}`);
  const { events, text } = await streamAll(request);
  assert.equal(text, expected);
  assert.ok(
    events.some((e) => e.type === "content-delta" && e.delta.message.content.text.includes("[DONE]")),
    "some single delta carries the whole [DONE]",
  );
  assert.equal(events.at(-1).type, "message-end");
  assert.equal(events.at(-1).delta.finishReason, response.finishReason);
});
