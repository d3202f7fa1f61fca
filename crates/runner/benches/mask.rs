//! Per-token cost of constrained decoding at the default model's vocabulary (49,152 tokens):
//! computing the allowed-token mask and taking the sampled token, over whole valid replies.
//! Each iteration replays one reply from a fresh constraint; criterion reports the time per
//! reply, and the line printed before each group gives the reply's token count (divide to get
//! µs per token). A decode step of the default model takes a few milliseconds; this should be a
//! small fraction of it.
//!
//! Run: `cargo bench -p runner --bench mask` (needs models/cache/SmolLM2-135M-Instruct.Q4_1.gguf).

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::Instant;

use candle_core::quantized::gguf_file::Content;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use runner::constraint::{
    ConstraintCompiler, ConstraintSpec, ToolConstraint, ToolMode, ToolSchema,
};
use runner::tools::{self, ToolFormatKind};
use serde_json::json;

fn cases() -> Vec<(&'static str, ConstraintSpec, &'static str)> {
    let person = json!({"type": "object", "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "city": {"type": "string", "enum": ["Paris", "Lima", "Oslo"]},
        "tags": {"type": "array", "items": {"type": "string"}}
    }, "required": ["name", "age", "city"]});
    let tools = ToolConstraint {
        markers: tools::format(ToolFormatKind::Generic).markers(),
        tools: vec![
            ToolSchema {
                name: "get_weather".into(),
                parameters: json!({"type": "object", "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                }, "required": ["city"]}),
            },
            ToolSchema {
                name: "add".into(),
                parameters: json!({"type": "object", "properties": {
                    "a": {"type": "integer"}, "b": {"type": "integer"}
                }, "required": ["a", "b"]}),
            },
        ],
        mode: ToolMode::Required,
        strict: true,
    };
    vec![
        (
            "json_object",
            ConstraintSpec::JsonObject,
            r#"{"name": "Ada Lovelace", "age": 36, "langs": ["en", "fr"], "alive": false}"#,
        ),
        (
            "json_schema",
            ConstraintSpec::JsonSchema(person),
            r#"{"name": "Ada Lovelace", "age": 36, "city": "Paris", "tags": ["math", "poetry"]}"#,
        ),
        (
            "strict_tools",
            ConstraintSpec::Tools(tools),
            r#"I will look up the weather.<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]</tool_calls>"#,
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/cache/SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut reader = BufReader::new(File::open(&path).expect("default model file"));
    let content = Content::read(&mut reader).expect("gguf");
    let bundle = runner::tokenizer::tokenizer_from_gguf(&content).expect("tokenizer");
    let compiler =
        ConstraintCompiler::new(bundle.tokenizer.clone(), &bundle.end_of_turn, 49_152).unwrap();
    let mut group = c.benchmark_group("mask");
    for (name, spec, reply) in cases() {
        let tokens = bundle.encode(reply, false).unwrap();
        let start = Instant::now();
        let fresh = compiler.compile(&spec).unwrap();
        println!(
            "{name}: {} tokens per reply; compile {:?}",
            tokens.len(),
            start.elapsed()
        );
        let mut mask = Vec::new();
        group.bench_function(name, |b| {
            b.iter_batched(
                || fresh.clone(),
                |mut constraint| {
                    for &token in &tokens {
                        constraint.mask(&mut mask).unwrap();
                        assert!(mask[(token / 32) as usize] >> (token % 32) & 1 == 1);
                        constraint.accept(token).unwrap();
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
