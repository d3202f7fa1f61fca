//! `POST /v2/chat`: parse and validate, render and tokenize on the bounded text-work pool (never
//! on the async workers), admit, then stream the reply as server-sent events or fold it into one
//! JSON body. The reply itself is assembled by the runner (`runner::reply`); this module only
//! encodes it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use runner::engine::{ErrorKind, GenerateRequest};
use runner::reply::{ReplyAssembler, ReplyEvent, ReplyOptions, ReplyStream};

use crate::error::ApiError;
use crate::metrics::{ChatUsage, Metrics};
use crate::response::ResponseFold;
use crate::routes::{read_json, ActiveChat, AppState};
use crate::sse::{SseEncoder, StreamOutcome, KEEP_ALIVE};
use crate::validate::validate_chat;
use crate::wire::{ChatRequest, FinishReason};

/// One log line per chat request, written when the request is over (including when the client
/// went away mid-stream, which is when this is dropped early), with the tokens really used.
struct RequestLog {
    id: String,
    /// The chat model, once the request named a served one: its metrics are kept per model.
    model: Option<String>,
    metrics: Arc<Metrics>,
    started: Instant,
    /// When the last generated tokens arrived, for the inter-token latency.
    last_tokens: Option<Instant>,
    status: u16,
    stream: bool,
    first_token: Option<Duration>,
    input_tokens: usize,
    output_tokens: usize,
    cached_tokens: usize,
    outcome: Option<StreamOutcome>,
}

impl RequestLog {
    fn new(id: String, metrics: Arc<Metrics>) -> Self {
        Self {
            id,
            model: None,
            metrics,
            started: Instant::now(),
            last_tokens: None,
            status: 200,
            stream: false,
            first_token: None,
            input_tokens: 0,
            output_tokens: 0,
            cached_tokens: 0,
            outcome: None,
        }
    }

    /// Follows a reply event: the first content, and the usage so far.
    fn saw(&mut self, event: &ReplyEvent, reply: &ReplyStream) {
        let generated = matches!(
            event,
            ReplyEvent::ContentDelta { .. }
                | ReplyEvent::PlanDelta { .. }
                | ReplyEvent::ToolCallStart { .. }
        );
        if generated && self.first_token.is_none() {
            let after = self.started.elapsed();
            self.first_token = Some(after);
            if let Some(model) = &self.model {
                self.metrics.first_token(model, after);
            }
        }
        let usage = reply.usage();
        let new_tokens = usage.output_tokens.saturating_sub(self.output_tokens);
        if new_tokens > 0 {
            let now = Instant::now();
            // The first tokens' time is the time to first token, not a gap between tokens.
            if let (Some(model), Some(last)) = (&self.model, self.last_tokens) {
                self.metrics.token_gap(model, now - last, new_tokens);
            }
            self.last_tokens = Some(now);
        }
        self.input_tokens = usage.input_tokens;
        self.output_tokens = usage.output_tokens;
        self.cached_tokens = usage.cached_tokens;
    }
}

impl RequestLog {
    fn finish(&mut self, outcome: StreamOutcome) {
        self.outcome = Some(outcome);
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let finish = match (self.status, self.outcome) {
            (200, None) => "CANCELLED".to_string(),
            (_, None) => "-".to_string(),
            (_, Some(o)) => format!("{:?}", o.finish_reason),
        };
        if let Some(outcome) = self.outcome {
            self.input_tokens = outcome.input_tokens;
            self.output_tokens = outcome.output_tokens;
        }
        if let Some(model) = &self.model {
            self.metrics.chat_done(
                model,
                self.started.elapsed(),
                &ChatUsage {
                    prompt: self.input_tokens,
                    generated: self.output_tokens,
                    cached: self.cached_tokens,
                },
            );
        }
        tracing::info!(
            id = %self.id,
            status = self.status,
            stream = self.stream,
            tokens_in = self.input_tokens,
            tokens_out = self.output_tokens,
            tokens_cached = self.cached_tokens,
            ttft_ms = self.first_token.map(|d| d.as_millis() as u64),
            total_ms = self.started.elapsed().as_millis() as u64,
            finish = %finish,
            "chat"
        );
    }
}

/// A request admitted to the engine, before its first event.
struct Started {
    /// The served model's own name (the metrics' label).
    model: String,
    stream: bool,
    logprobs: bool,
    reply: ReplyStream,
}

pub async fn chat(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    let active = state.chat_started();
    let mut log = RequestLog::new(id.clone(), state.metrics().clone());
    match start_chat(&state, &headers, body).await {
        Ok(started) => {
            log.model = Some(started.model.clone());
            log.stream = started.stream;
            log.input_tokens = started.reply.usage().input_tokens;
            if started.stream {
                stream_reply(&state, id, log, started, active)
            } else {
                collect_reply(id, &mut log, started)
                    .await
                    .unwrap_or_else(|e| {
                        log.status = e.status().as_u16();
                        e.into_response()
                    })
            }
        }
        Err(e) => {
            log.status = e.status().as_u16();
            e.into_response()
        }
    }
}

