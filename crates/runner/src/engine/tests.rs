//! The scheduling logic against a scripted model: each sequence's next token is its last
//! token + 1, so every stream's content is known in advance.
use super::*;
use crate::model::kv_pool::{BlockTable, KvPool};
use crate::model::{BatchItem, BatchModel, ModelError, PoolUsage, SeqId};
use crate::template::ChatTemplate;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const VOCAB: usize = 64;
const EOS: u32 = 63;
/// Feeding this token makes the scripted model panic (a bug in a forward pass, injected).
const PANIC_TOKEN: u32 = 50;

#[derive(Default)]
struct Record {
    batch_sizes: Vec<usize>,
    released: Vec<SeqId>,
    live: HashMap<SeqId, usize>,
    /// The first prompt token of each sequence, in the order the model first saw them.
    first_tokens: Vec<u32>,
    /// Draft tokens fed, and (sequence, length) of each truncation that took some back.
    drafted: usize,
    truncations: Vec<(SeqId, usize)>,
}

struct CountingModel {
    record: Arc<Mutex<Record>>,
    /// Slows each step down so that tests can observe sequences while they run.
    step_delay: Duration,
    /// A KV pool to budget memory with (blocks of 16), and each sequence's blocks.
    pool: Option<(KvPool, HashMap<SeqId, BlockTable>)>,
    /// Whether the model takes speculative drafts.
    drafts: bool,
}

impl BatchModel for CountingModel {
    fn vocab_size(&self) -> usize {
        VOCAB
    }
    fn max_context(&self) -> usize {
        128
    }
    fn forward(
        &mut self,
        batch: &[BatchItem<'_>],
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        std::thread::sleep(self.step_delay);
        if batch.iter().any(|item| item.tokens.contains(&PANIC_TOKEN)) {
            panic!("injected panic at token {PANIC_TOKEN}");
        }
        let mut record = self.record.lock().unwrap();
        record.batch_sizes.push(batch.len());
        logits.clear();
        logits.resize(
            batch.iter().map(BatchItem::rows).sum::<usize>() * VOCAB,
            0.0,
        );
        let mut row = 0;
        for item in batch {
            if !record.live.contains_key(&item.seq) {
                record.first_tokens.push(item.tokens[0]);
            }
            *record.live.entry(item.seq).or_default() += item.tokens.len();
            if let Some((pool, tables)) = &mut self.pool {
                let table = tables.entry(item.seq).or_default();
                let needed = table.len() + item.tokens.len();
                if pool.reserve(table, needed).is_none() {
                    return Err(ModelError::KvFull {
                        seq: item.seq,
                        needed,
                        available: pool.usage().available() * 16,
                    });
                }
                pool.commit(table, item.tokens, item.drafts);
            }
            record.drafted += item.drafts;
            for &token in &item.tokens[item.tokens.len() - item.rows()..] {
                logits[row * VOCAB + (token as usize + 1) % VOCAB] = 10.0;
                row += 1;
            }
        }
        Ok(())
    }
    fn release(&mut self, seq: SeqId) {
        let mut record = self.record.lock().unwrap();
        record.live.remove(&seq);
        record.released.push(seq);
        if let Some((pool, tables)) = &mut self.pool {
            if let Some(table) = tables.remove(&seq) {
                pool.release(table);
            }
        }
    }
    fn reserve(&mut self, seq: SeqId, tokens: usize) -> bool {
        match &mut self.pool {
            Some((pool, tables)) => pool
                .reserve(tables.entry(seq).or_default(), tokens)
                .is_some(),
            None => true,
        }
    }
    fn kv_usage(&self) -> Option<PoolUsage> {
        self.pool.as_ref().map(|(pool, _)| pool.usage())
    }
    fn takes_drafts(&self) -> bool {
        self.drafts
    }
    fn truncate(&mut self, seq: SeqId, len: usize) {
        let mut record = self.record.lock().unwrap();
        record.live.insert(seq, len);
        record.truncations.push((seq, len));
        if let Some((pool, tables)) = &mut self.pool {
            pool.truncate(tables.get_mut(&seq).unwrap(), len);
        }
    }
}

/// A word-level tokenizer whose token `i` is the word `t{i}`.
fn tokenizer() -> TokenizerBundle {
    use tokenizers::models::wordlevel::WordLevel;
    let vocab = (0..VOCAB as u32).map(|i| (format!("t{i}"), i)).collect();
    let model = WordLevel::builder()
        .vocab(vocab)
        .unk_token("t0".into())
        .build()
        .unwrap();
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace {}));
    TokenizerBundle {
        tokenizer: Arc::new(tokenizer),
        bos: None,
        eos: None,
        add_bos: false,
        end_of_turn: vec![EOS],
        chat_template: None,
    }
}

