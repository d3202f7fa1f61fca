// The playground (GET /) in a real browser: headless Chromium (Debian's package) driven by
// playwright-core, against a running `cohost serve` that requires an API key.
// Env: COHOST_PLAYGROUND_URL (http://host:port), COHOST_PLAYGROUND_KEY (the server's key),
// COHOST_PLAYGROUND_MODEL (the served name), COHOST_PLAYGROUND_ARTIFACTS (where the screenshots go),
// CHROMIUM (the browser binary; default /usr/bin/chromium).
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";

const BASE = process.env.COHOST_PLAYGROUND_URL;
const KEY = process.env.COHOST_PLAYGROUND_KEY;
const MODEL = process.env.COHOST_PLAYGROUND_MODEL;
const ARTIFACTS = process.env.COHOST_PLAYGROUND_ARTIFACTS;
assert.ok(BASE && KEY && MODEL && ARTIFACTS, "run through tests/playground/run.sh");
mkdirSync(ARTIFACTS, { recursive: true });

// This machine's network is closed: without these, Chromium's own background connections
// (updates, sync, QUIC probes) are refused and it stalls or logs errors.
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

let context;
let page;
let profile;
const consoleErrors = [];
const foreignRequests = [];
const chatRequests = [];

before(async () => {
  profile = mkdtempSync(join(tmpdir(), "cohost-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1200, height: 800 },
  });
  page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(m.text());
  });
  page.on("pageerror", (e) => consoleErrors.push(`uncaught: ${e.message}`));
  page.on("request", (r) => {
    if (!r.url().startsWith(BASE) && !r.url().startsWith("data:")) foreignRequests.push(r.url());
    if (r.url() === `${BASE}/v2/chat`) chatRequests.push(r);
  });
});

after(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/** The server's own answer to the same chat, without the page: what the page must show. */
async function serverReply(request) {
  const r = await fetch(`${BASE}/v2/chat`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ ...request, stream: false }),
  });
  assert.equal(r.status, 200, await r.clone().text());
  return (await r.json()).message.content[0].text;
}

/** Sends `text` from the page and waits for the reply to finish; returns the reply element. */
async function sendFromPage(text) {
  const before = await page.locator(".msg.assistant .meta").count();
  await page.fill("#input", text);
  await page.click("#send");
  await page.locator(".msg.assistant .meta").nth(before).waitFor({ timeout: 120_000 });
  return page.locator(".msg.assistant").nth(before);
}

test("the page loads from the server with no foreign assets and says the model is ready", async () => {
  const response = await page.goto(`${BASE}/`);
  assert.equal(response.status(), 200);
  assert.match(response.headers()["content-type"], /^text\/html/);
  assert.equal(await page.title(), "cohost playground");
  await page.locator("#status", { hasText: "ready" }).waitFor({ timeout: 10_000 });
  assert.match(await page.textContent("#status"), new RegExp(`ready · ${MODEL.replace(".", "\\.")}`));
});

