//! The grammars against the default model's tokenizer, without the model: random walks that pick
//! any allowed token (the worst a model could do) must always end, within the bounds, in text
//! that parses and validates.

use super::text_support;

use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use runner::constraint::{
    Constraint, ConstraintCompiler, ConstraintError, ConstraintSpec, ToolConstraint, ToolMode,
    ToolSchema,
};
use runner::tools::{self, ToolFormatKind};
use serde_json::{json, Value};

fn compiler() -> &'static ConstraintCompiler {
    static COMPILER: OnceLock<ConstraintCompiler> = OnceLock::new();
    COMPILER.get_or_init(|| {
        let bundle = text_support::smollm2();
        ConstraintCompiler::new(bundle.tokenizer.clone(), &bundle.end_of_turn, 49_152)
            .expect("compiler")
    })
}

fn end_tokens() -> &'static [u32] {
    &text_support::smollm2().end_of_turn
}

/// Walks the grammar choosing uniformly among allowed tokens; returns the text up to the end.
fn walk(constraint: Constraint, seed: u64, limit: usize) -> String {
    let (text, ended) = walk_some(constraint, seed, limit);
    assert!(ended, "no end within {limit} tokens: {text:?}");
    text
}

/// Like [`walk`], but stops after `limit` tokens; says whether the grammar ended.
fn walk_some(mut constraint: Constraint, seed: u64, limit: usize) -> (String, bool) {
    let bundle = text_support::smollm2();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut mask = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..limit {
        constraint.mask(&mut mask).expect("mask");
        let allowed: Vec<u32> = (0..mask.len() as u32 * 32)
            .filter(|&t| mask[(t / 32) as usize] >> (t % 32) & 1 == 1)
            .collect();
        assert!(!allowed.is_empty(), "nothing allowed after {ids:?}");
        let token = allowed[rng.random_range(0..allowed.len())];
        if end_tokens().contains(&token) {
            return (bundle.decode(&ids).expect("decode"), true);
        }
        constraint.accept(token).expect("accept");
        ids.push(token);
        if constraint.is_finished() {
            return (bundle.decode(&ids).expect("decode"), true);
        }
        assert_eq!(constraint.error(), None);
    }
    (bundle.decode(&ids).expect("decode"), false)
}

fn validate(schema: &Value, text: &str) {
    let value: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    let validator = jsonschema::validator_for(schema).expect("schema");
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{text}: {errors:?}");
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}},
            "address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        },
        "required": ["name", "age"]
    })
}

#[test]
fn json_schema_walks_validate() {
    let schema = person_schema();
    let spec = ConstraintSpec::JsonSchema(schema.clone());
    for seed in 0..8 {
        let text = walk(compiler().compile(&spec).unwrap(), seed, 4000);
        validate(&schema, &text);
    }
}

#[test]
fn json_object_walks_are_objects() {
    for seed in 0..8 {
        let text = walk(
            compiler().compile(&ConstraintSpec::JsonObject).unwrap(),
            seed,
            20_000,
        );
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(value.is_object(), "{text}");
    }
}

fn weather_tools() -> Vec<ToolSchema> {
    vec![
        ToolSchema {
            name: "get_weather".into(),
            parameters: json!({"type": "object", "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"enum": ["C", "F"]}
            }, "required": ["city"]}),
        },
        ToolSchema {
            name: "add".into(),
            parameters: json!({"type": "object", "properties": {
                "a": {"type": "integer"}, "b": {"type": "number"}
            }, "required": ["a", "b"], "additionalProperties": false}),
        },
    ]
}

fn tool_spec(kind: ToolFormatKind, mode: ToolMode, strict: bool) -> ConstraintSpec {
    ConstraintSpec::Tools(ToolConstraint {
        markers: tools::format(kind).markers(),
        tools: weather_tools(),
        mode,
        strict,
    })
}

/// Splits a generic-format reply into its plan and its calls, checking the markup.
fn generic_calls(text: &str) -> (String, Vec<Value>) {
    let (plan, rest) = text
        .split_once("<tool_calls>")
        .unwrap_or_else(|| panic!("no call block: {text:?}"));
    let body = rest
        .strip_suffix("</tool_calls>")
        .unwrap_or_else(|| panic!("call block not closed: {text:?}"));
    let calls: Vec<Value> = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert!(!calls.is_empty());
    (plan.to_string(), calls)
}

