"""The reference side of scripts/embed-side-by-side.sh: sentence-transformers (PyTorch, CPU).

    python embed_bench_st.py texts MODEL_DIR OUT.txt [N]       writes N bench texts (default 1024)
    python embed_bench_st.py bench MODEL_DIR TEXTS THREADS ROUNDS BATCH [EMBEDDINGS_OUT]
    python embed_bench_st.py bench-ort MODEL_DIR TEXTS THREADS ROUNDS BATCH ONNX_FILE
    python embed_bench_st.py compare MODEL_DIR TEXTS OURS.f32 REF.f32
    python embed_bench_st.py table RESULTS.jsonl DIR        (DIR holds cosine-<precision>.json)

`bench` prints one JSON line per round like the Rust bench (texts/s, tokens/s counting special
tokens). `bench-ort` does the same with ONNX Runtime (the model exported to ONNX_FILE once, padded
batches, mean pooling and normalization in numpy), the other fast CPU runtime the issue names. Packages: crates/encoder/tests/golden-gen/requirements.txt (pinned).
"""
import json
import random
import statistics
import sys
import time

SUBJECTS = ["The city council", "A small startup", "Our support team", "The research group",
            "My neighbour", "The new library", "This recipe", "The football club", "A local bakery",
            "The weather service", "Every student", "The museum"]
VERBS = ["announced", "described", "questioned", "published", "reviewed", "celebrated",
         "postponed", "explained", "criticised", "shared"]
OBJECTS = ["a plan to expand public transport across the northern districts",
           "the results of a two-year study on sleep and memory",
           "an unusual method for baking sourdough bread at home",
           "how to reset a forgotten password without access to email",
           "the history of the old bridge that crosses the river",
           "a schedule of free concerts for the summer",
           "why the prices of fresh vegetables rose this autumn",
           "a guide to choosing a laptop for programming",
           "the first match of the season against a strong rival",
           "several ways to reduce energy use in winter"]
TAILS = ["", " yesterday evening", " after a long debate", " in a short statement",
         " to the surprise of many residents", " on its website", " during the annual meeting"]


def make_texts(n, seed=7):
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}."
            for _ in range(n)]


def main():
    cmd = sys.argv[1]
    if cmd == "texts":
        n = int(sys.argv[4]) if len(sys.argv) > 4 else 1024
        with open(sys.argv[3], "w") as f:
            f.write("\n".join(make_texts(n)) + "\n")
        return
    if cmd == "table":
        rows = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
        import glob
        import os
        cos = {os.path.basename(f)[len("cosine-"):-len(".json")]: json.load(open(f))
               for f in sorted(glob.glob(os.path.join(sys.argv[3], "cosine-*.json")))}
        by = {}
        for r in rows:
            by.setdefault(r["impl"], []).append(r)
        med = {k: (statistics.median(r["texts_per_s"] for r in v), statistics.median(r["tokens_per_s"] for r in v), len(v))
               for k, v in by.items()}
        ref = med.get("sentence-transformers")
        refs = [med[k][0] for k in ("sentence-transformers", "onnxruntime") if k in med]
        best = max(refs) if refs else None
        print("| implementation | texts/s (median) | tokens/s (median) | rounds | vs sentence-transformers "
              "| vs the faster reference |")
        print("|---|---|---|---|---|---|")
        for k, (t, tok, n) in med.items():
            ratio = f"{t / ref[0]:.2f}x" if ref else "-"
            vs_best = f"{t / best:.2f}x" if best else "-"
            print(f"| {k} | {t:.1f} | {tok:.0f} | {n} | {ratio} | {vs_best} |")
        print()
        print(f"texts: {rows[0]['texts']}, {rows[0]['tokens'] / rows[0]['texts']:.1f} tokens each on average; "
              f"threads: {rows[0]['threads']}")
        for p, c in cos.items():
            print(f"cosine(cohost {p}, sentence-transformers) over the bench texts: "
                  f"min {c['min']:.7f}, mean {c['mean']:.7f}")
        return

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    model_dir, texts_file = sys.argv[2], sys.argv[3]
    texts = [l.rstrip("\n") for l in open(texts_file) if l.strip()]
    if cmd == "compare":
        dim = None
        ours = np.fromfile(sys.argv[4], dtype="<f4")
        ref = np.fromfile(sys.argv[5], dtype="<f4")
        dim = ours.size // len(texts)
        ours, ref = ours.reshape(len(texts), dim), ref.reshape(len(texts), dim)
        cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
        print(json.dumps({"min": float(cos.min()), "mean": float(cos.mean())}))
        return
    threads, rounds, batch = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    out = sys.argv[7] if len(sys.argv) > 7 else None
    if cmd == "bench-ort":
        bench_ort(model_dir, texts, threads, rounds, batch, out)
        return
    torch.set_num_threads(threads)
    model = SentenceTransformer(model_dir, device="cpu")
    tokens = sum(len(model.tokenizer(t, truncation=True, max_length=model.max_seq_length)["input_ids"]) for t in texts)
    model.encode(texts, batch_size=batch)  # warm-up
    emb = None
    for r in range(rounds):
        t0 = time.perf_counter()
        emb = model.encode(texts, batch_size=batch, convert_to_numpy=True)
        secs = time.perf_counter() - t0
        print(json.dumps({"impl": "sentence-transformers", "round": r, "texts": len(texts), "tokens": tokens,
                          "seconds": secs, "texts_per_s": len(texts) / secs, "tokens_per_s": tokens / secs,
                          "threads": threads, "torch": torch.__version__}), flush=True)
    if out:
        emb.astype("<f4").tofile(out)


def bench_ort(model_dir, texts, threads, rounds, batch, onnx_path):
    import os

    import numpy as np
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    names = ["input_ids", "attention_mask", "token_type_ids"]
    if not os.path.exists(onnx_path):
        base = AutoModel.from_pretrained(model_dir).eval()

        class Hidden(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.m(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

        ex = torch.ones(2, 8, dtype=torch.int64)
        torch.onnx.export(Hidden(base), (ex, ex, torch.zeros_like(ex)), onnx_path, input_names=names,
                          output_names=["hidden"], opset_version=17, dynamo=False,
                          dynamic_axes={k: {0: "batch", 1: "seq"} for k in names + ["hidden"]})
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    tk = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tk.enable_padding()
    tk.enable_truncation(256)

    def run():
        out, tokens = [], 0
        for i in range(0, len(texts), batch):
            encs = tk.encode_batch(texts[i:i + batch])
            ids = np.array([e.ids for e in encs], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
            tokens += int(mask.sum())
            h = sess.run(None, dict(zip(names, [ids, mask, np.zeros_like(ids)])))[0]
            m = mask[..., None].astype(np.float32)
            v = (h * m).sum(1) / m.sum(1)
            out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
        return np.concatenate(out), tokens

    run()  # warm-up
    for r in range(rounds):
        t0 = time.perf_counter()
        _, tokens = run()
        secs = time.perf_counter() - t0
        print(json.dumps({"impl": "onnxruntime", "round": r, "texts": len(texts), "tokens": tokens,
                          "seconds": secs, "texts_per_s": len(texts) / secs, "tokens_per_s": tokens / secs,
                          "threads": threads, "onnxruntime": ort.__version__}), flush=True)


if __name__ == "__main__":
    main()
