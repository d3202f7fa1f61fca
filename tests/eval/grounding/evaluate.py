#!/usr/bin/env python3
"""Grounding quality of a running cohost (or any Cohere v2 endpoint), per citation mode.

For each question of questions.jsonl and each mode it sends one non-stream `POST /v2/chat` with
the question as the only user message, the question's documents, `citation_options.mode`,
`temperature: 0` and `max_tokens: 64`, times the reply, and scores it:

- quote share: replies whose text quotes a source (contains the labelled answer, or shares a run
  of >= 4 consecutive words with a document's snippet; case-insensitive). coverage: of those, the
  share with at least one citation (goal >= 95%).
- precision: of all citations, the share whose text is in one of its cited documents
  (title + snippet): the normalized text is a substring of it, or every content word of the text
  (3+ letters, not a stop word) is one of its words (goal >= 90%). Also the share of citations
  that name the answer document, and of the replies that state the answer, the share whose
  answer span is covered by a citation of the answer document (answer cited).
- cost: mean and median seconds per reply, and their ratio to OFF's.
- structure: each citation's `text == content[content_index].text[start:end]` (code points, as
  Python indexes), `0 <= start < end <= len`, type TEXT_CONTENT, non-empty sources that are
  documents of this request (`document.id` == `id`); OFF must have no citations. Each failure
  is a violation. Separately, replies whose text shows citation markup (`<co...>`, `[doc...]`,
  `doc:<n>`) or a document id are counted (markup).

Standard library only. Modes are interleaved per question, and their order rotates from one
question to the next, so that load from other processes and any prompt caching fall evenly on
every mode. Prints a markdown table and writes every reply and the summary to --out.

  python3 tests/eval/grounding/evaluate.py --url http://127.0.0.1:8080 \
      --model SmolLM2-135M-Instruct.Q4_1 --modes ACCURATE,FAST,OFF --out results.json
"""

import argparse
import json
import pathlib
import re
import statistics
import sys
import time
import urllib.error
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
STOP_WORDS = set(
    """a an and are as at be been but by can could did do does for from had has have he her his
    how i if in into is it its itself me my no not of on or our she so than that the their them
    then there these they this those to too very was we were what when where which who whom why
    will with would you your about after again all also am any because before being between both
    each few further here just more most much must nor now off once only other out over own same
    should some such through under until up while yes yet one""".split()
)
MARKUP = re.compile(r"</?co\b|<co:|\[\s*doc\b|\bdoc:\d+\b|\bkb-[0-9a-f]{4}\b", re.IGNORECASE)


def words(text):
    """Lower-case words, punctuation dropped ("40,000" -> "40 000" on every side alike)."""
    return re.findall(r"[^\W_]+", text.lower())


def normalized(text):
    return " ".join(words(text))


def ngrams(ws, n=4):
    return {tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)}


def contains_phrase(text, phrase):
    """`phrase` occurs in `text` as whole words, ignoring case, whitespace and punctuation."""
    t, p = normalized(text), normalized(phrase)
    return bool(p) and re.search(rf"(?<![^\W_]){re.escape(p)}(?![^\W_])", t) is not None


def doc_text(doc):
    data = doc["data"]
    if isinstance(data, str):
        return data
    return " ".join(str(data.get(k, "")) for k in ("title", "snippet")) or json.dumps(data)


def snippet_of(doc):
    data = doc["data"]
    return data if isinstance(data, str) else str(data.get("snippet", ""))


def quotes_source(text, question):
    if contains_phrase(text, question["answer"]):
        return True
    reply = ngrams(words(text))
    return any(reply & ngrams(words(snippet_of(d))) for d in question["documents"])


def content_words(text):
    return [w for w in words(text) if len(w) >= 3 and w not in STOP_WORDS]


def precise(citation_text, source_text):
    if normalized(citation_text) and normalized(citation_text) in normalized(source_text):
        return True
    have = set(words(source_text))
    return all(w in have for w in content_words(citation_text))


