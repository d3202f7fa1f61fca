"""Writes the weights of the tiny random encoder models (tiny-bert-reranker, tiny-xlmr-reranker,
tiny-st-embedder) under crates/encoder/tests/fixtures/ from their committed config.json, with
numpy alone:

    python3 -m venv /tmp/w && /tmp/w/bin/pip install --no-deps -r models/test-fixtures-requirements.txt
    /tmp/w/bin/python crates/encoder/tests/golden-gen/make_weights.py

Each model gets one `model.safetensors`, in the dtype its config.json names (f16, f32, bf16), and
nothing else is touched. The values are seeded draws, so the files come out byte for byte the same
(models/make-test-fixtures.sh checks them against models/test-fixtures.sha256); the goldens under
../golden/ come from make_tiny_models.py, which runs `transformers` / `sentence-transformers` on
exactly these weights (and checks the names and shapes below with a strict load).

The init is transformers' own, with the configs' wide initializer_range (0.3) so that outputs
differ clearly between inputs: Linear weights and embeddings N(0, initializer_range^2) with the
padding row of a padded embedding zero, biases 0, LayerNorm weights 1. Each tensor has its own
stream, `default_rng([seed, crc32(name)])`, so one tensor's values do not depend on the others'.
"""
import json
import pathlib
import zlib

import numpy as np
from safetensors import TensorSpec, serialize_file

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures"

# name: model seed
MODELS = {"tiny-bert-reranker": 1, "tiny-xlmr-reranker": 2, "tiny-st-embedder": 3}

def encoder_layers(h, i, layers):
    shapes = {}
    for n in range(layers):
        p = f"encoder.layer.{n}."
        for lin in ("attention.self.query", "attention.self.key", "attention.self.value",
                    "attention.output.dense"):
            shapes[f"{p}{lin}.weight"] = (h, h)
            shapes[f"{p}{lin}.bias"] = (h,)
        shapes[p + "intermediate.dense.weight"] = (i, h)
        shapes[p + "intermediate.dense.bias"] = (i,)
        shapes[p + "output.dense.weight"] = (h, i)
        shapes[p + "output.dense.bias"] = (h,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{p}{ln}.weight"] = (h,)
            shapes[f"{p}{ln}.bias"] = (h,)
    return shapes


def tensor_shapes(cfg):
    """The state dict (name -> shape) of the model config.json describes, as transformers builds
    it (make_tiny_models.py checks this with a strict load), and the padding row of each padded
    embedding (name -> row)."""
    arch = cfg["architectures"][0]
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    body = {
        "embeddings.word_embeddings.weight": (cfg["vocab_size"], h),
        "embeddings.position_embeddings.weight": (cfg["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": (cfg["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
        **encoder_layers(h, i, cfg["num_hidden_layers"]),
    }
    padded = {"embeddings.word_embeddings.weight": cfg["pad_token_id"]}
    labels = len(cfg.get("id2label", {"0": None}))
    if arch in ("BertModel", "BertForSequenceClassification"):
        # BertModel keeps its pooler unless built with add_pooling_layer=False; the
        # sentence-transformers embedder is saved with it (unused by CLS pooling).
        body["pooler.dense.weight"] = (h, h)
        body["pooler.dense.bias"] = (h,)
    if arch == "BertModel":
        return body, padded
    if arch == "BertForSequenceClassification":
        shapes = {"bert." + k: s for k, s in body.items()}
        shapes["classifier.weight"] = (labels, h)
        shapes["classifier.bias"] = (labels,)
        return shapes, {"bert." + k: r for k, r in padded.items()}
    if arch == "XLMRobertaForSequenceClassification":
        # RoBERTa's positions start past the padding id, whose position row is padding too.
        padded["embeddings.position_embeddings.weight"] = cfg["pad_token_id"]
        shapes = {"roberta." + k: s for k, s in body.items()}
        shapes["classifier.dense.weight"] = (h, h)
        shapes["classifier.dense.bias"] = (h,)
        shapes["classifier.out_proj.weight"] = (labels, h)
        shapes["classifier.out_proj.bias"] = (labels,)
        return shapes, {"roberta." + k: r for k, r in padded.items()}
    raise ValueError(f"no tensor layout for {arch}")


def init(name):
    """transformers' rule for a tensor: "normal" (Linear and embedding weights), "ones"
    (LayerNorm weights) or "zeros" (biases)."""
    if "LayerNorm" in name:
        return "ones" if name.endswith(".weight") else "zeros"
    return "normal" if name.endswith(".weight") else "zeros"


def state_dict(cfg, seed):
    """name -> float32 values (before rounding to the stored dtype)."""
    shapes, padded = tensor_shapes(cfg)
    std = cfg["initializer_range"]
    sd = {}
    for name, shape in shapes.items():
        rule = init(name)
        if rule == "ones":
            x = np.ones(shape)
        elif rule == "zeros":
            x = np.zeros(shape)
        else:
            x = std * np.random.default_rng([seed, zlib.crc32(name.encode())]).standard_normal(shape)
            if name in padded:
                x[padded[name]] = 0
        sd[name] = x.astype(np.float32)
    return sd


def bf16_bits(x):
    """float32 -> bfloat16 bit patterns, rounded to nearest even (as torch's .to(bfloat16))."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def write_safetensors(path, sd, dtype):
    """`sd` stored as `dtype` ("float16", "float32" or "bfloat16"), with the header metadata
    transformers' save_pretrained writes."""
    arrays = {}
    for name, x in sd.items():
        arrays[name] = bf16_bits(x) if dtype == "bfloat16" else np.ascontiguousarray(x.astype(dtype))
    specs = {
        name: TensorSpec(dtype=dtype, shape=a.shape, data_ptr=a.ctypes.data, data_len=a.nbytes)
        for name, a in arrays.items()
    }
    serialize_file(specs, str(path), metadata={"format": "pt"})


def write_model(name, sd=None):
    """Writes `<name>/model.safetensors`; `sd` overrides the drawn weights."""
    d = FIXTURES / name
    cfg = json.loads((d / "config.json").read_text())
    sd = state_dict(cfg, MODELS[name]) if sd is None else sd
    write_safetensors(d / "model.safetensors", sd, cfg["dtype"])
    return sd


def main():
    for name in MODELS:
        sd = write_model(name)
        print(f"wrote {name}: {sum(x.size for x in sd.values())} parameters")


if __name__ == "__main__":
    main()
