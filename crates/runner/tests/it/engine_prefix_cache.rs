//! The prefix cache and the KV pool over the real models: a reply computed on a cached prefix is
//! bit for bit the reply computed cold (tokens and log-probabilities, greedy and seeded), for a
//! repeated prompt, a hit that ends inside a block, a second chat turn, requests sharing a
//! system prompt side by side, Gemma 3's sliding-window layers, and sequences preempted and
//! resumed when the pool runs short. The cold reference is the same model loaded with the prefix
//! cache off.

use super::text_support;

use runner::chat::{ChatMessage, ChatPrompt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use runner::engine::{
    self, EngineConfig, EngineEvent, EngineHandle, EventStream, GenerateRequest, StreamEvent,
};
use runner::loader::ResolveOptions;
use runner::model::{KvBudget, LoadOptions};
use sampler::SamplingParams;

fn engine_on(file: &str, kv: KvBudget, config: EngineConfig) -> EngineHandle {
    let path = text_support::model_file(file);
    let opts = LoadOptions {
        kv,
        ..LoadOptions::default()
    };
    let loaded =
        runner::load_with(path.to_str().unwrap(), &ResolveOptions::from_env(), &opts).unwrap();
    engine::start(loaded, config)
}

/// A cached engine and a cold one (prefix cache off) on the same model.
fn pair(file: &str) -> (EngineHandle, EngineHandle) {
    let cached = engine_on(file, KvBudget::default(), EngineConfig::default());
    let cold = KvBudget {
        prefix_cache: false,
        ..KvBudget::default()
    };
    (cached, engine_on(file, cold, EngineConfig::default()))
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
        temperature: 0.9,
        p: 0.95,
        seed: Some(seed),
        logprobs: true,
        ..SamplingParams::default()
    }
}

fn prompt_of(engine: &EngineHandle, messages: &[(&str, &str)]) -> Vec<u32> {
    let chat = ChatPrompt {
        messages: messages
            .iter()
            .map(|(role, content)| ChatMessage {
                role: role.to_string(),
                content: content.to_string(),
                ..ChatMessage::default()
            })
            .collect(),
        add_generation_prompt: true,
        ..ChatPrompt::default()
    };
    engine
        .tokenize_prompt(&engine.render_chat(&chat).unwrap())
        .unwrap()
}

/// What a reply is, to compare bit for bit: token ids, log-probabilities as bits, the text.
#[derive(Debug, PartialEq)]
struct Reply {
    ids: Vec<u32>,
    logprob_bits: Vec<u32>,
    text: String,
}

/// The reply and the prompt tokens it was served from the cache.
async fn collect(mut stream: EventStream) -> (Reply, usize) {
    let mut reply = Reply {
        ids: Vec::new(),
        logprob_bits: Vec::new(),
        text: String::new(),
    };
    while let Some(event) = stream.recv().await {
        match event {
            StreamEvent::Text {
                text,
                token_ids,
                logprobs,
            } => {
                reply.ids.extend(token_ids);
                reply
                    .logprob_bits
                    .extend(logprobs.iter().map(|l| l.to_bits()));
                reply.text.push_str(&text);
            }
            StreamEvent::Done { cached_tokens, .. } => return (reply, cached_tokens),
            other => panic!("the reply failed: {other:?}"),
        }
    }
    panic!("stream ended without a final event");
}

async fn generate(
    engine: &EngineHandle,
    prompt: &[u32],
    sampling: SamplingParams,
    max_tokens: usize,
) -> (Reply, usize) {
    let request = GenerateRequest {
        prompt: prompt.to_vec(),
        sampling,
        max_tokens,
        ..GenerateRequest::default()
    };
    collect(engine.submit(request).unwrap()).await
}

/// Whole blocks of a prompt's tokens before its last one: the most a hit can serve.
fn full_blocks_before_last(prompt: &[u32]) -> usize {
    (prompt.len() - 1) / 16 * 16
}

