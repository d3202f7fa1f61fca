"""Makes the tiny random models of the architectures cohost has no small real weights for
(cohere, cohere2, qwen3), in both formats, with reference logits from Hugging Face `transformers`.

    python3 -m venv /tmp/tiny && /tmp/tiny/bin/pip install -r crates/runner/tests/golden-gen/requirements-tiny.txt
    /tmp/tiny/bin/python crates/runner/tests/golden-gen/make_tiny_models.py

(torch's CPU build is enough; the versions pinned there are the ones the committed files were made
with.) For each architecture it writes, under crates/runner/tests/fixtures/tiny/:

- `<arch>/`: a Hugging Face directory (config.json, model.safetensors in f16, tokenizer.json,
  tokenizer_config.json with the family's real chat template, generation_config.json);
- `<arch>.gguf`: the same weights (f16 matrices, f32 norms) under llama.cpp's GGUF names and
  metadata keys (those of convert_hf_to_gguf.py), with the tokenizer and chat template;
- `<arch>.reference.json`: prompts (token ids), a continuation per prompt, and transformers'
  float32 logits for the last prompt position and each continuation position.

Weights are random but not transformers' init (std 0.02 would make every logit ~0): matrices are
N(0, 1/fan_in), embeddings N(0, 1), norm weights 1 + N(0, 0.1^2), all rounded to f16 so that the
f16 files hold exactly the values the f32 reference ran on.

The tokenizer is a byte-level BPE of a few hundred tokens trained here on a fixed text, with the
family's special tokens, so that `cohost serve` can run a chat end to end (the text is noise).
"""
import json
import pathlib
import random

import numpy as np
import torch
from gguf import GGUFWriter, GGMLQuantizationType, TokenType
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    Cohere2Config,
    Cohere2ForCausalLM,
    CohereConfig,
    CohereForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE.parent / "fixtures" / "tiny"
TEMPLATES = HERE.parent / "golden" / "text" / "templates"

VOCAB = 320
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

COHERE_SPECIALS = [
    "<PAD>", "<UNK>", "<CLS>", "<SEP>", "<MASK_TOKEN>", "<BOS_TOKEN>", "<EOS_TOKEN>", "<EOP_TOKEN>",
    "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>",
    "<|SYSTEM_TOKEN|>", "<|START_THINKING|>", "<|END_THINKING|>", "<|START_ACTION|>",
    "<|END_ACTION|>", "<|START_RESPONSE|>", "<|END_RESPONSE|>", "<|START_TOOL_RESULT|>",
    "<|END_TOOL_RESULT|>",
]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen3 declares these as added tokens that are not special.
QWEN_ADDED = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

CORPUS = [
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France.",
    "Hello! How are you today? I am fine, thank you. What is the weather like in Toronto?",
    "Cohere builds language models. Command R7B answers questions with citations from documents.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 2024. Tools: get_weather, search, calculator.",
    "def main():\n    print('hello world')\n\nfor i in range(10):\n    total += i\n",
]