fn engine(config: EngineConfig, step_delay: Duration) -> (EngineHandle, Arc<Mutex<Record>>) {
    engine_with(config, step_delay, None)
}

fn engine_with(
    config: EngineConfig,
    step_delay: Duration,
    thinking: Option<crate::thinking::ThinkingMarkers>,
) -> (EngineHandle, Arc<Mutex<Record>>) {
    engine_with_pool(config, step_delay, thinking, None)
}

fn engine_with_pool(
    config: EngineConfig,
    step_delay: Duration,
    thinking: Option<crate::thinking::ThinkingMarkers>,
    pool_blocks: Option<usize>,
) -> (EngineHandle, Arc<Mutex<Record>>) {
    scripted_engine(config, step_delay, thinking, pool_blocks, false)
}

fn scripted_engine(
    config: EngineConfig,
    step_delay: Duration,
    thinking: Option<crate::thinking::ThinkingMarkers>,
    pool_blocks: Option<usize>,
    drafts: bool,
) -> (EngineHandle, Arc<Mutex<Record>>) {
    let record = Arc::new(Mutex::new(Record::default()));
    let loaded = LoadedModel {
        info: ModelInfo {
            name: "counting".into(),
            architecture: "test".into(),
            context_length: 128,
            vocab_size: VOCAB,
            template_origin: "builtin:chatml".into(),
            tool_format: crate::tools::ToolFormatKind::Generic,
            thinking,
        },
        model: Box::new(CountingModel {
            record: record.clone(),
            step_delay,
            pool: pool_blocks.map(|n| (KvPool::new(n, 16, true), HashMap::new())),
            drafts,
        }),
        tokenizer: tokenizer(),
        template: ChatTemplate::fallback_for("llama", None, None).unwrap(),
        end_token_ids: vec![EOS],
    };
    (start(loaded, config), record)
}

fn greedy(prompt: Vec<u32>, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        prompt,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        max_tokens,
        stop_sequences: Vec::new(),
        constraint: None,
        ..GenerateRequest::default()
    }
}

/// Collects a stream to its end: every token id sent, and the final event.
async fn collect(mut stream: EventStream) -> (Vec<u32>, StreamEvent) {
    let mut ids = Vec::new();
    while let Some(event) = stream.recv().await {
        match event {
            StreamEvent::Text { token_ids, .. } => ids.extend(token_ids),
            last => return (ids, last),
        }
    }
    panic!("stream ended without a final event");
}

async fn wait_until(condition: impl Fn() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("condition not reached within 2 s");
}

#[tokio::test]
async fn generates_until_max_tokens_and_counts() {
    let (engine, record) = engine(EngineConfig::default(), Duration::ZERO);
    let stream = engine.submit(greedy(vec![1, 2, 3], 5)).unwrap();
    let (ids, last) = collect(stream).await;
    assert_eq!(ids, vec![4, 5, 6, 7, 8]);
    assert_eq!(
        last,
        StreamEvent::Done {
            reason: FinishReason::MaxTokens,
            prompt_tokens: 3,
            output_tokens: 5,
            cached_tokens: 0,
        }
    );
    wait_until(|| record.lock().unwrap().live.is_empty()).await;
}

