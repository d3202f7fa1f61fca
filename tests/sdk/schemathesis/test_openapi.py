"""Property-based tests from Cohere's official OpenAPI file (cohere-openapi.yaml beside this file, an
unmodified copy of the published spec, kept here so that a clean clone has it),
limited to the operations cohost implements: no request may give a 5xx, every response must
match the spec's schema for its status, and every error body must be exactly {"id","message"}.

The spec is used as published except for the corrections in SPEC_CORRECTIONS below: each is a
mistake in the file, fixed here and explained, rather than bent into the server.
"""

import copy
import json
import os
import pathlib
import uuid

import jsonschema_rs
import schemathesis
import yaml
from hypothesis import HealthCheck, settings

from conftest import TOTALS

SPEC_PATH = pathlib.Path(
    os.environ.get("COHOST_OPENAPI", pathlib.Path(__file__).with_name("cohere-openapi.yaml"))
)
BASE_URL = os.environ["COHOST_SDK_URL"]
MODEL = os.environ.get("COHOST_SDK_MODEL", "SmolLM2-135M-Instruct.Q4_1")
OPERATIONS = [
    ("POST", "/v2/chat"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model}"),
    ("POST", "/v1/tokenize"),
    ("POST", "/v1/detokenize"),
    ("POST", "/v1/check-api-key"),
]
# Cases per operation in the fuzzing phase (plus the spec's own examples); chat gets most.
MAX_EXAMPLES = int(os.environ.get("COHOST_OPENAPI_EXAMPLES", "25"))


def load_spec() -> dict:
    with SPEC_PATH.open() as f:
        spec = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    # YAML reads unquoted dates in examples as datetimes; JSON Schema tools want plain JSON.
    return json.loads(json.dumps(spec, default=str))


def request_schema(spec, method, path):
    return spec["paths"][path][method.lower()]["requestBody"]["content"]["application/json"][
        "schema"
    ]


def correct_spec(spec: dict) -> dict:
    """SPEC_CORRECTIONS: mistakes in the official file, and the one deliberate narrowing."""
    spec = copy.deepcopy(spec)
    schemas = spec["components"]["schemas"]

    # 1. LogprobItem lists `token` and `logprob` as required, but its properties (and the real
    #    API, and both SDKs) are `text`, `token_ids` and `logprobs`; the SDKs require token_ids.
    assert schemas["LogprobItem"]["required"] == ["token", "token_ids", "logprob"]
    schemas["LogprobItem"]["required"] = ["token_ids"]

    # 2. A streamed chat (`"stream": true`) answers `text/event-stream`, as the file's own
    #    `x-fern-streaming` block says, but the 200 response lists only application/json. The
    #    stream is declared here and its events are checked one by one against the spec's
    #    event schemas by `sse_events_match_the_spec` below.
    chat_200 = spec["paths"]["/v2/chat"]["post"]["responses"]["200"]["content"]
    chat_200["text/event-stream"] = {"schema": {}}

    # 3. Not a mistake: `model` is narrowed to the served model, so that generated requests get
    #    past the model check and reach validation and generation. Unknown models (404) are
    #    covered by the SDK suites.
    for method, path in [("POST", "/v2/chat"), ("POST", "/v1/tokenize"), ("POST", "/v1/detokenize")]:
        request_schema(spec, method, path)["properties"]["model"] = {"type": "string", "enum": [MODEL]}
    for parameter in spec["paths"]["/v1/models/{model}"]["get"]["parameters"]:
        if parameter.get("name") == "model":
            parameter["schema"] = {"type": "string", "enum": [MODEL]}
    return spec


SPEC = correct_spec(load_spec())
schema = schemathesis.openapi.from_dict(SPEC)
schema.config.update(base_url=BASE_URL, request_timeout=120)
schema.config.phases.update(
    phases=os.environ.get("COHOST_OPENAPI_PHASES", "examples,coverage,fuzzing").split(",")
)
schema.config.generation.update(max_examples=MAX_EXAMPLES)
schema = schema.include(
    lambda ctx: (ctx.operation.method.upper(), ctx.operation.path) in OPERATIONS
)

# --- checks of our own ---------------------------------------------------------------------

_EVENT_VALIDATORS: dict = {}
_STREAM_EVENT_SCHEMAS = SPEC["paths"]["/v2/chat"]["post"]["x-fern-streaming"]["response-stream"][
    "discriminator"
]["mapping"]