const SYSTEM: &str = "You are a careful assistant for a small public library. Answer in one or \
    two sentences, plainly, and say when you are unsure. The library opens at nine in the \
    morning and closes at six in the evening on weekdays; on Saturdays it closes at one. Members \
    may borrow up to eight books for three weeks, renew them twice online, and reserve titles \
    that are out. The reading room is quiet; the children's corner hosts stories on Wednesdays.";

#[tokio::test]
async fn a_repeated_prompt_is_served_from_the_cache_and_replies_as_cold() {
    let (cached, cold) = pair(text_support::SMOLLM2_FILE);
    let prompt = prompt_of(
        &cached,
        &[("system", SYSTEM), ("user", "When can I come on Saturday?")],
    );
    for sampling in [greedy(), seeded(11)] {
        let (want, none) = generate(&cold, &prompt, sampling.clone(), 24).await;
        assert_eq!(none, 0, "a cold engine caches nothing");
        let (first, _) = generate(&cached, &prompt, sampling.clone(), 24).await;
        let (again, hit) = generate(&cached, &prompt, sampling, 24).await;
        assert_eq!(hit, full_blocks_before_last(&prompt));
        assert_eq!(first, want);
        assert_eq!(again, want, "the cached reply differs from the cold one");
    }
}

#[tokio::test]
async fn a_hit_that_ends_inside_a_block_reuses_whole_blocks_and_replies_as_cold() {
    let (cached, cold) = pair(text_support::SMOLLM2_FILE);
    let a = prompt_of(
        &cached,
        &[("system", SYSTEM), ("user", "Can I renew online?")],
    );
    let (_, none) = generate(&cached, &a, greedy(), 4).await;
    assert_eq!(none, 0);
    // The same first 16 * 3 + 7 tokens, then another question: the common prefix ends
    // inside block 3, so blocks 0..3 are reused and the rest computed.
    let mut b = a[..16 * 3 + 7].to_vec();
    b.extend(
        cached
            .tokenize(" How many books may a member borrow?", false)
            .unwrap(),
    );
    b.extend(&a[a.len() - 5..]);
    let (want, _) = generate(&cold, &b, greedy(), 24).await;
    let (got, hit) = generate(&cached, &b, greedy(), 24).await;
    assert_eq!(hit, 48);
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_second_turn_reuses_the_first_turn_and_its_reply_and_replies_as_cold() {
    let (cached, cold) = pair(text_support::SMOLLM2_FILE);
    let question = "What happens on Wednesdays?";
    let turn1 = prompt_of(&cached, &[("system", SYSTEM), ("user", question)]);
    let (reply1, _) = generate(&cached, &turn1, greedy(), 40).await;
    let turn2 = prompt_of(
        &cached,
        &[
            ("system", SYSTEM),
            ("user", question),
            ("assistant", reply1.text.trim()),
            ("user", "And on Saturdays?"),
        ],
    );
    for sampling in [greedy(), seeded(3)] {
        let (want, _) = generate(&cold, &turn2, sampling.clone(), 24).await;
        let (got, hit) = generate(&cached, &turn2, sampling, 24).await;
        // At least the first turn's prompt is reused; blocks its reply filled during decode
        // are reused too, as far as the rendered history tokenizes the same way.
        assert!(hit >= turn1.len() / 16 * 16, "hit {hit} of {}", turn2.len());
        assert_eq!(got, want);
    }
}

#[tokio::test]
async fn requests_sharing_a_system_prompt_side_by_side_compute_it_once_and_reply_as_alone() {
    let (cached, cold) = pair(text_support::SMOLLM2_FILE);
    let questions = [
        "When does the library open?",
        "How long can I keep a book?",
        "Is there anything for children?",
        "Can I reserve a title that is out?",
    ];
    let prompts: Vec<Vec<u32>> = questions
        .iter()
        .map(|q| prompt_of(&cached, &[("system", SYSTEM), ("user", q)]))
        .collect();
    let shared = prompts[0]
        .iter()
        .zip(&prompts[1])
        .take_while(|(a, b)| a == b)
        .count()
        / 16
        * 16;
    assert!(shared >= 64, "the prompts share {shared} tokens");
    let mut want = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        want.push(generate(&cold, p, seeded(i as u64), 16).await.0);
    }
    // All at once on a fresh cache: the first computes the system prompt, the others wait for
    // it and reuse it.
    let streams: Vec<EventStream> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            cached
                .submit(GenerateRequest {
                    prompt: p.clone(),
                    sampling: seeded(i as u64),
                    max_tokens: 16,
                    ..GenerateRequest::default()
                })
                .unwrap()
        })
        .collect();
    let mut hits = Vec::new();
    for (i, stream) in streams.into_iter().enumerate() {
        let (got, hit) = collect(stream).await;
        assert_eq!(got, want[i], "request {i} differs from its reply alone");
        hits.push(hit);
    }
    assert_eq!(hits[0], 0);
    assert!(
        hits[1..].iter().all(|&h| h >= shared),
        "hits {hits:?}, shared {shared}"
    );
}