test("a message streams its reply token by token, with the key as Bearer", async () => {
  await page.fill("#apiKey", KEY);
  await page.fill("#system", "You are a terse assistant.");
  await page.fill("#temperature", "0");
  await page.fill("#maxTokens", "24");
  // Record, inside the page, each text the newest reply shows while it streams.
  await page.evaluate(() => {
    window.__partials = [];
    new MutationObserver(() => {
      const text = [...document.querySelectorAll(".msg.assistant .text")].at(-1)?.textContent;
      if (text && text !== window.__partials.at(-1)) window.__partials.push(text);
    }).observe(document.getElementById("log"), { childList: true, subtree: true, characterData: true });
  });
  const reply = await sendFromPage("Name three colours.");

  const request = chatRequests.at(-1);
  assert.equal(request.headers()["authorization"], `Bearer ${KEY}`);
  const sent = request.postDataJSON();
  assert.equal(sent.stream, true);
  assert.equal(sent.model, MODEL);
  assert.equal(sent.temperature, 0);
  assert.equal(sent.max_tokens, 24);
  assert.deepEqual(sent.messages, [
    { role: "system", content: "You are a terse assistant." },
    { role: "user", content: "Name three colours." },
  ]);

  const shown = await reply.locator(".text").textContent();
  assert.ok(shown.length > 0, "the reply is empty");
  // Greedy decoding: the page must show exactly what the server answers without streaming.
  assert.equal(shown, await serverReply(sent));
  // It grew piece by piece: several partial texts, each a prefix of the next, ending in the reply.
  const partials = await page.evaluate(() => window.__partials);
  assert.ok(partials.length >= 3, `the reply appeared in ${partials.length} steps: ${JSON.stringify(partials)}`);
  partials.forEach((p, i) => i && assert.ok(p.startsWith(partials[i - 1]), JSON.stringify(partials)));
  assert.equal(partials.at(-1), shown);

  const stats = await page.textContent("#stats");
  assert.match(stats, /time to first token \d+ ms/);
  assert.match(stats, /\d+(\.\d)? tokens\/s/);
  assert.match(stats, /\d+ tokens/);
  assert.match(stats, /COMPLETE|MAX_TOKENS/);
  await page.screenshot({ path: join(ARTIFACTS, "playground-chat.png"), fullPage: true });
});

test("documents go with the next turn, after the earlier turns", async () => {
  await page.fill(
    "#documents",
    'The office cat is called Miso.\n{"title": "Hours", "snippet": "Open 9 to 5."}',
  );
  await sendFromPage("What is the cat called?");
  const sent = chatRequests.at(-1).postDataJSON();
  assert.deepEqual(sent.documents, [
    "The office cat is called Miso.",
    { data: { title: "Hours", snippet: "Open 9 to 5." } },
  ]);
  assert.equal(sent.messages.length, 4, "system, first turn, its reply, the new message");
  assert.equal(sent.messages[2].role, "assistant");
});

test("citation-start events mark the cited text and list their sources", async () => {
  // The server does not cite yet: this stream, in the shape the spec gives for citation events,
  // checks the page's side of it.
  const frames = [
    { type: "message-start", id: "x", delta: { message: { role: "assistant", content: [] } } },
    { type: "content-start", index: 0, delta: { message: { content: { type: "text", text: "" } } } },
    { type: "content-delta", index: 0, delta: { message: { content: { text: "The cat is " } } } },
    { type: "content-delta", index: 0, delta: { message: { content: { text: "called Miso." } } } },
    {
      type: "citation-start",
      index: 0,
      delta: {
        message: {
          citations: {
            start: 18,
            end: 22,
            text: "Miso",
            sources: [{ type: "document", id: "doc:0", document: { id: "doc:0", snippet: "The office cat is called Miso." } }],
            type: "TEXT_CONTENT",
          },
        },
      },
    },
    { type: "citation-end", index: 0 },
    { type: "content-end", index: 0 },
    { type: "message-end", delta: { finish_reason: "COMPLETE", usage: { tokens: { input_tokens: 9, output_tokens: 6 } } } },
  ];
  const body = frames.map((f) => `event: ${f.type}\ndata: ${JSON.stringify(f)}\n\n`).join("") + "data: [DONE]\n\n";
  await page.route(`${BASE}/v2/chat`, (route) =>
    route.fulfill({ status: 200, headers: { "content-type": "text/event-stream" }, body }),
  );
  try {
    const reply = await sendFromPage("Who is Miso?");
    assert.equal(await reply.locator(".text").textContent(), "The cat is called Miso.");
    assert.equal(await reply.locator(".text mark").textContent(), "Miso");
    assert.match(await reply.locator(".citations li").textContent(), /“Miso” — doc:0 \(The office cat is called Miso\.\)/);
    await page.screenshot({ path: join(ARTIFACTS, "playground-citations.png"), fullPage: true });
  } finally {
    await page.unroute(`${BASE}/v2/chat`);
  }
});

test("nothing went to the console or to another origin", () => {
  assert.deepEqual(consoleErrors, []);
  assert.deepEqual(foreignRequests, []);
});