def event_validator(event_type: str):
    """A validator for one stream event type, resolving the spec's refs inside the file."""
    if event_type not in _EVENT_VALIDATORS:
        ref = _STREAM_EVENT_SCHEMAS[event_type]
        document = {"$ref": ref, "components": SPEC["components"]}
        _EVENT_VALIDATORS[event_type] = jsonschema_rs.validator_for(document)
    return _EVENT_VALIDATORS[event_type]


def error_body_is_id_and_message(ctx, response, case):
    """Every error, on every route, is exactly {"id": "<uuid>", "message": "<text>"} in JSON."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"error content type {content_type!r}"
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"id", "message"}, body
    assert isinstance(body["message"], str) and body["message"], body
    uuid.UUID(body["id"])
    return True


def sse_events_match_the_spec(ctx, response, case):
    """A streamed chat: one `data:` line per event, each a spec-valid event, ending [DONE]."""
    content_type = response.headers.get("content-type", [""])[0]
    if not content_type.startswith("text/event-stream"):
        return None
    text = response.content.decode()
    assert text.endswith("data: [DONE]\n\n"), text[-200:]
    datas = []
    for frame in text.split("\n\n"):
        lines = [line for line in frame.split("\n") if line.startswith("data:")]
        if lines:
            assert len(lines) == 1, frame
            datas.append(lines[0][len("data:") :].strip())
    assert datas.pop() == "[DONE]"
    types = []
    for data in datas:
        event = json.loads(data)
        types.append(event["type"])
        errors = [e.message for e in event_validator(event["type"]).iter_errors(event)]
        assert not errors, (event, errors)
    assert types[0] == "message-start" and types[-1] == "message-end", types
    return True


CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.specs.openapi.checks.status_code_conformance,
    schemathesis.specs.openapi.checks.content_type_conformance,
    schemathesis.specs.openapi.checks.response_schema_conformance,
]


@schema.parametrize()
@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)
def test_operation_follows_the_spec(case):
    response = case.call(timeout=120)
    TOTALS[(f"{case.method.upper()} {case.operation.path}", response.status_code)] += 1
    case.validate_response(
        response,
        checks=CHECKS,
        additional_checks=[error_body_is_id_and_message, sse_events_match_the_spec],
    )


# --- known-good requests through the same checks ---------------------------------------------
# Random bodies rarely make a chat the server accepts, so these make sure the success shapes
# (plain, streamed, with logprobs, tokenize round trip) are checked against the spec as well.
HELLO = [{"role": "user", "content": "Say hello."}]
KNOWN_GOOD = [
    ("POST", "/v2/chat", {"model": MODEL, "messages": HELLO}),
    ("POST", "/v2/chat", {"model": MODEL, "messages": HELLO, "logprobs": True}),
    ("POST", "/v2/chat", {"model": MODEL, "messages": HELLO, "stream": True}),
    ("POST", "/v2/chat", {"model": MODEL, "messages": HELLO, "stream": True, "logprobs": True}),
    ("POST", "/v2/chat", {"model": MODEL, "messages": HELLO, "stop_sequences": ["l"], "seed": 3}),
    # The spec's largest seed: u64::MAX as a double, which arrives as a float.
    ("POST", "/v2/chat", {"model": MODEL, "messages": HELLO, "seed": 18446744073709552000}),
    ("POST", "/v1/tokenize", {"model": MODEL, "text": "Hello, world!"}),
    ("POST", "/v1/detokenize", {"model": MODEL, "tokens": [1, 2, 3]}),
]


def test_known_good_requests_follow_the_spec():
    for method, path, body in KNOWN_GOOD:
        case = schema[path][method].Case(body=body)
        response = case.call(timeout=120)
        TOTALS[(f"{method} {path} (known good)", response.status_code)] += 1
        assert response.status_code == 200, (body, response.content)
        case.validate_response(
            response,
            checks=CHECKS,
            additional_checks=[error_body_is_id_and_message, sse_events_match_the_spec],
        )
    for path in ("/v1/models", f"/v1/models/{MODEL}"):
        operation = schema["/v1/models"]["GET"] if path == "/v1/models" else schema["/v1/models/{model}"]["GET"]
        case = operation.Case(path_parameters={} if path == "/v1/models" else {"model": MODEL})
        response = case.call(timeout=60)
        TOTALS[(f"GET {path} (known good)", response.status_code)] += 1
        assert response.status_code == 200
        case.validate_response(response, checks=CHECKS)
