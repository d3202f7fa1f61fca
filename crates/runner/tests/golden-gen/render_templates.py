"""Renders the template goldens with Python Jinja2 the way `transformers` renders chat templates.

    python3 crates/runner/tests/golden-gen/make_chats.py
    python3 crates/runner/tests/golden-gen/render_templates.py

Needs only `jinja2` (pip install jinja2, in a scratch virtualenv). The environment mirrors
transformers' `_compile_jinja_template`: ImmutableSandboxedEnvironment with trim_blocks,
lstrip_blocks, the loopcontrols extension, and its `raise_exception`, `tojson` and
`strftime_now`; the render call mirrors `render_jinja_template` (tools/documents are None when
empty, special tokens passed only when the tokenizer has them).
"""
import json
import pathlib
from datetime import datetime

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

GOLDEN = pathlib.Path(__file__).resolve().parent.parent / "golden" / "text"

# name -> (file, special tokens the model's tokenizer declares)
TEMPLATES = {
    "smollm2": ("smollm2.jinja", {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}),
    "builtin-gemma": ("builtin-gemma.jinja", {"bos_token": "<bos>", "eos_token": "<eos>"}),
    "builtin-chatml": ("builtin-chatml.jinja", {"eos_token": "<|im_end|>"}),
    "qwen2.5": ("qwen2.5.jinja", {"eos_token": "<|im_end|>"}),
    "python-features": ("python-features.jinja", {"bos_token": "<s>", "eos_token": "</s>"}),
    # The real templates of the families without small real weights (see
    # golden/text/templates/SOURCES.md for where each file comes from).
    "command-r7b-tool_use": (
        "command-r7b-tool_use.jinja",
        {"bos_token": "<BOS_TOKEN>", "eos_token": "<|END_OF_TURN_TOKEN|>"},
    ),
    "cohere-north": ("cohere-north.jinja", {"bos_token": "<BOS_TOKEN>", "eos_token": "<|END_OF_TURN_TOKEN|>"}),
    "qwen3": ("qwen3.jinja", {"eos_token": "<|im_end|>"}),
}


def switches(chat):
    """runner::chat::ChatPrompt's optional switches as the template variables the runner sets."""
    out = {}
    if "thinking" in chat:
        out["enable_thinking"] = chat["thinking"]
        out["reasoning"] = chat["thinking"]
    if "safety_mode" in chat:
        # Off reaches templates as NONE, the spelling Cohere's Command templates test for.
        out["safety_mode"] = {"OFF": "NONE"}.get(chat["safety_mode"], chat["safety_mode"])
    if "citations" in chat:
        out["enable_citations"] = chat["citations"]
    return out


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return datetime.now().strftime(format)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    env = environment()
    chats = json.loads((GOLDEN / "chats.json").read_text(encoding="utf-8"))
    out = {}
    for name, (file, special) in TEMPLATES.items():
        source = (GOLDEN / "templates" / file).read_text(encoding="utf-8")
        template = env.from_string(source)
        results = {}
        for chat in chats:
            try:
                text = template.render(
                    messages=chat["messages"],
                    tools=chat["tools"] or None,
                    documents=chat["documents"] or None,
                    add_generation_prompt=chat["add_generation_prompt"],
                    **special,
                    **switches(chat),
                )
                results[chat["name"]] = {"text": text}
            except TemplateError as e:
                # raise_exception's message, or Jinja's own error: either way an error.
                results[chat["name"]] = {"error": str(e)}
            except (TypeError, AttributeError) as e:
                # The template fails on this chat in Python too (e.g. a loop over `tools` that
                # is None); only the fact that it fails is compared.
                results[chat["name"]] = {"render_error": f"{type(e).__name__}: {e}"}
        out[name] = {"file": file, "special_tokens": special, "renders": results}
    path = GOLDEN / "rendered.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