def post(url, body, api_key, timeout):
    request = urllib.request.Request(
        url.rstrip("/") + "/v2/chat",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "accept": "application/json"},
        method="POST",
    )
    if api_key:
        request.add_header("authorization", f"Bearer {api_key}")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            payload = json.loads(reply.read())
            status = reply.status
    except urllib.error.HTTPError as err:
        payload, status = err.read().decode(errors="replace"), err.code
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        payload, status = str(err), None
    return status, payload, time.perf_counter() - started


def check_structure(message, question, mode):
    """The reply's structural violations, as short strings."""
    problems = []
    content = message.get("content") or []
    citations = message.get("citations") or []
    ids = {d["id"] for d in question["documents"]}
    if mode == "OFF" and citations:
        problems.append(f"{len(citations)} citations in OFF mode")
    for k, c in enumerate(citations):
        where = f"citation {k}"
        ci = c.get("content_index")
        if not isinstance(ci, int) or not 0 <= ci < len(content):
            problems.append(f"{where}: content_index {ci!r} out of range")
            continue
        block = content[ci]
        if block.get("type") != "text":
            problems.append(f"{where}: content_index {ci} is a {block.get('type')} block")
            continue
        block_text = block.get("text", "")
        start, end = c.get("start"), c.get("end")
        if not (
            isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(block_text)
        ):
            problems.append(f"{where}: bad span {start!r}..{end!r} of {len(block_text)}")
        elif block_text[start:end] != c.get("text"):
            problems.append(
                f"{where}: text {c.get('text')!r} != content[{start}:{end}] {block_text[start:end]!r}"
            )
        if c.get("type") != "TEXT_CONTENT":
            problems.append(f"{where}: type {c.get('type')!r}")
        sources = c.get("sources") or []
        if not sources:
            problems.append(f"{where}: no sources")
        for s in sources:
            if s.get("type") != "document":
                problems.append(f"{where}: source type {s.get('type')!r}")
            if s.get("id") not in ids:
                problems.append(f"{where}: unknown source id {s.get('id')!r}")
            elif (s.get("document") or {}).get("id") != s.get("id"):
                problems.append(
                    f"{where}: source {s.get('id')!r} has document.id {(s.get('document') or {}).get('id')!r}"
                )
    return problems


def score(question, mode, status, payload, seconds):
    record = {"id": question["id"], "mode": mode, "status": status, "seconds": round(seconds, 4)}
    if status != 200 or not isinstance(payload, dict):
        record["error"] = payload if isinstance(payload, str) else json.dumps(payload)
        return record
    message = payload.get("message") or {}
    content = message.get("content") or []
    citations = message.get("citations") or []
    text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
    by_id = {d["id"]: d for d in question["documents"]}
    scored = []
    for c in citations:
        ids = [s.get("id") for s in c.get("sources") or []]
        ok = any(i in by_id and precise(c.get("text", ""), doc_text(by_id[i])) for i in ids)
        scored.append(
            {
                "start": c.get("start"),
                "end": c.get("end"),
                "text": c.get("text"),
                "sources": ids,
                "precise": ok,
                "answer_doc": question["answer_doc"] in ids,
                "no_content_words": not content_words(c.get("text", "")),
            }
        )
    # Where the reply states the answer, is that span cited to the answer document?
    at = text.lower().find(question["answer"].lower())
    answer_cited = at >= 0 and any(
        c["answer_doc"]
        and c["start"] is not None
        and c["end"] is not None
        and c["start"] < at + len(question["answer"])
        and at < c["end"]
        for c in scored
    )
    usage = (payload.get("usage") or {}).get("tokens") or {}
    record.update(
        text=text,
        finish_reason=payload.get("finish_reason"),
        output_tokens=usage.get("output_tokens"),
        answered=contains_phrase(text, question["answer"]),
        quotes=quotes_source(text, question),
        answer_cited=answer_cited,
        citations=scored,
        violations=check_structure(message, question, mode),
        markup=sorted({m.group(0) for m in MARKUP.finditer(text)}),
    )
    return record


