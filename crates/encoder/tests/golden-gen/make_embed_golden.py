"""Golden sentence embeddings of all-MiniLM-L6-v2, from sentence-transformers on the same weights.

    models/fetch-minilm.sh
    python3 -m venv /tmp/encoder-golden && /tmp/encoder-golden/bin/pip install -r requirements.txt
    /tmp/encoder-golden/bin/python crates/encoder/tests/golden-gen/make_embed_golden.py

Writes ../golden/embed-all-MiniLM-L6-v2.json: the texts, its token ids after
sentence-transformers' own truncation (max_seq_length 256), and its normalized embedding (f32,
written with 9 significant digits so the file round-trips to the same floats). Each text is
encoded alone (batch_size=1), so no padding is involved on the reference side either.
"""
import json
import pathlib

import torch
from sentence_transformers import SentenceTransformer

from corpus import TEXTS

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[3]
MODEL = REPO / "models" / "cache" / "all-MiniLM-L6-v2"
OUT = HERE.parent / "golden" / "embed-all-MiniLM-L6-v2.json"


def dump(doc):
    """JSON with one text per line: readable diffs, no line per float."""
    head = {k: v for k, v in doc.items() if k != "texts"}
    lines = [json.dumps(r, ensure_ascii=False) for r in doc["texts"]]
    body = json.dumps(head, ensure_ascii=False)[:-1]
    return body + ', "texts": [\n' + ",\n".join(lines) + "\n]}\n"


def main():
    torch.manual_seed(0)
    model = SentenceTransformer(str(MODEL), device="cpu")
    tok = model.tokenizer
    rows = []
    for text in TEXTS:
        ids = tok(text, truncation=True, max_length=model.max_seq_length)["input_ids"]
        emb = model.encode([text], batch_size=1, convert_to_numpy=True)[0]
        rows.append(
            {
                "text": text,
                "ids": ids,
                "embedding": [float(f"{v:.9g}") for v in emb.tolist()],
            }
        )
    doc = {
        "model": "all-MiniLM-L6-v2",
        "reference": "sentence-transformers "
        + __import__("sentence_transformers").__version__
        + ", torch "
        + torch.__version__,
        "max_seq_length": model.max_seq_length,
        "dimension": len(rows[0]["embedding"]),
        "texts": rows,
    }
    OUT.write_text(dump(doc))
    print(f"wrote {OUT} ({len(rows)} texts)")


if __name__ == "__main__":
    main()
