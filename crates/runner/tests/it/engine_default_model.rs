//! The engine over the real default model (SmolLM2-135M-Instruct Q4_1): greedy output is the
//! model's own argmax chain (agreement with llama.cpp's logits is the model tests' job), batching
//! changes no sequence's tokens, and cancellation frees capacity.

use super::text_support;

use std::sync::OnceLock;

use runner::chat::{ChatMessage, ChatPrompt};
use runner::engine::{
    self, EngineConfig, EngineHandle, EventStream, FinishReason, GenerateRequest, StreamEvent,
};
use runner::loader::ResolveOptions;
use sampler::SamplingParams;

fn engine_with(config: EngineConfig) -> EngineHandle {
    let path = text_support::model_file(text_support::SMOLLM2_FILE);
    let loaded = runner::load(path.to_str().unwrap(), &ResolveOptions::from_env()).unwrap();
    engine::start(loaded, config)
}

/// One engine for the tests that do not need special limits (loading costs about a second).
fn shared_engine() -> &'static EngineHandle {
    static ENGINE: OnceLock<EngineHandle> = OnceLock::new();
    ENGINE.get_or_init(|| engine_with(EngineConfig::default()))
}

fn chat(user: &str) -> ChatPrompt {
    ChatPrompt {
        messages: vec![ChatMessage {
            role: "user".into(),
            content: user.into(),
            ..ChatMessage::default()
        }],
        add_generation_prompt: true,
        ..ChatPrompt::default()
    }
}

fn request(
    engine: &EngineHandle,
    user: &str,
    sampling: SamplingParams,
    max_tokens: usize,
) -> GenerateRequest {
    let rendered = engine.render_chat(&chat(user)).unwrap();
    GenerateRequest {
        prompt: engine.tokenize_prompt(&rendered).unwrap(),
        sampling,
        max_tokens,
        stop_sequences: Vec::new(),
        constraint: None,
        ..GenerateRequest::default()
    }
}

fn greedy() -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        ..SamplingParams::default()
    }
}

fn seeded(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 0.9,
        p: 0.95,
        seed: Some(seed),
        ..SamplingParams::default()
    }
}

/// Every token id and the text of a stream, and how it ended.
async fn collect(mut stream: EventStream) -> (Vec<u32>, String, StreamEvent) {
    let (mut ids, mut text) = (Vec::new(), String::new());
    while let Some(event) = stream.recv().await {
        match event {
            StreamEvent::Text {
                text: piece,
                token_ids,
                ..
            } => {
                ids.extend(token_ids);
                text.push_str(&piece);
            }
            last => return (ids, text, last),
        }
    }
    panic!("stream ended without a final event");
}

/// Greedy decoding by hand over the bare model: what the engine must reproduce exactly.
fn reference_greedy(
    model: &mut dyn runner::model::BatchModel,
    prompt: &[u32],
    steps: usize,
    end_tokens: &[u32],
) -> Vec<u32> {
    use runner::model::BatchItem;
    let vocab = model.vocab_size();
    let (mut logits, mut out) = (Vec::new(), Vec::new());
    let mut input = prompt.to_vec();
    for _ in 0..steps {
        model
            .forward(&[BatchItem::new(0, &input)], &mut logits)
            .unwrap();
        let row = &logits[..vocab];
        let best = (0..vocab).fold(0, |b, i| if row[i] > row[b] { i } else { b }) as u32;
        if end_tokens.contains(&best) {
            break;
        }
        out.push(best);
        input = vec![best];
    }
    model.release(0);
    out
}

#[tokio::test]
async fn greedy_output_is_the_models_argmax_chain() {
    let engine = shared_engine();
    let golden = include_str!("../golden/model/greedy-SmolLM2-135M-Instruct.Q4_1.jsonl");
    let path = text_support::model_file(text_support::SMOLLM2_FILE);
    let (mut model, _) = runner::model::load_gguf(&path).unwrap();
    for line in golden.lines().take(3) {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let user = case["messages"][0]["content"].as_str().unwrap();
        let req = request(engine, user, greedy(), 16);
        let expected_prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        assert_eq!(req.prompt, expected_prompt, "prompt of {user:?}");
        let reference = reference_greedy(model.as_mut(), &req.prompt, 16, &[2]);
        let (ids, _, _) = collect(engine.submit(req).unwrap()).await;
        assert_eq!(
            ids, reference,
            "engine and plain greedy loop differ for {user:?}"
        );
    }
}

#[tokio::test]
async fn greedy_answer_is_sensible_and_stable() {
    let engine = shared_engine();
    let ask = || request(engine, "List three colors.", greedy(), 24);
    let (_, first, last) = collect(engine.submit(ask()).unwrap()).await;
    assert!(first.starts_with("1. Red"), "{first:?}");
    assert!(matches!(last, StreamEvent::Done { .. }), "{last:?}");
    let (_, second, _) = collect(engine.submit(ask()).unwrap()).await;
    assert_eq!(first, second);
}

/// Batched generation of different prompts gives exactly the tokens each gets alone.
async fn batch_invariance(sampling: impl Fn(usize) -> SamplingParams) {
    let engine = shared_engine();
    let prompts = [
        "Name three colours.",
        "Write a haiku about the sea.",
        "What is 12 times 7?",
        "Tell me a fact about owls.",
    ];
    let mut alone = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        alone.push(
            collect(engine.submit(request(engine, p, sampling(i), 16)).unwrap())
                .await
                .0,
        );
    }
    let streams: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| engine.submit(request(engine, p, sampling(i), 16)).unwrap())
        .collect();
    for (i, stream) in streams.into_iter().enumerate() {
        let (ids, _, _) = collect(stream).await;
        assert_eq!(ids, alone[i], "prompt {i} changed when batched");
    }
}

#[tokio::test]
async fn batching_does_not_change_greedy_tokens() {
    batch_invariance(|_| greedy()).await;
}

#[tokio::test]
async fn batching_does_not_change_seeded_tokens() {
    batch_invariance(|i| seeded(1000 + i as u64)).await;
}

#[tokio::test]
async fn cancelling_a_stream_frees_its_slot() {
    let engine = engine_with(EngineConfig {
        max_concurrent: 1,
        ..EngineConfig::default()
    });
    let mut first = engine
        .submit(request(&engine, "Write a long story.", seeded(1), 500))
        .unwrap();
    assert!(matches!(first.recv().await, Some(StreamEvent::Text { .. })));
    drop(first);
    let (ids, _, last) = collect(engine.submit(request(&engine, "Hi", greedy(), 4)).unwrap()).await;
    assert!(!ids.is_empty());
    assert!(
        matches!(
            last,
            StreamEvent::Done {
                reason: FinishReason::MaxTokens | FinishReason::EndOfTurn,
                ..
            }
        ),
        "{last:?}"
    );
}