/// Everything before the first token: parse, validate, render, tokenize, compile, admit.
async fn start_chat(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Started, ApiError> {
    let request: ChatRequest = read_json(state, headers, body).await?;
    state.check_serving()?;
    let engine = state.registry()?.chat(request.model.as_deref())?.clone();
    let valid = validate_chat(request, engine.info())?;
    // A prompt that cannot fit is refused before any tokenizer work (a cheap bound on bytes).
    let bytes = valid.prompt.text_bytes();
    let limit = engine.max_prompt_bytes();
    if bytes > limit {
        return Err(ApiError::BadRequest(format!(
            "too many tokens: the prompt is {bytes} bytes long, more than {limit} bytes, which is \
             more than the {} tokens of context this model serves can hold.",
            engine.info().context_length
        )));
    }
    let (prompt, thinking_opened) = {
        let engine = engine.clone();
        let chat = valid.prompt.clone();
        state
            .text_work(move || {
                let text = engine.render_chat(&chat)?;
                let opened = engine
                    .info()
                    .thinking
                    .as_ref()
                    .is_some_and(|markers| markers.opened_by(&text));
                // BOS is added only where the model wants one and the template did not write it.
                engine.tokenize_prompt(&text).map(|ids| (ids, opened))
            })
            .await??
    };
    let context = engine.info().context_length;
    if prompt.len() >= context {
        return Err(runner::engine::SubmitError::PromptTooLong {
            prompt: prompt.len(),
            context,
        }
        .into());
    }
    // Above-limit max_tokens are capped, never rejected: by the server ceiling and the context.
    let room = context - prompt.len();
    let max_tokens = [valid.max_tokens, state.config().max_tokens, Some(room)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(room);
    // Compiling may take a while (bounded by the engine): off the async workers. A grammar
    // that does not compile is the request's fault, never a reason to answer unconstrained.
    let constraint = match valid.constraint {
        None => None,
        Some(spec) => {
            let engine = engine.clone();
            let compiled = state.text_work(move || engine.compile(&spec)).await?;
            Some(compiled.map_err(ApiError::invalid)?)
        }
    };
    let prompt_tokens = prompt.len();
    let events = engine.submit(GenerateRequest {
        prompt,
        sampling: valid.sampling.clone(),
        max_tokens,
        stop_sequences: valid.stop_sequences,
        constraint,
        priority: valid.priority,
        teacher: None,
        thinking_budget: valid.thinking_budget,
        thinking_opened,
    })?;
    let tool_format = runner::tools::format(engine.tool_format());
    let options = ReplyOptions {
        tools: tool_format.reply_parser(valid.tool_parse),
        sources: valid.sources.into(),
        citation_mode: valid.citation_mode,
        native_citations: tool_format.cites_natively(),
        thinking: engine.info().thinking.clone(),
        thinking_opened,
    };
    let reply = ReplyStream::new(events, ReplyAssembler::new(prompt_tokens, options))
        .with_attributor(std::sync::Arc::new(engine.clone()));
    Ok(Started {
        model: engine.info().name.clone(),
        stream: valid.stream,
        logprobs: valid.sampling.logprobs,
        reply,
    })
}

async fn collect_reply(
    id: String,
    log: &mut RequestLog,
    mut started: Started,
) -> Result<Response, ApiError> {
    let mut fold = ResponseFold::new(started.logprobs);
    while let Some(event) = started.reply.next().await {
        log.saw(&event, &started.reply);
        if let Some(end) = fold.push(event) {
            let response = fold.finish(id, end)?;
            log.finish(StreamOutcome {
                finish_reason: response.finish_reason,
                input_tokens: response.usage.tokens.input_tokens as usize,
                output_tokens: response.usage.tokens.output_tokens as usize,
            });
            return Ok(Json(response).into_response());
        }
    }
    Err(ApiError::Internal(
        "the reply ended without its last event".into(),
    ))
}

/// The SSE body. Dropping it (client gone) drops the reply stream, which cancels the
/// generation. When the shutdown grace runs out, an open stream is ended with `ERROR` and
/// `[DONE]` rather than cut.
fn stream_reply(
    state: &AppState,
    id: String,
    mut log: RequestLog,
    started: Started,
    active: ActiveChat,
) -> Response {
    let keep_alive = state.config().keep_alive;
    let mut cut = state.cut_streams();
    let Started {
        logprobs,
        mut reply,
        ..
    } = started;
    let body = async_stream::stream! {
        // Counted as in progress until the body is dropped (finished or client gone).
        let _active = active;
        let mut encoder = SseEncoder::new(logprobs);
        yield Ok::<Bytes, Infallible>(encoder.start(&id));
        let mut aborted = false;
        loop {
            let next = tokio::select! {
                biased;
                next = tokio::time::timeout(keep_alive, reply.next()) => next,
                () = crate::listen::stopped(&mut cut), if !aborted => {
                    aborted = true;
                    reply.abort(ErrorKind::Server, "the server is shutting down");
                    continue;
                }
            };
            match next {
                Err(_) => yield Ok(Bytes::from_static(KEEP_ALIVE)),
                Ok(None) => break,
                Ok(Some(event)) => {
                    log.saw(&event, &reply);
                    for frame in encoder.event(event) {
                        yield Ok(frame);
                    }
                }
            }
            if let Some(outcome) = encoder.outcome() {
                log.finish(outcome);
                if outcome.finish_reason == FinishReason::Error {
                    tracing::warn!(id = %id, "stream ended with an error");
                }
                break;
            }
        }
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .expect("static headers are valid")
}
