//! The engine at the edge of a reply's token budget, with the real SmolLM2 tokenizer and a
//! scripted model whose preferences are known: constrained replies that a model would never end
//! on its own still complete within `max_tokens`, a required call's plan leaves room for the
//! call, and a reply cut inside a character never ends in U+FFFD.

use super::text_support;

use std::collections::HashMap;

use runner::constraint::{ConstraintSpec, ToolConstraint, ToolMode, ToolSchema};
use runner::engine::{
    self, EngineConfig, EngineHandle, FinishReason, GenerateRequest, StreamEvent,
};
use runner::model::{BatchItem, BatchModel, ModelError, SeqId};
use runner::template::ChatTemplate;
use runner::tools::{format, ParseOptions, ToolEvent, ToolFormatKind};
use runner::LoadedModel;
use sampler::SamplingParams;
use serde_json::{json, Value};

/// What the scripted model wants next.
#[derive(Clone)]
enum Script {
    /// These tokens, best first, whatever came before (the grammar picks among them).
    Prefer(Vec<u32>),
    /// This sequence of tokens, one per step, cycling.
    Cycle(Vec<u32>),
}

struct ScriptedModel {
    vocab: usize,
    script: Script,
    steps: HashMap<SeqId, usize>,
}

impl BatchModel for ScriptedModel {
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn max_context(&self) -> usize {
        4096
    }
    fn forward(
        &mut self,
        batch: &[BatchItem<'_>],
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        logits.clear();
        logits.resize(batch.len() * self.vocab, 0.0);
        for (row, item) in batch.iter().enumerate() {
            let row = &mut logits[row * self.vocab..(row + 1) * self.vocab];
            let step = self.steps.entry(item.seq).or_default();
            match &self.script {
                Script::Prefer(tokens) => {
                    for (rank, &t) in tokens.iter().enumerate() {
                        row[t as usize] = 20.0 - rank as f32;
                    }
                }
                Script::Cycle(tokens) => row[tokens[*step % tokens.len()] as usize] = 20.0,
            }
            *step += 1;
        }
        Ok(())
    }
    fn release(&mut self, seq: SeqId) {
        self.steps.remove(&seq);
    }
}

fn engine(script: Script) -> EngineHandle {
    let bundle = text_support::smollm2().clone();
    let vocab = bundle.tokenizer.get_vocab_size(true);
    let end = bundle.end_of_turn.clone();
    let loaded = LoadedModel {
        info: runner::engine::ModelInfo {
            name: "scripted".into(),
            architecture: "test".into(),
            context_length: 4096,
            vocab_size: vocab,
            template_origin: "builtin".into(),
            tool_format: ToolFormatKind::Generic,
            thinking: None,
        },
        model: Box::new(ScriptedModel {
            vocab,
            script,
            steps: HashMap::new(),
        }),
        tokenizer: bundle,
        template: ChatTemplate::fallback_for("llama", None, None).unwrap(),
        end_token_ids: end,
    };
    engine::start(loaded, EngineConfig::default())
}

fn token(text: &str) -> u32 {
    let ids = text_support::smollm2().encode(text, false).unwrap();
    assert_eq!(ids.len(), 1, "{text:?} is one token here: {ids:?}");
    ids[0]
}

fn request(
    engine: &EngineHandle,
    spec: Option<&ConstraintSpec>,
    max_tokens: usize,
    seed: u64,
) -> GenerateRequest {
    GenerateRequest {
        prompt: text_support::smollm2().encode("Hello", false).unwrap(),
        sampling: SamplingParams {
            temperature: 0.7,
            seed: Some(seed),
            ..SamplingParams::default()
        },
        max_tokens,
        stop_sequences: Vec::new(),
        constraint: spec.map(|s| engine.compile(s).expect("compiles")),
        ..GenerateRequest::default()
    }
}

/// The text, the token ids of the text events, and the end of one request.
async fn run(engine: &EngineHandle, request: GenerateRequest) -> (String, Vec<u32>, StreamEvent) {
    let mut stream = engine.submit(request).unwrap();
    let (mut text, mut ids) = (String::new(), Vec::new());
    while let Some(event) = stream.recv().await {
        match event {
            StreamEvent::Text {
                text: piece,
                token_ids,
                ..
            } => {
                text.push_str(&piece);
                ids.extend(token_ids);
            }
            end => return (text, ids, end),
        }
    }
    panic!("no final event");
}

fn output_tokens(end: &StreamEvent) -> usize {
    match end {
        StreamEvent::Done { output_tokens, .. } => *output_tokens,
        other => panic!("not done: {other:?}"),
    }
}

#[tokio::test]
async fn a_json_reply_whose_string_never_ends_still_closes_within_the_budget() {
    // The model would write " the" forever inside any string.
    let engine = engine(Script::Prefer(vec![token(" the")]));
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"]
    });
    let spec = ConstraintSpec::JsonSchema(schema.clone());
    for max_tokens in [12, 20, 33] {
        for seed in 0..4 {
            let (text, _, end) =
                run(&engine, request(&engine, Some(&spec), max_tokens, seed)).await;
            let value: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("max_tokens {max_tokens}: not JSON ({e}): {text}"));
            assert!(
                value["name"].is_string() && value["age"].is_number(),
                "{text}"
            );
            if max_tokens >= 20 {
                // Closed no earlier than it had to be: the model's text is in.
                assert!(value["name"].as_str().unwrap().contains("the"), "{text}");
            }
            assert!(output_tokens(&end) <= max_tokens);
            assert!(
                matches!(
                    end,
                    StreamEvent::Done {
                        reason: FinishReason::EndOfTurn,
                        ..
                    }
                ),
                "a completed reply is not cut: {end:?}"
            );
        }
    }
    // Below the shortest completion nothing can help: cut, as before.
    let (text, _, end) = run(&engine, request(&engine, Some(&spec), 3, 0)).await;
    assert!(serde_json::from_str::<Value>(&text).is_err());
    assert!(matches!(
        end,
        StreamEvent::Done {
            reason: FinishReason::MaxTokens,
            ..
        }
    ));
}