#[tokio::test]
async fn stops_at_end_of_turn_without_emitting_it() {
    let (engine, _) = engine(EngineConfig::default(), Duration::ZERO);
    let (ids, last) = collect(engine.submit(greedy(vec![59], 50)).unwrap()).await;
    assert_eq!(ids, vec![60, 61, 62]);
    assert!(matches!(
        last,
        StreamEvent::Done {
            reason: FinishReason::EndOfTurn,
            output_tokens: 3,
            ..
        }
    ));
}

#[tokio::test]
async fn stop_sequence_cuts_the_text() {
    let (engine, _) = engine(EngineConfig::default(), Duration::ZERO);
    let mut request = greedy(vec![1], 20);
    request.stop_sequences = vec!["t5".into()];
    let mut stream = engine.submit(request).unwrap();
    let mut text = String::new();
    let last = loop {
        match stream.recv().await.unwrap() {
            StreamEvent::Text { text: piece, .. } => text.push_str(&piece),
            last => break last,
        }
    };
    assert!(!text.contains("t5"), "{text:?}");
    assert!(text.contains("t4"), "{text:?}");
    assert!(matches!(
        last,
        StreamEvent::Done {
            reason: FinishReason::StopSequence,
            ..
        }
    ));
}

#[tokio::test]
async fn concurrent_requests_share_forward_passes() {
    let (engine, record) = engine(EngineConfig::default(), Duration::from_millis(2));
    let streams: Vec<_> = (0..4)
        .map(|i| engine.submit(greedy(vec![i * 10], 8)).unwrap())
        .collect();
    for (i, stream) in streams.into_iter().enumerate() {
        let (ids, _) = collect(stream).await;
        let first = i as u32 * 10 + 1;
        assert_eq!(ids, (first..first + 8).collect::<Vec<_>>());
    }
    let record = record.lock().unwrap();
    assert!(
        record.batch_sizes.contains(&4),
        "never batched all four: {:?}",
        record.batch_sizes
    );
}

#[tokio::test]
async fn dropping_the_stream_cancels_and_frees_the_slot() {
    let config = EngineConfig {
        max_concurrent: 1,
        ..EngineConfig::default()
    };
    let (engine, record) = engine(config, Duration::from_millis(5));
    let mut first = engine.submit(greedy(vec![1], 100)).unwrap();
    assert!(matches!(first.recv().await, Some(StreamEvent::Text { .. })));
    drop(first);
    // The only slot must come free for the next request.
    let (ids, last) = collect(engine.submit(greedy(vec![1], 3)).unwrap()).await;
    assert_eq!(ids, vec![2, 3, 4]);
    assert!(matches!(last, StreamEvent::Done { .. }));
    // The cache is freed right after the final event is sent.
    wait_until(|| record.lock().unwrap().live.is_empty()).await;
    assert!(
        record.lock().unwrap().released.contains(&0),
        "first sequence not released"
    );
}

#[tokio::test]
async fn full_queue_and_long_prompts_are_refused_up_front() {
    let config = EngineConfig {
        max_concurrent: 1,
        max_queue: 1,
        ..EngineConfig::default()
    };
    let (engine, _) = engine(config, Duration::from_millis(20));
    let _running = engine.submit(greedy(vec![1], 100)).unwrap();
    // Let the engine take the first request into its slot.
    while engine.load().1 == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _queued = engine.submit(greedy(vec![1], 100)).unwrap();
    assert_eq!(
        engine.submit(greedy(vec![1], 100)).unwrap_err(),
        SubmitError::QueueFull(1)
    );
    assert_eq!(
        engine.submit(greedy(vec![1; 128], 1)).unwrap_err(),
        SubmitError::PromptTooLong {
            prompt: 128,
            context: 128
        }
    );
}