def share(part, whole):
    return None if whole == 0 else part / whole


def summarize(records, modes):
    out = {}
    for mode in modes:
        rs = [r for r in records if r["mode"] == mode]
        ok = [r for r in rs if "error" not in r]
        cits = [c for r in ok for c in r["citations"]]
        quoting = [r for r in ok if r["quotes"]]
        answered = [r for r in ok if r["answered"]]
        secs = [r["seconds"] for r in ok]
        toks = [r["output_tokens"] for r in ok if isinstance(r.get("output_tokens"), (int, float))]
        out[mode] = {
            "replies": len(rs),
            "errors": len(rs) - len(ok),
            "answered": share(len(answered), len(ok)),
            "quote_share": share(len(quoting), len(ok)),
            "coverage": share(sum(1 for r in quoting if r["citations"]), len(quoting)),
            "replies_with_citations": share(sum(1 for r in ok if r["citations"]), len(ok)),
            "citations": len(cits),
            "precision": share(sum(c["precise"] for c in cits), len(cits)),
            "citations_of_answer_doc": share(sum(c["answer_doc"] for c in cits), len(cits)),
            # How focused the attribution is: of every source named by a citation, the share
            # that is the answer document (a phrase several documents share, cited to all of
            # them, lowers it), and the sources per citation.
            "answer_doc_share_of_sources": share(
                sum(c["answer_doc"] for c in cits), sum(len(c["sources"]) for c in cits)
            ),
            "sources_per_citation": (
                sum(len(c["sources"]) for c in cits) / len(cits) if cits else None
            ),
            "answered_citing_answer_doc": share(
                sum(1 for r in answered if any(c["answer_doc"] for c in r["citations"])),
                len(answered),
            ),
            "answer_span_cited": share(
                sum(1 for r in answered if r["answer_cited"]), len(answered)
            ),
            "citations_without_content_words": sum(c["no_content_words"] for c in cits),
            "violations": sum(len(r["violations"]) for r in ok),
            "replies_with_violations": sum(1 for r in ok if r["violations"]),
            "replies_with_markup": sum(1 for r in ok if r["markup"]),
            "mean_s": statistics.fmean(secs) if secs else None,
            "p50_s": statistics.median(secs) if secs else None,
            "mean_output_tokens": statistics.fmean(toks) if toks else None,
        }
    if "OFF" in out and out["OFF"]["mean_s"]:
        off = {r["id"]: r for r in records if r["mode"] == "OFF" and "error" not in r}
        for mode, s in out.items():
            s["mean_vs_off"] = s["mean_s"] / out["OFF"]["mean_s"] if s["mean_s"] else None
            s["p50_vs_off"] = s["p50_s"] / out["OFF"]["p50_s"] if s["p50_s"] else None
            pairs = [
                (r, off[r["id"]])
                for r in records
                if r["mode"] == mode and "error" not in r and r["id"] in off
            ]
            ratios = [r["seconds"] / o["seconds"] for r, o in pairs if o["seconds"] > 0]
            s["median_paired_ratio_vs_off"] = statistics.median(ratios) if ratios else None
            s["text_same_as_off"] = share(sum(r["text"] == o["text"] for r, o in pairs), len(pairs))
    return out


def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def num(x, digits=2):
    return "n/a" if x is None else f"{x:.{digits}f}"