def train_tokenizer(specials, added, digits_split):
    """Byte-level BPE of VOCAB tokens; specials first (ids 0..), added tokens after the merges."""
    tok = Tokenizer(models.BPE())
    if digits_split:
        # Command R's split: digits one by one, then GPT-2's byte-level regex.
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(pattern=__import__("tokenizers").Regex(QWEN2_REGEX), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - len(added),
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    if added:
        tok.add_tokens(added)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    return tok


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif "embed" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
            # f16-representable, so the f16 files hold exactly what the reference ran on.
            p.copy_(p.half().float())


def write_hf_dir(dir, model, tok, tokenizer_config, generation_config):
    dir.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(dir, safe_serialization=True)
    model.to(torch.float32)
    tok.save(str(dir / "tokenizer.json"))
    (dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (dir / "generation_config.json").write_text(json.dumps(generation_config, indent=2) + "\n")


def gguf_tokenizer(w, tok, pre, bos, eos, add_bos, template):
    vocab = tok.get_vocab()
    tokens = [None] * VOCAB
    for t, i in vocab.items():
        tokens[i] = t
    added = {a.content: a for a in tok.get_added_tokens_decoder().values()}
    types = []
    for t in tokens:
        if t in added:
            types.append(TokenType.CONTROL if added[t].special else TokenType.USER_DEFINED)
        else:
            types.append(TokenType.NORMAL)
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    if bos is not None:
        w.add_bos_token_id(vocab[bos])
    w.add_eos_token_id(vocab[eos])
    w.add_add_bos_token(add_bos)
    w.add_chat_template(template)


def f16(t):
    return t.detach().to(torch.float16).numpy()


def f32(t):
    return t.detach().to(torch.float32).numpy()


def write_gguf(path, arch, model, cfg, tok, tok_args, extra):
    """GGUF with llama.cpp's tensor names (gguf.TENSOR_NAMES) and metadata keys."""
    w = GGUFWriter(str(path), arch)
    w.add_name(f"tiny-random-{arch}")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    extra(w)
    gguf_tokenizer(w, tok, **tok_args)
    sd = model.state_dict()
    w.add_tensor("token_embd.weight", f16(sd["model.embed_tokens.weight"]))
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        names = {
            "self_attn.q_proj.weight": "attn_q.weight",
            "self_attn.k_proj.weight": "attn_k.weight",
            "self_attn.v_proj.weight": "attn_v.weight",
            "self_attn.o_proj.weight": "attn_output.weight",
            "mlp.gate_proj.weight": "ffn_gate.weight",
            "mlp.up_proj.weight": "ffn_up.weight",
            "mlp.down_proj.weight": "ffn_down.weight",
        }
        for hf, gg in names.items():
            w.add_tensor(f"blk.{i}.{gg}", f16(sd[p + hf]))
        norms = {
            "input_layernorm.weight": "attn_norm.weight",
            "post_attention_layernorm.weight": "ffn_norm.weight",
            "self_attn.q_norm.weight": "attn_q_norm.weight",
            "self_attn.k_norm.weight": "attn_k_norm.weight",
        }
        for hf, gg in norms.items():
            if p + hf in sd:
                w.add_tensor(f"blk.{i}.{gg}", f32(sd[p + hf]))
    w.add_tensor("output_norm.weight", f32(sd["model.norm.weight"]))
    if not cfg.tie_word_embeddings:
        w.add_tensor("output.weight", f16(sd["lm_head.weight"]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def reference(model, seed, window):
    """Prompts of mixed lengths (one past twice the sliding window), 3 continuation tokens each,
    and float32 logits at the last prompt position and every continuation position."""
    rng = random.Random(seed)
    lengths = [1, 5, window + 3, 2 * window + 13]
    cases = []
    model.eval()
    for n in lengths:
        prompt = [rng.randrange(VOCAB) for _ in range(n)]
        cont = [rng.randrange(VOCAB) for _ in range(3)]
        ids = torch.tensor([prompt + cont])
        with torch.no_grad():
            logits = model(ids).logits[0]
        rows = [logits[n - 1 + k].tolist() for k in range(len(cont) + 1)]
        cases.append({"prompt": prompt, "continuation": cont, "logits": [[float(f"{x:.7g}") for x in r] for r in rows]})
    return cases


def cohere_like(arch):
    tok = train_tokenizer(COHERE_SPECIALS, [], digits_split=True)
    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        layer_norm_eps=1e-5,
        logit_scale=0.25,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=5,
        eos_token_id=9,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        attn_implementation="eager",
    )
    if arch == "cohere":
        cfg = CohereConfig(num_hidden_layers=2, use_qk_norm=True, **common)
        model = CohereForCausalLM(cfg)
        gguf_arch = "command-r"
        window = 8
    else:
        cfg = Cohere2Config(num_hidden_layers=4, sliding_window=8, **common)
        model = Cohere2ForCausalLM(cfg)
        gguf_arch = "cohere2"
        window = cfg.sliding_window
    randomize(model, seed=len(arch))
    # Command R7B's tool_use template: it renders plain chats, documents and tools alike.
    template = (TEMPLATES / "command-r7b-tool_use.jinja").read_text()
    tokenizer_config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<BOS_TOKEN>",
        "eos_token": "<|END_OF_TURN_TOKEN|>",
        "pad_token": "<PAD>",
        "unk_token": "<UNK>",
        "model_max_length": cfg.max_position_embeddings,
        "tokenizer_class": "CohereTokenizer",
        "chat_template": template,
    }
    generation = {"bos_token_id": 5, "eos_token_id": [tok.token_to_id("<|END_OF_TURN_TOKEN|>")], "pad_token_id": 0}

    def extra(w):
        w.add_layer_norm_eps(cfg.layer_norm_eps)
        w.add_logit_scale(cfg.logit_scale)
        w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
        if arch == "cohere2":
            w.add_sliding_window(cfg.sliding_window)

    tok_args = dict(pre="command-r", bos="<BOS_TOKEN>", eos="<|END_OF_TURN_TOKEN|>", add_bos=True,
                    template=template)
    return arch, gguf_arch, cfg, model, tok, tokenizer_config, generation, extra, tok_args, window


def qwen3():
    tok = train_tokenizer(QWEN_SPECIALS, QWEN_ADDED, digits_split=False)
    cfg = Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        bos_token_id=None,
        eos_token_id=tok.token_to_id("<|im_end|>"),
        attn_implementation="eager",
    )
    model = Qwen3ForCausalLM(cfg)
    randomize(model, seed=3)
    template = (TEMPLATES / "qwen3.jinja").read_text()
    tokenizer_config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": cfg.max_position_embeddings,
        "tokenizer_class": "Qwen2Tokenizer",
        "chat_template": template,
    }
    generation = {"eos_token_id": [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")]}

    def extra(w):
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)

    tok_args = dict(pre="qwen2", bos=None, eos="<|im_end|>", add_bos=False, template=template)
    return "qwen3", "qwen3", cfg, model, tok, tokenizer_config, generation, extra, tok_args, 8


def main():
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    for make in (lambda: cohere_like("cohere"), lambda: cohere_like("cohere2"), qwen3):
        name, gguf_arch, cfg, model, tok, tok_cfg, gen, extra, tok_args, window = make()
        model = model.float()
        refs = reference(model, seed=7, window=window)
        write_hf_dir(OUT / name, model, tok, tok_cfg, gen)
        write_gguf(OUT / f"{name}.gguf", gguf_arch, model, cfg, tok, tok_args, extra)
        (OUT / f"{name}.reference.json").write_text(
            json.dumps({"architecture": name, "vocab": VOCAB, "cases": refs}) + "\n"
        )
        print(f"wrote {name}: {sum(p.numel() for p in model.parameters())} parameters")


if __name__ == "__main__":
    main()