#[tokio::test]
async fn a_required_call_whose_plan_never_ends_still_calls_within_the_budget() {
    // The model would write " the" forever: as plan text, and inside any string.
    let engine = engine(Script::Prefer(vec![token(" the")]));
    let parameters = json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
        "required": ["city", "unit"]
    });
    let markers = format(ToolFormatKind::Generic).markers();
    let spec = ConstraintSpec::Tools(ToolConstraint {
        markers,
        tools: vec![ToolSchema {
            name: "get_weather".into(),
            parameters: parameters.clone(),
        }],
        mode: ToolMode::Required,
        strict: true,
    });
    let validator = jsonschema::validator_for(&parameters).unwrap();
    for seed in 0..6 {
        let (text, _, end) = run(&engine, request(&engine, Some(&spec), 48, seed)).await;
        assert!(output_tokens(&end) <= 48);
        let mut parser = format(ToolFormatKind::Generic).parser(ParseOptions {
            plan_hold_bytes: usize::MAX,
            id_seed: Some(1),
        });
        let mut events = parser.push(&text);
        events.extend(parser.finish());
        let plan: String = events
            .iter()
            .filter_map(|e| match e {
                ToolEvent::PlanDelta(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert!(plan.contains("the"), "the plan had room: {text}");
        let args: Vec<Value> = events
            .iter()
            .filter_map(|e| match e {
                ToolEvent::CallArgsDelta { text, .. } => Some(serde_json::from_str(text).unwrap()),
                _ => None,
            })
            .collect();
        assert_eq!(args.len(), 1, "one call in {text}");
        assert!(validator.is_valid(&args[0]), "{}", args[0]);
    }
}

#[tokio::test]
async fn a_reply_cut_inside_a_character_sends_only_whole_characters() {
    let bundle = text_support::smollm2();
    let waves = bundle.encode("🌊🌊🌊🌊🌊🌊", false).unwrap();
    let per_wave = waves.len() / 6;
    assert!(per_wave >= 2 && waves.len().is_multiple_of(6), "{waves:?}");
    let engine = engine(Script::Cycle(waves[..per_wave].to_vec()));
    // Three whole waves and the first token of a fourth.
    let max_tokens = 3 * per_wave + 1;
    let mut request = request(&engine, None, max_tokens, 0);
    request.sampling.temperature = 0.0;
    request.sampling.logprobs = true;
    let (text, ids, end) = run(&engine, request).await;
    assert_eq!(text, "🌊🌊🌊");
    assert_eq!(
        ids.len(),
        3 * per_wave,
        "the partial character's token carries no text"
    );
    assert_eq!(
        output_tokens(&end),
        max_tokens,
        "but it counts as generated"
    );
}

#[test]
fn a_schema_that_only_recurses_is_refused_when_compiled() {
    let engine = engine(Script::Prefer(vec![]));
    for schema in [
        json!({"type": "object", "properties": {"child": {"$ref": "#"}}, "required": ["child"]}),
        json!({"type": "object", "$defs": {"node": {"type": "object",
                "properties": {"next": {"$ref": "#/$defs/node"}}, "required": ["next"]}},
               "properties": {"head": {"$ref": "#/$defs/node"}}, "required": ["head"]}),
        json!({"type": "object", "properties": {"items": {"type": "array", "minItems": 1,
                "items": {"$ref": "#"}}}, "required": ["items"]}),
    ] {
        let error = engine
            .compile(&ConstraintSpec::JsonSchema(schema.clone()))
            .expect_err("refused");
        assert!(
            error.to_string().contains("admits no finite value"),
            "{schema}: {error}"
        );
    }
    // The same recursion with a way out compiles.
    for schema in [
        json!({"type": "object", "properties": {"child": {"$ref": "#"}}, "required": []}),
        json!({"type": "object", "properties": {"child": {"anyOf": [{"type": "null"}, {"$ref": "#"}]}},
               "required": ["child"]}),
        json!({"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#"}}},
               "required": ["items"]}),
    ] {
        assert!(
            engine
                .compile(&ConstraintSpec::JsonSchema(schema.clone()))
                .is_ok(),
            "{schema}"
        );
    }
}
