//! Speculative decoding over the real models: with prompt-lookup drafts on, every reply is bit
//! for bit the reply without them (token ids, log-probabilities, text, finish reason), greedy
//! and seeded, with penalties, a stop sequence and a JSON schema, alone and in a batch, on
//! SmolLM2 and Gemma 3; and the drafts are really used (most of a copied text is accepted).
//! The reference is the same model in an engine with speculation off.

use super::text_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use runner::chat::{ChatMessage, ChatPrompt};
use runner::constraint::ConstraintSpec;
use runner::engine::{
    self, EngineConfig, EngineEvent, EngineHandle, EventStream, FinishReason, GenerateRequest,
    Speculation, StreamEvent,
};
use runner::loader::ResolveOptions;
use sampler::SamplingParams;

/// Draft tokens verified and accepted by one engine, as its observer counts them.
#[derive(Default)]
struct Counts {
    drafted: AtomicUsize,
    accepted: AtomicUsize,
}

fn engine_on(file: &str, speculation: Speculation) -> (EngineHandle, Arc<Counts>) {
    let path = text_support::model_file(file);
    let loaded = runner::load(path.to_str().unwrap(), &ResolveOptions::from_env()).unwrap();
    let engine = engine::start(
        loaded,
        EngineConfig {
            speculation,
            ..EngineConfig::default()
        },
    );
    let counts = Arc::new(Counts::default());
    let seen = counts.clone();
    engine.observe(move |event| {
        if let EngineEvent::Drafted { drafted, accepted } = *event {
            seen.drafted.fetch_add(drafted, Ordering::Relaxed);
            seen.accepted.fetch_add(accepted, Ordering::Relaxed);
        }
    });
    (engine, counts)
}

/// An engine that speculates (drafts allowed in any step size, to test batches too) and one
/// that does not, on the same model.
fn pair(file: &str) -> (EngineHandle, Arc<Counts>, EngineHandle) {
    let on = Speculation {
        max_draft: 8,
        step_tokens: 64,
    };
    let off = Speculation { max_draft: 0, ..on };
    let (spec, counts) = engine_on(file, on);
    let (plain, _) = engine_on(file, off);
    (spec, counts, plain)
}

/// A text to copy: a reply that quotes it is mostly predictable from the prompt.
const PASSAGE: &str = "The library opens at nine in the morning and closes at six in the \
    evening on weekdays; on Saturdays it closes at one. Members may borrow up to eight books for \
    three weeks, renew them twice online, and reserve titles that are out.";

fn copy_prompt(engine: &EngineHandle, ask: &str) -> Vec<u32> {
    let chat = ChatPrompt {
        messages: vec![ChatMessage {
            role: "user".into(),
            content: format!("{ask}\n\n{PASSAGE}"),
            ..ChatMessage::default()
        }],
        add_generation_prompt: true,
        ..ChatPrompt::default()
    };
    engine
        .tokenize_prompt(&engine.render_chat(&chat).unwrap())
        .unwrap()
}

/// Everything a reply is, to compare bit for bit.
#[derive(Debug, PartialEq)]
struct Reply {
    ids: Vec<u32>,
    logprob_bits: Vec<u32>,
    text: String,
    reason: FinishReason,
    output_tokens: usize,
}

async fn collect(mut stream: EventStream) -> Reply {
    let (mut ids, mut logprob_bits, mut text) = (Vec::new(), Vec::new(), String::new());
    while let Some(event) = stream.recv().await {
        match event {
            StreamEvent::Text {
                text: piece,
                token_ids,
                logprobs,
            } => {
                ids.extend(token_ids);
                logprob_bits.extend(logprobs.iter().map(|l| l.to_bits()));
                text.push_str(&piece);
            }
            StreamEvent::Done {
                reason,
                output_tokens,
                ..
            } => {
                return Reply {
                    ids,
                    logprob_bits,
                    text,
                    reason,
                    output_tokens,
                }
            }
            other => panic!("the reply failed: {other:?}"),
        }
    }
    panic!("stream ended without a final event");
}

fn greedy() -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        logprobs: true,
        ..SamplingParams::default()
    }
}

