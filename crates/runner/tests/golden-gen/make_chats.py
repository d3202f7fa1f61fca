"""Writes the chats that the template goldens render (../golden/text/chats.json).

Messages have the shape runner::chat::ChatMessage serializes to: `tool_calls`,
`tool_call_id`, `reasoning_content` and `tool_plan` appear only when set. A chat's optional
`thinking`, `safety_mode` and `citations` are runner::chat::ChatPrompt's switches; the render
script passes them as the template variables the runner sets (`enable_thinking` and `reasoning`,
`safety_mode`, `enable_citations`), and leaves them undefined when absent.
"""
import json
import pathlib

OUT = pathlib.Path(__file__).resolve().parent.parent / "golden" / "text" / "chats.json"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        # Deliberately not in alphabetical order: key order must survive rendering.
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City name, e.g. Madrid"},
                "unit": {"type": "string", "enum": ["C", "F"]},
            },
            "required": ["location"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}},
            "required": ["zone"],
        },
    },
}


def msg(role, content, tool_calls=None, tool_call_id=None, reasoning_content=None, tool_plan=None):
    m = {"role": role, "content": content}
    if tool_calls:
        m["tool_calls"] = tool_calls
    if tool_call_id is not None:
        m["tool_call_id"] = tool_call_id
    if reasoning_content is not None:
        m["reasoning_content"] = reasoning_content
    if tool_plan is not None:
        m["tool_plan"] = tool_plan
    return m


def call(id, name, arguments):
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


CHATS = [
    {"name": "single-user", "messages": [msg("user", "Hello!")], "add_generation_prompt": True},
    {
        "name": "system-user",
        "messages": [msg("system", "You are a terse assistant."), msg("user", "What is 2+2?")],
        "add_generation_prompt": True,
    },
    {
        "name": "multi-turn",
        "messages": [
            msg("system", "Answer in one sentence."),
            msg("user", "Name a planet."),
            msg("assistant", "Mars is a planet."),
            msg("user", "Another one?"),
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "no-generation-prompt",
        "messages": [msg("user", "Hello there"), msg("assistant", "General Kenobi.")],
        "add_generation_prompt": False,
    },
    {
        "name": "tool-call",
        "tools": [WEATHER_TOOL],
        "messages": [
            msg("system", "You can look up the weather."),
            msg("user", "What's the weather in Madrid?"),
            msg("assistant", "", [call("call_1", "get_weather", {"location": "Madrid", "unit": "C"})]),
            msg("tool", '{"temperature": 21, "sky": "clear"}', tool_call_id="call_1"),
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "parallel-tools",
        "tools": [WEATHER_TOOL, TIME_TOOL],
        "messages": [
            msg("user", "Weather and time in Tokyo, please."),
            msg(
                "assistant",
                "Let me check both.",
                [
                    call("call_a", "get_weather", {"unit": "C", "location": "Tokyo", "days": 1.5}),
                    call("call_b", "get_time", {"zone": "Asia/Tokyo", "nested": {"z": [1, None, True], "a": "ü"}}),
                ],
            ),
            msg("tool", "18 C, rain", tool_call_id="call_a"),
            msg("tool", "21:04", tool_call_id="call_b"),
            msg("assistant", "It is 18 C with rain, and 21:04."),
            msg("user", "Thanks!"),
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "unicode",
        "messages": [
            msg("user", "Répète: naïve café, 你好世界, 🎉👨\u200d👩\u200d👧\u200d👦, \"quotes\" and 'apostrophes'"),
            msg("assistant", "Ça va! 😀 日本語"),
            msg("user", "  leading and trailing whitespace \n\n"),
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "jinja-lookalike",
        "messages": [msg("user", "{{ not_a_variable }} {% if x %} <|im_end|> \\n backslash")],
        "add_generation_prompt": True,
    },
    {
        "name": "documents",
        "documents": [{"title": "Tall penguins", "text": "Emperor penguins are the tallest."}],
        "messages": [msg("user", "Which penguins are tallest?")],
        "add_generation_prompt": True,
    },
    {
        "name": "thinking-on",
        "thinking": True,
        "messages": [
            msg("user", "What is 17 * 3?"),
            msg("assistant", "51.", reasoning_content="17 * 3 = 51."),
            msg("user", "And 17 * 4?"),
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "thinking-off",
        "thinking": False,
        "messages": [msg("system", "Be brief."), msg("user", "Say hi.")],
        "add_generation_prompt": True,
    },
    {
        "name": "thinking-in-content",
        "messages": [
            msg("user", "Pick a colour."),
            msg("assistant", "<think>\nBlue is calm.\n</think>\n\nBlue."),
            msg("user", "Why?"),
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "rag-tools-safety-citations",
        "safety_mode": "STRICT",
        "citations": True,
        "thinking": True,
        "tools": [WEATHER_TOOL],
        "documents": [
            {"title": "Tall penguins", "text": "Emperor penguins are the tallest."},
            {"title": "Penguin habitats", "text": "Emperor penguins only live in Antarctica."},
        ],
        "messages": [
            msg("system", "You are a polar expert."),
            msg("user", "Where do the tallest penguins live, and how cold is it there?"),
            msg(
                "assistant",
                "",
                [call("call_w", "get_weather", {"location": "McMurdo Station"})],
                reasoning_content="I will look up the weather at McMurdo.",
                tool_plan="I will look up the weather at McMurdo.",
            ),
            msg("tool", '{"temperature": -25}', tool_call_id="call_w"),
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "safety-off-no-thinking",
        "safety_mode": "OFF",
        "thinking": False,
        "messages": [msg("user", "Tell me a joke.")],
        "add_generation_prompt": True,
    },
    {
        "name": "roles-not-alternating",
        "messages": [msg("user", "one"), msg("user", "two")],
        "add_generation_prompt": True,
    },
]

if __name__ == "__main__":
    for chat in CHATS:
        chat.setdefault("tools", [])
        chat.setdefault("documents", [])
    OUT.write_text(json.dumps(CHATS, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