fn check_strict_call(call: &Value) {
    let object = call.as_object().expect("call is an object");
    assert_eq!(object.len(), 2, "{call}");
    let name = call["name"].as_str().expect("name");
    let tool = weather_tools()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("unknown tool {name}"));
    validate(&tool.parameters, &call["arguments"].to_string());
}

#[test]
fn required_strict_generic_calls_validate() {
    let spec = tool_spec(ToolFormatKind::Generic, ToolMode::Required, true);
    for seed in 0..8 {
        let text = walk(compiler().compile(&spec).unwrap(), seed, 4000);
        let (plan, calls) = generic_calls(&text);
        assert!(plan.chars().count() <= runner::constraint::MAX_PLAN_CHARS);
        calls.iter().for_each(check_strict_call);
    }
}

#[test]
fn auto_strict_is_text_or_valid_calls() {
    let spec = tool_spec(ToolFormatKind::Generic, ToolMode::Auto, true);
    let mut saw_text = false;
    for seed in 0..12 {
        // Free text is unbounded (the model ends it); a call block, once opened, must close.
        let (text, ended) = walk_some(compiler().compile(&spec).unwrap(), seed, 600);
        if text.contains("<tool_calls>") && (ended || text.contains("</tool_calls>")) {
            let (_, calls) = generic_calls(&text);
            calls.iter().for_each(check_strict_call);
        } else {
            saw_text = true;
        }
    }
    assert!(saw_text, "free text was never chosen");
}

#[test]
fn required_non_strict_names_a_defined_tool() {
    let spec = tool_spec(ToolFormatKind::Generic, ToolMode::Required, false);
    for seed in 0..6 {
        let text = walk(compiler().compile(&spec).unwrap(), seed, 8000);
        let (_, calls) = generic_calls(&text);
        for call in calls {
            assert!(["get_weather", "add"].contains(&call["name"].as_str().unwrap()));
            assert!(call["arguments"].is_object());
        }
    }
}

#[test]
fn none_never_opens_a_call_block() {
    let spec = tool_spec(ToolFormatKind::Generic, ToolMode::None, false);
    let mut constraint = compiler().compile(&spec).unwrap();
    // Walk towards the marker on purpose: its last token must be refused.
    let bundle = text_support::smollm2();
    let ids = bundle.encode("ok <tool_calls>", false).unwrap();
    let mut mask = Vec::new();
    let mut refused = false;
    for &id in &ids {
        constraint.mask(&mut mask).unwrap();
        if mask[(id / 32) as usize] >> (id % 32) & 1 == 0 {
            refused = true;
            break;
        }
        constraint.accept(id).unwrap();
    }
    assert!(refused, "the marker was allowed");
    for seed in 0..4 {
        let text = walk(compiler().compile(&spec).unwrap(), seed, 300_000);
        assert!(!text.contains("<tool_calls>"));
    }
}

#[test]
fn other_formats_compile_and_walk() {
    for kind in [
        ToolFormatKind::Hermes,
        ToolFormatKind::Llama3,
        ToolFormatKind::Mistral,
        ToolFormatKind::Command,
    ] {
        let spec = tool_spec(kind, ToolMode::Required, true);
        let text = walk(compiler().compile(&spec).unwrap(), 1, 4000);
        let markers = tools::format(kind).markers();
        assert!(text.contains(markers.name_key), "{kind:?}: {text}");
        assert!(text.contains(markers.open), "{kind:?}: {text}");
    }
}

#[test]
fn bad_schemas_are_compile_errors() {
    let unsatisfiable = json!({"type": "object", "properties": {"a": {"type": "integer", "minimum": 5, "maximum": 1}}, "required": ["a"]});
    let err = compiler()
        .compile(&ConstraintSpec::JsonSchema(unsatisfiable))
        .unwrap_err();
    assert!(matches!(err, ConstraintError::Compile(_)), "{err:?}");
    let bad_ref = json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}, "required": ["a"]});
    assert!(compiler()
        .compile(&ConstraintSpec::JsonSchema(bad_ref))
        .is_err());
}

#[test]
fn compile_timeout_is_reported() {
    let spec = ConstraintSpec::JsonSchema(person_schema());
    let err = runner::constraint::compile_with_timeout(
        compiler(),
        &spec,
        std::time::Duration::from_nanos(1),
    )
    .unwrap_err();
    assert_eq!(
        err,
        ConstraintError::Timeout(std::time::Duration::from_nanos(1))
    );
}