#[tokio::test]
async fn long_prompts_are_prefilled_in_chunks_while_others_decode() {
    let config = EngineConfig {
        prefill_chunk: 8,
        ..EngineConfig::default()
    };
    let (engine, record) = engine(config, Duration::from_millis(1));
    let (ids, _) = collect(engine.submit(greedy((0..40).collect(), 2)).unwrap()).await;
    assert_eq!(ids, vec![40, 41]);
    // 40 prompt tokens in chunks of 8: five prefill steps, then one decode step.
    assert_eq!(record.lock().unwrap().batch_sizes.len(), 6);
}

#[tokio::test]
async fn a_burst_fills_every_free_slot_before_taking_queue_places() {
    let config = EngineConfig {
        max_concurrent: 8,
        max_queue: 1,
        ..EngineConfig::default()
    };
    let (engine, _) = engine(config, Duration::from_millis(5));
    // All at once, before the engine thread has taken any of them into a slot.
    let streams: Vec<_> = (0..9)
        .map(|i| engine.submit(greedy(vec![i], 4)))
        .collect::<Result<_, _>>()
        .expect("8 slots and 1 queue place take 9 requests");
    assert_eq!(
        engine.submit(greedy(vec![1], 4)).unwrap_err(),
        SubmitError::QueueFull(1)
    );
    for stream in streams {
        let (ids, last) = collect(stream).await;
        assert_eq!(ids.len(), 4);
        assert!(matches!(last, StreamEvent::Done { .. }));
    }
    // Every place is given back once the requests are over.
    wait_until(|| engine.load() == (0, 0)).await;
    assert!(engine.submit(greedy(vec![1], 1)).is_ok());
}

#[tokio::test]
async fn a_panic_in_the_forward_pass_fails_its_requests_and_the_engine_serves_on() {
    let (engine, record) = engine(EngineConfig::default(), Duration::ZERO);
    // Counting up from 47, token 50 is sampled and sent, then feeding it panics.
    let (ids, last) = collect(engine.submit(greedy(vec![47], 10)).unwrap()).await;
    match last {
        StreamEvent::Error { message, kind } => {
            assert_eq!(kind, ErrorKind::Server);
            assert!(message.contains("injected panic at token 50"), "{message}");
        }
        other => panic!("expected an error event, got {other:?}"),
    }
    assert_eq!(
        ids,
        vec![48, 49, 50],
        "the tokens before the failing step were sent"
    );
    // The engine thread is alive and the failed sequence's cache was freed.
    let (ids, last) = collect(engine.submit(greedy(vec![1], 3)).unwrap()).await;
    assert_eq!(ids, vec![2, 3, 4]);
    assert!(matches!(last, StreamEvent::Done { .. }));
    wait_until(|| record.lock().unwrap().live.is_empty()).await;
    wait_until(|| engine.load() == (0, 0)).await;
}

#[tokio::test]
async fn priority_orders_the_queue_and_equal_priorities_keep_their_order() {
    let config = EngineConfig {
        max_concurrent: 1,
        ..EngineConfig::default()
    };
    let (engine, record) = engine(config, Duration::from_millis(2));
    let first = engine.submit(greedy(vec![1], 20)).unwrap();
    // Wait until the only slot is taken, so the rest queue.
    wait_until(|| engine.load().1 == 1).await;
    let mut streams = vec![first];
    for (token, priority) in [(10, 9), (20, 9), (30, 0), (40, 5), (35, 0)] {
        let mut request = greedy(vec![token], 2);
        request.priority = priority;
        streams.push(engine.submit(request).unwrap());
    }
    for stream in streams {
        collect(stream).await;
    }
    assert_eq!(
        record.lock().unwrap().first_tokens,
        vec![1, 30, 35, 40, 10, 20],
        "priority 0 first (in arrival order), then 5, then 9"
    );
}

