"""Makes the tiny random models of the architectures cohost has no small real weights for
(cohere, cohere2, qwen3), in both formats, with reference logits from Hugging Face `transformers`.
A developer's tool: the suite never runs it (models/make-test-fixtures.sh runs make_weights.py).

    python3 -m venv /tmp/tiny && /tmp/tiny/bin/pip install -r crates/runner/tests/golden-gen/requirements-tiny.txt
    /tmp/tiny/bin/python crates/runner/tests/golden-gen/make_tiny_models.py

(torch's CPU build is enough; the versions pinned there are the ones the committed files were made
with.) For each architecture it writes, under crates/runner/tests/fixtures/tiny/:

- `<arch>/`: a Hugging Face directory (config.json, tokenizer.json, tokenizer_config.json with the
  family's real chat template, generation_config.json), then, from those files,
  make_weights.py's model.safetensors (f16);
- `<arch>.gguf` (make_weights.py): the same weights (f16 matrices, f32 norms) under llama.cpp's
  GGUF names and metadata keys (those of convert_hf_to_gguf.py), with the tokenizer and chat
  template;
- `<arch>.reference.json`: prompts (token ids), a continuation per prompt, and transformers'
  float32 logits for the last prompt position and each continuation position, computed on the
  weights make_weights.py wrote (loaded strictly, so its tensor names and shapes are checked
  against transformers' model).

The weights' init (seeded numpy draws, rounded to f16) is described in make_weights.py.

The tokenizer is a byte-level BPE of a few hundred tokens trained here on a fixed text, with the
family's special tokens, so that `cohost serve` can run a chat end to end (the text is noise).
"""
import json
import pathlib
import random

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    Cohere2Config,
    Cohere2ForCausalLM,
    CohereConfig,
    CohereForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

import make_weights

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


def write_hf_dir(dir, model, cfg, tok, tokenizer_config, generation_config):
    """Everything but the weights (make_weights.py writes those from these files)."""
    dir.mkdir(parents=True, exist_ok=True)
    # What model.to(float16).save_pretrained would write as config.json.
    cfg.architectures = [type(model).__name__]
    cfg.dtype = torch.float16
    cfg.save_pretrained(dir)
    tok.save(str(dir / "tokenizer.json"))
    (dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (dir / "generation_config.json").write_text(json.dumps(generation_config, indent=2) + "\n")


def load_weights(model, cfg, path):
    """The weight maker's file into the transformers model, strictly: a name or shape that
    make_weights.tensor_shapes gets wrong fails here."""
    sd = load_file(path)
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight is model.model.embed_tokens.weight
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    model.float().load_state_dict(sd, strict=True)
    return model.float()


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
        window = 8
    else:
        cfg = Cohere2Config(num_hidden_layers=4, sliding_window=8, **common)
        model = Cohere2ForCausalLM(cfg)
        window = cfg.sliding_window
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
    return arch, cfg, model, tok, tokenizer_config, generation, window


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
    return "qwen3", cfg, model, tok, tokenizer_config, generation, 8


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for make in (lambda: cohere_like("cohere"), lambda: cohere_like("cohere2"), qwen3):
        name, cfg, model, tok, tok_cfg, gen, window = make()
        write_hf_dir(OUT / name, model, cfg, tok, tok_cfg, gen)
        make_weights.write_model(name)
        model = load_weights(model, cfg, OUT / name / "model.safetensors")
        refs = reference(model, seed=7, window=window)
        (OUT / f"{name}.reference.json").write_text(
            json.dumps({"architecture": name, "vocab": VOCAB, "cases": refs}) + "\n"
        )
        print(f"wrote {name}: {sum(p.numel() for p in model.parameters())} parameters")


if __name__ == "__main__":
    main()
