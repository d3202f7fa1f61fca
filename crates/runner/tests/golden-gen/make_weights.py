"""Writes the weights of the tiny random models (cohere, cohere2, qwen3) under
crates/runner/tests/fixtures/tiny/ from their committed config.json and tokenizer files, with
numpy alone:

    python3 -m venv /tmp/w && /tmp/w/bin/pip install --no-deps -r models/test-fixtures-requirements.txt
    /tmp/w/bin/python crates/runner/tests/golden-gen/make_weights.py

For each architecture it writes `<arch>/model.safetensors` (f16) and `<arch>.gguf` (f16 matrices,
f32 norms, llama.cpp's tensor names and metadata keys, the tokenizer and chat template). Nothing
else is touched. The values are seeded draws, so the files come out byte for byte the same
(models/make-test-fixtures.sh checks them against models/test-fixtures.sha256); the reference
logits they are tested against come from make_tiny_models.py, which runs `transformers` on
exactly these weights (and checks the names and shapes below with a strict load).

Weights are random but not transformers' init (std 0.02 would make every logit ~0): matrices are
N(0, 1/fan_in), embeddings N(0, 1), norm weights 1 + N(0, 0.1^2), all rounded to f16 so that the
f16 files hold exactly the values the f32 reference ran on. Each tensor has its own stream,
`default_rng([seed, crc32(name)])`, so one tensor's values do not depend on the others'.
"""
import json
import pathlib
import zlib

import numpy as np
from gguf import GGUFWriter, TokenType
from safetensors.numpy import save_file

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE.parent / "fixtures" / "tiny"

# name: (model seed, GGUF architecture, GGUF tokenizer pre-tokenizer)
MODELS = {
    "cohere": (6, "command-r", "command-r"),
    "cohere2": (7, "cohere2", "command-r"),
    "qwen3": (3, "qwen3", "qwen2"),
}


def head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def tensor_shapes(cfg):
    """The Hugging Face state dict (name -> shape) of the model config.json describes, as
    transformers builds it (make_tiny_models.py checks this with a strict load)."""
    kind = cfg["model_type"]
    if kind not in ("cohere", "cohere2", "qwen3"):
        raise ValueError(f"no tensor layout for model_type {kind!r}")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise ValueError("biases are not part of these tiny layouts")
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    heads, kv, d = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim(cfg)
    shapes = {"model.embed_tokens.weight": (v, h)}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes[p + "input_layernorm.weight"] = (h,)
        # Cohere's blocks are parallel (one norm feeds attention and MLP); Qwen3's are sequential.
        if kind == "qwen3":
            shapes[p + "post_attention_layernorm.weight"] = (h,)
        shapes[p + "self_attn.q_proj.weight"] = (heads * d, h)
        shapes[p + "self_attn.k_proj.weight"] = (kv * d, h)
        shapes[p + "self_attn.v_proj.weight"] = (kv * d, h)
        shapes[p + "self_attn.o_proj.weight"] = (h, heads * d)
        if kind == "qwen3":
            shapes[p + "self_attn.q_norm.weight"] = (d,)
            shapes[p + "self_attn.k_norm.weight"] = (d,)
        elif kind == "cohere" and cfg.get("use_qk_norm"):
            # Command R's per-head LayerNorm keeps one row of weights per head.
            shapes[p + "self_attn.q_norm.weight"] = (heads, d)
            shapes[p + "self_attn.k_norm.weight"] = (kv, d)
        shapes[p + "mlp.gate_proj.weight"] = (i, h)
        shapes[p + "mlp.up_proj.weight"] = (i, h)
        shapes[p + "mlp.down_proj.weight"] = (h, i)
    shapes["model.norm.weight"] = (h,)
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (v, h)
    return shapes


def draw(name, shape, seed):
    """One tensor's seeded values, f16-rounded."""
    z = np.random.default_rng([seed, zlib.crc32(name.encode())]).standard_normal(shape)
    if "norm" in name:
        x = 1 + 0.1 * z
    elif "embed" in name:
        x = z
    else:
        x = z / np.sqrt(shape[-1])
    return x.astype(np.float16)


def state_dict(cfg, seed):
    return {name: draw(name, shape, seed) for name, shape in tensor_shapes(cfg).items()}


def gguf_tokenizer(w, tokenizer, tokenizer_config, pre):
    vocab = dict(tokenizer["model"]["vocab"])
    added = {a["content"]: a for a in tokenizer["added_tokens"]}
    vocab.update({t: a["id"] for t, a in added.items()})
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    types = []
    for t in tokens:
        if t in added:
            types.append(TokenType.CONTROL if added[t]["special"] else TokenType.USER_DEFINED)
        else:
            types.append(TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    if tokenizer_config["bos_token"] is not None:
        w.add_bos_token_id(vocab[tokenizer_config["bos_token"]])
    w.add_eos_token_id(vocab[tokenizer_config["eos_token"]])
    w.add_add_bos_token(tokenizer_config["add_bos_token"])
    w.add_chat_template(tokenizer_config["chat_template"])


def write_gguf(path, arch, pre, cfg, sd, tokenizer, tokenizer_config):
    """GGUF with llama.cpp's tensor names (gguf.TENSOR_NAMES) and metadata keys (those of
    convert_hf_to_gguf.py): f16 matrices and embeddings, f32 norms."""
    w = GGUFWriter(str(path), arch)
    w.add_name(f"tiny-random-{arch}")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_key_length(head_dim(cfg))
    w.add_value_length(head_dim(cfg))
    kind = cfg["model_type"]
    if kind == "qwen3":
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    else:
        w.add_layer_norm_eps(cfg["layer_norm_eps"])
        w.add_logit_scale(cfg["logit_scale"])
        w.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
        if kind == "cohere2":
            w.add_sliding_window(cfg["sliding_window"])
    gguf_tokenizer(w, tokenizer, tokenizer_config, pre)
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    matrices = {
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    norms = {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_norm.weight": "attn_q_norm.weight",
        "self_attn.k_norm.weight": "attn_k_norm.weight",
    }
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        for hf, gg in matrices.items():
            w.add_tensor(f"blk.{n}.{gg}", sd[p + hf])
        for hf, gg in norms.items():
            if p + hf in sd:
                w.add_tensor(f"blk.{n}.{gg}", sd[p + hf].astype(np.float32))
    w.add_tensor("output_norm.weight", sd["model.norm.weight"].astype(np.float32))
    if not cfg["tie_word_embeddings"]:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def load_json(path):
    return json.loads(path.read_text())


def write_model(name, sd=None):
    """Writes `<name>/model.safetensors` and `<name>.gguf`; `sd` overrides the drawn weights."""
    seed, arch, pre = MODELS[name]
    d = OUT / name
    cfg = load_json(d / "config.json")
    sd = state_dict(cfg, seed) if sd is None else sd
    # transformers' save_pretrained writes the same header metadata.
    save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
    write_gguf(OUT / f"{name}.gguf", arch, pre, cfg, sd,
               load_json(d / "tokenizer.json"), load_json(d / "tokenizer_config.json"))
    return sd


def main():
    for name in MODELS:
        sd = write_model(name)
        print(f"wrote {name}: {sum(x.size for x in sd.values())} parameters")


if __name__ == "__main__":
    main()