#[tokio::test]
async fn the_observer_sees_each_queue_wait_and_each_step() {
    let config = EngineConfig {
        max_concurrent: 1,
        ..EngineConfig::default()
    };
    let (engine, record) = engine(config, Duration::from_millis(2));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    engine.observe(move |event| sink.lock().unwrap().push(*event));
    let first = engine.submit(greedy(vec![1, 2, 3], 4)).unwrap();
    let second = engine.submit(greedy(vec![9], 4)).unwrap();
    collect(first).await;
    collect(second).await;
    // A reply ends (its last event sent) just before the engine reports that step.
    let steps_seen = || {
        let steps = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, EngineEvent::Step { .. }))
            .count();
        steps == record.lock().unwrap().batch_sizes.len()
    };
    wait_until(steps_seen).await;
    let seen = seen.lock().unwrap();
    let waits: Vec<Duration> = seen
        .iter()
        .filter_map(|e| match e {
            EngineEvent::Scheduled { queue_wait } => Some(*queue_wait),
            _ => None,
        })
        .collect();
    assert_eq!(waits.len(), 2, "one per request: {seen:?}");
    // The second waited for the first's whole reply (4 steps of at least 2 ms).
    assert!(waits[1] >= Duration::from_millis(8), "{waits:?}");
    let steps: Vec<(usize, usize, usize, usize)> = seen
        .iter()
        .filter_map(|e| match *e {
            EngineEvent::Step {
                sequences,
                tokens,
                cached_tokens,
                cache_capacity,
            } => Some((sequences, tokens, cached_tokens, cache_capacity)),
            _ => None,
        })
        .collect();
    assert_eq!(steps.len(), record.lock().unwrap().batch_sizes.len());
    // The first step prefills the 3-token prompt (and samples a token, not yet in the cache).
    assert_eq!(steps[0], (1, 3, 3, 128));
    // Then one token a step, each cached, until the reply of 4 ends and frees its cache.
    assert_eq!(steps[1], (1, 1, 4, 128));
    assert_eq!(steps[2], (1, 1, 5, 128));
    assert_eq!(
        steps[3].2, 0,
        "the finished sequence's cache is freed: {steps:?}"
    );
}

/// The scripted model would think forever (each token is the last + 1): at the budget, the end
/// marker's tokens are forced and the reply goes on after them.
#[tokio::test]
async fn the_thinking_budget_forces_the_end_marker_then_the_answer_follows() {
    let markers = crate::thinking::ThinkingMarkers {
        open: "t5".into(),
        close: "t40 t41".into(),
    };
    let (engine, _) = engine_with(EngineConfig::default(), Duration::ZERO, Some(markers));
    let mut request = greedy(vec![4], 8);
    request.thinking_budget = Some(3);
    let (tokens, end) = collect(engine.submit(request).unwrap()).await;
    assert_eq!(tokens, [5, 6, 7, 8, 40, 41, 42, 43], "{end:?}");
    // Without a budget the same request thinks on.
    let (tokens, _) = collect(engine.submit(greedy(vec![4], 8)).unwrap()).await;
    assert_eq!(tokens, [5, 6, 7, 8, 9, 10, 11, 12]);
}

#[tokio::test]
async fn a_request_waits_in_the_queue_while_its_prompt_does_not_fit_in_the_pool() {
    // 4 blocks of 16: the first request's 40-token prompt and its output take 4; the second's
    // 30-token prompt needs 2 more, so it starts only when the first has finished.
    let (engine, record) = engine_with_pool(
        EngineConfig::default(),
        Duration::from_millis(1),
        None,
        Some(4),
    );
    let a = engine.submit(greedy(vec![1; 40], 20)).unwrap();
    let b = engine.submit(greedy(vec![30; 30], 5)).unwrap();
    let (ids_a, done_a) = collect(a).await;
    let (ids_b, done_b) = collect(b).await;
    assert_eq!(ids_a, (2..22).collect::<Vec<u32>>());
    assert_eq!(ids_b, (31..36).collect::<Vec<u32>>());
    assert!(
        matches!(done_a, StreamEvent::Done { .. }) && matches!(done_b, StreamEvent::Done { .. })
    );
    let record = record.lock().unwrap();
    assert!(
        record.batch_sizes.iter().all(|&n| n == 1),
        "the two ran side by side although both could not fit: {:?}",
        record.batch_sizes
    );
}

