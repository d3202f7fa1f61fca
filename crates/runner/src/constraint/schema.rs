//! The JSON schemas behind every grammar: the caller's schema with default bounds added (so
//! every reply stays finite), the schema-less JSON object, the call objects of tool grammars,
//! and the check that a schema admits a finite value at all.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::{
    ToolSchema, DEFAULT_MAX_ITEMS, DEFAULT_MAX_STRING, FREE_OBJECT_DEPTH, JSON_OBJECT_DEPTH,
    NUMBER_LIMIT,
};
use crate::tools::CallMarkers;

/// llguidance's JSON options: compact, fixed separators, so no tokens go to whitespace.
pub(super) fn json_options() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

/// The schema of one call object: `{"<name_key>": "<tool>", "<args_key>": {...}}`.
pub(super) fn call_schema(markers: &CallMarkers, tool: &ToolSchema, strict: bool) -> Value {
    let arguments = if strict {
        bounded_node(&tool.parameters)
    } else {
        any_object(JSON_OBJECT_DEPTH - 1)
    };
    let mut properties = Map::new();
    properties.insert(markers.name_key.into(), json!({"const": tool.name}));
    properties.insert(markers.args_key.into(), arguments);
    json!({
        "x-guidance": json_options(),
        "type": "object",
        "properties": properties,
        "required": [markers.name_key, markers.args_key],
        "additionalProperties": false,
    })
}

/// `response_format: json_object`: an object whose values nest at most [`JSON_OBJECT_DEPTH`]
/// levels.
pub(super) fn json_object_schema() -> Value {
    let mut schema = any_object(JSON_OBJECT_DEPTH - 1);
    if let Value::Object(map) = &mut schema {
        map.insert("x-guidance".into(), json_options());
    }
    schema
}

/// An object of at most [`DEFAULT_MAX_ITEMS`] members whose values nest `depth` more levels.
pub(super) fn any_object(depth: usize) -> Value {
    json!({
        "type": "object",
        "additionalProperties": any_value(depth),
        "maxProperties": DEFAULT_MAX_ITEMS,
    })
}

pub(super) fn any_value(depth: usize) -> Value {
    let scalar = json!({
        "type": ["string", "number", "boolean", "null"],
        "maxLength": DEFAULT_MAX_STRING,
        "minimum": -(NUMBER_LIMIT as f64),
        "maximum": NUMBER_LIMIT as f64,
    });
    if depth == 0 {
        return scalar;
    }
    json!({"anyOf": [
        scalar,
        {"type": "array", "items": any_value(depth - 1), "maxItems": DEFAULT_MAX_ITEMS},
        any_object(depth - 1),
    ]})
}

/// The caller's schema with the compact-JSON options and default bounds added.
pub(super) fn bounded_schema(schema: &Value) -> Value {
    let mut schema = bounded_node(schema);
    if let Value::Object(map) = &mut schema {
        map.insert("x-guidance".into(), json_options());
    }
    schema
}

/// Adds `maxLength` / `maxItems` where a (sub)schema sets none. Walks every place a schema can
/// nest; keys that hold maps of schemas (`properties`, `$defs`, ...) are walked by value.
pub(super) fn bounded_node(node: &Value) -> Value {
    let Value::Object(map) = node else {
        return node.clone();
    };
    let mut out = Map::with_capacity(map.len() + 1);
    for (key, value) in map {
        let walked = match key.as_str() {
            "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" => {
                match value {
                    Value::Object(children) => Value::Object(
                        children
                            .iter()
                            .map(|(k, v)| (k.clone(), bounded_node(v)))
                            .collect(),
                    ),
                    other => other.clone(),
                }
            }
            "items"
            | "additionalProperties"
            | "additionalItems"
            | "not"
            | "if"
            | "then"
            | "else"
            | "contains"
            | "unevaluatedItems"
            | "unevaluatedProperties" => bounded_node(value),
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => match value {
                Value::Array(items) => Value::Array(items.iter().map(bounded_node).collect()),
                other => bounded_node(other),
            },
            _ => value.clone(),
        };
        out.insert(key.clone(), walked);
    }
    let has_type = |t: &str| match map.get("type") {
        Some(Value::String(s)) => s == t,
        Some(Value::Array(types)) => types.iter().any(|v| v.as_str() == Some(t)),
        _ => false,
    };
    let fixed = ["enum", "const"].iter().any(|k| map.contains_key(*k));
    if has_type("string")
        && !fixed
        && !["maxLength", "pattern", "format"]
            .iter()
            .any(|k| map.contains_key(*k))
    {
        let min = map.get("minLength").and_then(Value::as_u64).unwrap_or(0);
        out.insert("maxLength".into(), json!(DEFAULT_MAX_STRING.max(min)));
    }
    if has_type("object") && !fixed && !map.contains_key("additionalProperties") {
        // Members beyond the declared ones would be unbounded free JSON: declared-only when
        // properties are declared, else bounded free members.
        let declared = map.contains_key("properties") || map.contains_key("patternProperties");
        let extra = if declared {
            json!(false)
        } else {
            any_value(FREE_OBJECT_DEPTH)
        };
        out.insert("additionalProperties".into(), extra);
        if !declared && !map.contains_key("maxProperties") {
            out.insert("maxProperties".into(), json!(DEFAULT_MAX_ITEMS));
        }
    }
    // Unbounded numbers let a model write digits (or exponents) without end, and serde and
    // most parsers refuse numbers past f64.
    if (has_type("integer") || has_type("number")) && !fixed {
        let limit = if has_type("number") && !has_type("integer") {
            json!(NUMBER_LIMIT as f64)
        } else {
            json!(NUMBER_LIMIT)
        };
        let negative = match &limit {
            Value::Number(n) if n.is_f64() => json!(-(NUMBER_LIMIT as f64)),
            _ => json!(-NUMBER_LIMIT),
        };
        let bounded = |k: &str, k2: &str| map.contains_key(k) || map.contains_key(k2);
        if !bounded("minimum", "exclusiveMinimum") {
            out.insert("minimum".into(), negative);
        }
        if !bounded("maximum", "exclusiveMaximum") {
            out.insert("maximum".into(), limit);
        }
    }
    if has_type("array") && !fixed && !map.contains_key("maxItems") {
        let min = map.get("minItems").and_then(Value::as_u64).unwrap_or(0);
        out.insert("maxItems".into(), json!(DEFAULT_MAX_ITEMS.max(min)));
    }
    Value::Object(out)
}