#[tokio::test]
async fn gemma3_sliding_window_layers_reuse_a_prefix_longer_than_the_window() {
    let (cached, cold) = pair(text_support::GEMMA3_FILE);
    // Past Gemma 3 270M's 512-token window, so that the sliding layers of the new tokens read
    // only cached positions and the global layers read all of them.
    let long = SYSTEM.repeat(7);
    let a = prompt_of(
        &cached,
        &[("system", &long), ("user", "When does it open?")],
    );
    let b = prompt_of(
        &cached,
        &[("system", &long), ("user", "Who reads on Wednesdays?")],
    );
    assert!(a.len() > 600, "{} tokens", a.len());
    generate(&cached, &a, greedy(), 2).await;
    let (want, _) = generate(&cold, &b, greedy(), 16).await;
    let (got, hit) = generate(&cached, &b, greedy(), 16).await;
    assert!(hit > 512, "hit {hit}");
    assert_eq!(got, want);
}

#[tokio::test]
async fn sequences_preempted_for_memory_resume_and_reply_as_unpressed() {
    let file = text_support::SMOLLM2_FILE;
    let config = EngineConfig {
        context_length: 256,
        ..EngineConfig::default()
    };
    // Room for about two contexts: four requests of ~110 prompt and 120 output tokens need
    // twice that, so sequences are preempted and resumed as decode fills the pool.
    let tight = KvBudget {
        mib: Some(12),
        context_length: Some(256),
        ..KvBudget::default()
    };
    let pressed = engine_on(file, tight, config.clone());
    let preempted = Arc::new(AtomicUsize::new(0));
    let count = preempted.clone();
    pressed.observe(move |event| {
        if matches!(event, EngineEvent::Preempted { .. }) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    let roomy = engine_on(file, KvBudget::default(), config);
    let prompts: Vec<Vec<u32>> = [
        "Tell me a long story about a fox.",
        "Describe the sea at night.",
    ]
    .iter()
    .flat_map(|q| {
        let p = prompt_of(&pressed, &[("system", SYSTEM), ("user", q)]);
        [p.clone(), p]
    })
    .collect();
    // Every prompt submitted at once, each with its own seed.
    let submit_all = |engine: &EngineHandle| -> Vec<EventStream> {
        prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                engine
                    .submit(GenerateRequest {
                        prompt: p.clone(),
                        sampling: seeded(i as u64),
                        max_tokens: 120,
                        ..GenerateRequest::default()
                    })
                    .unwrap()
            })
            .collect()
    };
    // The unpressured replies, computed side by side (a sequence's tokens never depend on its
    // batch).
    let mut want = Vec::new();
    for stream in submit_all(&roomy) {
        want.push(collect(stream).await.0);
    }
    let streams = submit_all(&pressed);
    for (i, stream) in streams.into_iter().enumerate() {
        let (got, _) = collect(stream).await;
        assert!(got.ids.len() > 60, "request {i} stopped early: {got:?}");
        assert_eq!(got, want[i], "request {i} changed under memory pressure");
    }
    assert!(
        preempted.load(Ordering::Relaxed) > 0,
        "nothing was preempted"
    );
}