#[tokio::test]
async fn a_prompt_larger_than_the_whole_pool_is_refused_before_any_work() {
    let (engine, record) = engine_with_pool(EngineConfig::default(), Duration::ZERO, None, Some(4));
    match engine.submit(greedy(vec![1; 70], 4)) {
        Err(SubmitError::TooBigForCache {
            prompt: 70,
            capacity: 64,
        }) => {}
        other => panic!("not refused: {:?}", other.map(|_| ())),
    }
    // A prompt that fits runs, with max_tokens capped to what the pool leaves.
    let (ids, _) = collect(engine.submit(greedy(vec![1; 60], 50)).unwrap()).await;
    assert_eq!(ids.len(), 4);
    assert!(record.lock().unwrap().first_tokens == vec![1]);
}

/// A prompt whose pattern the scripted model (last token + 1) follows for a while and then
/// leaves: "10..=17 30 10 11" drafts "12..=17 30" after "10 11", of which "12..=17" is right.
fn half_predictable() -> Vec<u32> {
    let mut prompt: Vec<u32> = (10..=17).collect();
    prompt.extend([30, 10, 11]);
    prompt
}

#[tokio::test]
async fn speculation_gives_the_same_tokens_in_fewer_steps_and_takes_wrong_drafts_back() {
    let spec = Speculation {
        max_draft: 8,
        step_tokens: 16,
    };
    let mut results = Vec::new();
    for (drafts, max_tokens) in [(false, 12), (true, 12), (false, 5), (true, 5)] {
        let config = EngineConfig {
            speculation: spec,
            ..EngineConfig::default()
        };
        let (engine, record) = scripted_engine(config, Duration::ZERO, None, Some(64), drafts);
        let (ids, last) = collect(
            engine
                .submit(greedy(half_predictable(), max_tokens))
                .unwrap(),
        )
        .await;
        let StreamEvent::Done { output_tokens, .. } = last else {
            panic!("{last:?}")
        };
        assert_eq!(output_tokens, max_tokens);
        let record = record.lock().unwrap();
        results.push((
            ids,
            record.batch_sizes.len(),
            record.drafted,
            record.truncations.clone(),
        ));
    }
    let expected: Vec<u32> = (12..24).collect();
    assert_eq!(results[0].0, expected);
    assert_eq!(results[1].0, expected, "speculation changed the tokens");
    assert_eq!(results[2].0, expected[..5]);
    assert_eq!(results[3].0, expected[..5]);
    // Plain decoding: one prefill step, then one step per token after the first.
    assert_eq!(results[0].1, 12);
    assert_eq!(results[0].2, 0);
    // With drafts: the first decode step verifies "13..=16" after 12 (the draft length starts
    // at half the most), all right; the next one drafts "30 10 ..." after 17, wrongly, and
    // takes it back.
    let (_, steps, drafted, truncations) = &results[1];
    assert!(*steps < 12, "{steps} steps");
    assert!(*drafted >= 4);
    assert!(!truncations.is_empty());
    // A budget of five tokens drafts no more than it can use.
    let (_, _, drafted, _) = &results[3];
    assert!(*drafted <= 3, "drafted {drafted} for a budget of 5");
}

#[tokio::test]
async fn no_drafts_while_the_step_is_big_or_speculation_is_off() {
    for (max_draft, step_tokens) in [(0, 16), (8, 1)] {
        let config = EngineConfig {
            speculation: Speculation {
                max_draft,
                step_tokens,
            },
            ..EngineConfig::default()
        };
        let (engine, record) = scripted_engine(config, Duration::ZERO, None, Some(64), true);
        let (ids, _) = collect(engine.submit(greedy(half_predictable(), 12)).unwrap()).await;
        assert_eq!(ids, (12..24).collect::<Vec<u32>>());
        assert_eq!(record.lock().unwrap().drafted, 0);
    }
}