fn seeded(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 0.8,
        p: 0.9,
        k: 40,
        seed: Some(seed),
        logprobs: true,
        ..SamplingParams::default()
    }
}

/// The requests every model is checked on: each one alone on both engines, then all of them
/// together on both.
fn requests(engine: &EngineHandle) -> Vec<GenerateRequest> {
    let copy = copy_prompt(engine, "Repeat the following text exactly, word for word.");
    let rewrite = copy_prompt(engine, "Rewrite this text in plain words for a child.");
    let plain = |prompt: &Vec<u32>, sampling, max_tokens| GenerateRequest {
        prompt: prompt.clone(),
        sampling,
        max_tokens,
        ..GenerateRequest::default()
    };
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"opens": {"type": "string"}, "books": {"type": "integer"}},
        "required": ["opens", "books"]
    });
    vec![
        plain(&copy, greedy(), 64),
        plain(&rewrite, greedy(), 48),
        plain(&copy, seeded(7), 48),
        plain(&rewrite, seeded(8), 48),
        // Penalties change the logits by what was sampled before: drafts must see exactly that.
        GenerateRequest {
            sampling: SamplingParams {
                frequency_penalty: 0.4,
                presence_penalty: 0.3,
                ..seeded(9)
            },
            ..plain(&copy, greedy(), 48)
        },
        // A stop sequence inside the copied text ends the reply mid-draft.
        GenerateRequest {
            stop_sequences: vec!["Saturdays".into()],
            ..plain(&copy, greedy(), 64)
        },
        // A grammar masks every row of a draft in turn.
        GenerateRequest {
            constraint: Some(engine.compile(&ConstraintSpec::JsonSchema(schema)).unwrap()),
            ..plain(&copy, greedy(), 40)
        },
    ]
}

async fn speculation_changes_no_reply(file: &str) {
    let (spec, counts, plain) = pair(file);
    let mut reference = Vec::new();
    for (i, request) in requests(&plain).into_iter().enumerate() {
        let want = collect(plain.submit(request.clone()).unwrap()).await;
        let got = collect(spec.submit(request).unwrap()).await;
        assert_eq!(got, want, "request {i} changed with speculation on {file}");
        reference.push(want);
    }
    let (drafted, accepted) = (
        counts.drafted.load(Ordering::Relaxed),
        counts.accepted.load(Ordering::Relaxed),
    );
    assert!(
        accepted * 2 > drafted && accepted > 40,
        "{file}: {accepted} of {drafted} draft tokens accepted"
    );
    // All at once: drafts for several sequences in one step, next to plain decode rows.
    let streams: Vec<_> = requests(&spec)
        .into_iter()
        .map(|request| spec.submit(request).unwrap())
        .collect();
    for (i, stream) in streams.into_iter().enumerate() {
        assert_eq!(
            collect(stream).await,
            reference[i],
            "request {i} changed with speculation in a batch on {file}"
        );
    }
}

#[tokio::test]
async fn speculation_changes_no_reply_on_smollm2() {
    speculation_changes_no_reply(text_support::SMOLLM2_FILE).await;
}

#[tokio::test]
async fn speculation_changes_no_reply_on_gemma3() {
    speculation_changes_no_reply(text_support::GEMMA3_FILE).await;
}

#[tokio::test]
async fn a_copied_text_is_mostly_accepted_and_ends_where_plain_decoding_does() {
    let (spec, counts, plain) = pair(text_support::SMOLLM2_FILE);
    let request = GenerateRequest {
        prompt: copy_prompt(&spec, "Repeat the following text exactly, word for word."),
        sampling: greedy(),
        max_tokens: 80,
        ..GenerateRequest::default()
    };
    let want = collect(plain.submit(request.clone()).unwrap()).await;
    let got = collect(spec.submit(request).unwrap()).await;
    assert_eq!(got, want);
    assert!(
        want.text.contains("eight books"),
        "the model did not copy: {:?}",
        want.text
    );
    let accepted = counts.accepted.load(Ordering::Relaxed);
    assert!(
        accepted * 2 > want.output_tokens,
        "only {accepted} of {} tokens came from drafts",
        want.output_tokens
    );
}