def table(summary):
    rows = [
        "| mode | replies | errors | answered | quote share | coverage (goal ≥95%) | citations "
        "| precision (goal ≥90%) | cite answer doc | sources / citation | answer doc of sources "
        "| answer cited | violations | markup | mean s | p50 s | mean ×OFF "
        "| paired ×OFF | same text as OFF |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, s in summary.items():
        rows.append(
            f"| {mode} | {s['replies']} | {s['errors']} | {pct(s['answered'])} | {pct(s['quote_share'])} "
            f"| {pct(s['coverage'])} | {s['citations']} | {pct(s['precision'])} "
            f"| {pct(s['citations_of_answer_doc'])} | {num(s.get('sources_per_citation'))} "
            f"| {pct(s.get('answer_doc_share_of_sources'))} | {pct(s['answer_span_cited'])} | {s['violations']} | {s['replies_with_markup']} "
            f"| {num(s['mean_s'])} "
            f"| {num(s['p50_s'])} | {num(s.get('mean_vs_off'), 3)} "
            f"| {num(s.get('median_paired_ratio_vs_off'), 3)} | {pct(s.get('text_same_as_off'))} |"
        )
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(
        description="Grounding quality (coverage, precision, cost) per citation mode.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--model", default="SmolLM2-135M-Instruct.Q4_1")
    parser.add_argument("--modes", default="ACCURATE,FAST,OFF", help="comma-separated")
    parser.add_argument("--questions", default=str(HERE / "questions.jsonl"))
    parser.add_argument("--out", default="results.json")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=None, help="sent as `seed` when given")
    parser.add_argument("--api-key", default=None, help="sent as a bearer token when given")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per request")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured requests first")
    parser.add_argument("--quiet", action="store_true", help="no line per reply")
    parser.add_argument(
        "--rescore", default=None, help="summarize the replies of an earlier --out file instead"
    )
    args = parser.parse_args()
    if args.rescore:
        earlier = json.loads(pathlib.Path(args.rescore).read_text())
        modes = list(earlier["summary"])
        print(table(summarize(earlier["replies"], modes)))
        print(f"\n{earlier['n_questions']} questions, model {earlier['model']}")
        return

    modes = [m.strip().upper() for m in args.modes.split(",") if m.strip()]
    with open(args.questions) as lines:
        questions = [json.loads(line) for line in lines if line.strip()]
    if args.limit:
        questions = questions[: args.limit]

    def body(question, mode):
        b = {
            "model": args.model,
            "messages": [{"role": "user", "content": question["question"]}],
            "documents": question["documents"],
            "citation_options": {"mode": mode},
            "temperature": 0,
            "max_tokens": args.max_tokens,
            "stream": False,
        }
        if args.seed is not None:
            b["seed"] = args.seed
        return b

    for _ in range(args.warmup):
        status, payload, _ = post(
            args.url, body(questions[0], modes[0]), args.api_key, args.timeout
        )
        if status != 200:
            sys.exit(f"warm-up request failed ({status}): {payload}")

    records = []
    for qi, question in enumerate(questions):
        order = modes[qi % len(modes) :] + modes[: qi % len(modes)]
        for mode in order:
            status, payload, seconds = post(
                args.url, body(question, mode), args.api_key, args.timeout
            )
            record = score(question, mode, status, payload, seconds)
            records.append(record)
            if not args.quiet:
                if "error" in record:
                    line = f"ERROR {status}: {record['error'][:200]}"
                else:
                    cited = ", ".join(
                        f"{c['text']!r}->{'/'.join(c['sources'])}{'' if c['precise'] else ' (imprecise)'}"
                        for c in record["citations"]
                    )
                    line = f"{record['text']!r} [{cited}]"
                    if record["violations"]:
                        line += f" VIOLATIONS: {record['violations']}"
                    if record["markup"]:
                        line += f" MARKUP: {record['markup']}"
                print(
                    f"{question['id']} {mode:<8} {seconds:6.2f}s {line}",
                    file=sys.stderr,
                    flush=True,
                )

    summary = summarize(records, modes)
    result = {
        "url": args.url,
        "model": args.model,
        "questions": str(args.questions),
        "n_questions": len(questions),
        "max_tokens": args.max_tokens,
        "summary": summary,
        "replies": records,
    }
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(table(summary))
    print(f"\n{len(questions)} questions, model {args.model}; every reply in {args.out}")


if __name__ == "__main__":
    main()