/// Whether a schema admits any finite JSON value, and if not, why. A schema can admit only
/// infinite values when a `$ref` cycle passes through required members (or non-empty arrays)
/// with no alternative that stops it: `{"properties": {"next": {"$ref": "#"}}, "required":
/// ["next"]}`. Such a grammar compiles, then fails mid-reply, so it is refused before any work.
///
/// A least fixpoint over the local references (`#`, `#/$defs/..`, any `#/...` pointer): a
/// reference is finite once its target is satisfiable using only references already known to be
/// finite. `anyOf`/`oneOf` need one finite branch, `allOf` all, an object its required members,
/// an array its first `minItems` items; anything the check does not model counts as finite, so
/// it never refuses a schema that has a finite value.
pub(super) fn finite_value_error(root: &Value) -> Option<String> {
    let mut refs = Vec::new();
    collect_refs(root, &mut refs);
    refs.sort();
    refs.dedup();
    let mut finite: HashMap<String, bool> = refs.iter().map(|r| (r.clone(), false)).collect();
    loop {
        let mut changed = false;
        for r in &refs {
            if finite[r] {
                continue;
            }
            let ok = resolve(root, r).is_some_and(|target| satisfiable(target, &finite, 0));
            if ok {
                finite.insert(r.clone(), true);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    if satisfiable(root, &finite, 0) {
        return None;
    }
    let stuck: Vec<&str> = refs
        .iter()
        .filter(|r| !finite[*r])
        .map(String::as_str)
        .collect();
    Some(format!(
        "the JSON schema admits no finite value: {} refers back to itself through required \
         properties with no way to stop (make the recursive property optional or give it a \
         non-recursive alternative)",
        if stuck.is_empty() {
            "it".to_string()
        } else {
            stuck.join(", ")
        }
    ))
}

fn collect_refs(node: &Value, out: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                if r.starts_with('#') {
                    out.push(r.clone());
                }
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// A local reference (`#` or a JSON pointer after it) inside `root`.
fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    if pointer.is_empty() {
        return Some(root);
    }
    root.pointer(pointer)
}

/// Whether `node` has a finite instance, given which references are known to be finite.
fn satisfiable(node: &Value, finite: &HashMap<String, bool>, depth: usize) -> bool {
    // Deeper than any sane schema: do not judge.
    if depth > 64 {
        return true;
    }
    let map = match node {
        Value::Bool(b) => return *b,
        Value::Object(map) => map,
        _ => return true,
    };
    let sat = |n: &Value| satisfiable(n, finite, depth + 1);
    if let Some(Value::String(r)) = map.get("$ref") {
        if r.starts_with('#') && !finite.get(r).copied().unwrap_or(true) {
            return false;
        }
    }
    if map.contains_key("const") || map.contains_key("enum") {
        return true;
    }
    if let Some(Value::Array(all)) = map.get("allOf") {
        if !all.iter().all(sat) {
            return false;
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(any)) = map.get(key) {
            if !any.iter().any(sat) {
                return false;
            }
        }
    }
    let types: Vec<&str> = match map.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    // Only a type list made of objects and arrays can be forced to recurse.
    if types.is_empty() || types.iter().any(|t| !matches!(*t, "object" | "array")) {
        return true;
    }
    types.iter().any(|t| match *t {
        "object" => {
            let properties = map.get("properties").and_then(Value::as_object);
            let extra = map.get("additionalProperties");
            map.get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .all(|name| match properties.and_then(|p| p.get(name)) {
                    Some(schema) => sat(schema),
                    None => extra.is_none_or(sat),
                })
        }
        _ => {
            let min = map.get("minItems").and_then(Value::as_u64).unwrap_or(0) as usize;
            if min == 0 {
                return true;
            }
            let prefix = map.get("prefixItems").and_then(Value::as_array);
            (0..min.min(16)).all(|i| match prefix.and_then(|p| p.get(i)) {
                Some(schema) => sat(schema),
                None => map.get("items").is_none_or(sat),
            })
        }
    })
}
