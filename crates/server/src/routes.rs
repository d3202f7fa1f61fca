//! The HTTP routes: `app(state)` builds the whole router, so tests drive it without a socket.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use runner::engine::{EngineHandle, EventStream, GenerateRequest, StreamEvent};
use runner::tools::{ParseOptions, ToolEvent, ToolParser, DEFAULT_PLAN_HOLD_BYTES};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::config::Config;
use crate::error::ApiError;
use crate::registry::{Backend, Registry};
use crate::sse::{map_finish_reason, SseEncoder, StreamOutcome, KEEP_ALIVE};
use crate::validate::validate_chat;
use crate::wire::{
    ChatRequest, ChatResponse, CheckApiKeyResponse, DetokenizeRequest, DetokenizeResponse,
    FinishReason, ListModelsResponse, LogprobItem, ModelDescription, ResponseContent,
    ResponseMessage, TokenizeRequest, TokenizeResponse, ToolCallOut, ToolChoice, Usage,
};

/// Longest text `/v1/tokenize` takes and most tokens `/v1/detokenize` takes, per the spec.
const MAX_TOKENIZE_CHARS: usize = 65_536;
const MAX_DETOKENIZE_TOKENS: usize = 65_536;

/// What every handler shares: the settings and, once every model is loaded, the models.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    config: Config,
    registry: OnceLock<Registry>,
}

impl AppState {
    /// A state with no model yet: model routes answer 503 until [`AppState::set_registry`].
    pub fn new(config: Config) -> Self {
        Self {
            inner: Arc::new(Shared {
                config,
                registry: OnceLock::new(),
            }),
        }
    }

    pub fn with_engine(config: Config, engine: EngineHandle) -> Self {
        let state = Self::new(config);
        state.set_engine(engine);
        state
    }

    /// Marks the server ready with one chat model, under the configured names.
    pub fn set_engine(&self, engine: EngineHandle) {
        let names = self.inner.config.served_model_names.clone();
        self.set_registry(Registry::new(vec![Backend::Chat(engine)], &names));
    }

    /// Marks the server ready with every model; a second call is ignored.
    pub fn set_registry(&self, registry: Registry) {
        let _ = self.inner.registry.set(registry);
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The served models, or a 503 while they load.
    pub(crate) fn registry(&self) -> Result<&Registry, ApiError> {
        self.inner.registry.get().ok_or(ApiError::NotReady)
    }
}

pub fn app(state: AppState) -> Router {
    let keys = Arc::new(state.config().api_keys.clone());
    let body_limit = state.config().max_body_bytes;
    let api = Router::new()
        .route("/v2/chat", post(chat))
        .route("/v1/embed", post(crate::embed::embed_v1))
        .route("/v2/embed", post(crate::embed::embed_v2))
        .route("/v1/rerank", post(crate::rerank::rerank_v1))
        .route("/v2/rerank", post(crate::rerank::rerank_v2))
        .route("/v1/models", get(list_models))
        // A wildcard so that Hugging Face ids (`org/name`) work as model names.
        .route("/v1/models/{*model}", get(get_model))
        .route("/v1/tokenize", post(tokenize))
        .route("/v1/detokenize", post(detokenize))
        .route("/v1/check-api-key", post(check_api_key))
        .route_layer(middleware::from_fn_with_state(
            keys,
            crate::auth::require_key,
        ));
    // No key needed: probes, and the tokenizer file the Python SDK downloads without auth.
    let open = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/tokenizer.json", get(tokenizer_file));
    api.merge(open)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Reads a JSON body ourselves so that every failure (too large, bad syntax, wrong shape) comes
/// out in the one error shape; the `Content-Type` is not required, as the SDKs always send JSON.
pub(crate) fn parse_json<T: DeserializeOwned>(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: state.config().max_body_bytes,
            }
        } else {
            ApiError::invalid(rejection.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::from_json(&e))
}

// ---------------------------------------------------------------------------------------------
// POST /v2/chat
// ---------------------------------------------------------------------------------------------

/// One log line per chat request, written when the request is over (including when the
/// client went away mid-stream, which is when this is dropped early).
struct RequestLog {
    id: String,
    started: Instant,
    status: u16,
    stream: bool,
    first_token: Option<Duration>,
    outcome: Option<StreamOutcome>,
}

impl RequestLog {
    fn new(id: String) -> Self {
        Self {
            id,
            started: Instant::now(),
            status: 200,
            stream: false,
            first_token: None,
            outcome: None,
        }
    }

    fn finish(&mut self, outcome: StreamOutcome) {
        self.outcome = Some(outcome);
    }

    fn saw_token(&mut self) {
        self.first_token
            .get_or_insert_with(|| self.started.elapsed());
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let finish = match (self.status, self.outcome) {
            (200, None) => "CANCELLED".to_string(),
            (_, None) => "-".to_string(),
            (_, Some(o)) => format!("{:?}", o.finish_reason),
        };
        tracing::info!(
            id = %self.id,
            status = self.status,
            stream = self.stream,
            tokens_in = self.outcome.map_or(0, |o| o.input_tokens),
            tokens_out = self.outcome.map_or(0, |o| o.output_tokens),
            ttft_ms = self.first_token.map(|d| d.as_millis() as u64),
            total_ms = self.started.elapsed().as_millis() as u64,
            finish = %finish,
            "chat"
        );
    }
}

async fn chat(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    let mut log = RequestLog::new(id.clone());
    match start_chat(&state, body).await {
        Ok((valid_stream, logprobs, prompt_tokens, events, tools)) => {
            log.stream = valid_stream;
            if valid_stream {
                stream_reply(
                    id,
                    log,
                    events,
                    logprobs,
                    prompt_tokens,
                    state.config().keep_alive,
                    tools,
                )
            } else {
                collect_reply(id, &mut log, events, logprobs, tools)
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

/// Everything before the first token: parse, validate, render, tokenize, admit. With tools,
/// also the parser that reads the reply's tool calls.
async fn start_chat(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<(bool, bool, usize, EventStream, Option<ToolParser>), ApiError> {
    let request: ChatRequest = parse_json(state, body)?;
    let engine = state.registry()?.chat(request.model.as_deref())?;
    let info = engine.info();
    let tool_choice = request.tool_choice;
    // Built before validation consumes the request; used only once it has passed.
    let constraint_spec = crate::validate::constraint_spec(
        &request,
        runner::tools::format(engine.tool_format()).markers(),
    );
    let valid = validate_chat(request, info)?;
    let parser = (!valid.prompt.tools.is_empty()).then(|| {
        // Text before a call is a plan only if a call follows: hold it (see ParseOptions),
        // all of it when a call is certain, none when calls are ruled out.
        let plan_hold_bytes = match tool_choice {
            Some(ToolChoice::Required) => usize::MAX,
            Some(ToolChoice::None) => 0,
            None => DEFAULT_PLAN_HOLD_BYTES,
        };
        runner::tools::format(engine.tool_format()).parser(ParseOptions {
            plan_hold_bytes,
            id_seed: None,
        })
    });
    let text = engine.render_chat(&valid.prompt)?;
    // BOS is added only where the model wants one and the template did not write it already.
    let prompt = engine.tokenize_prompt(&text)?;
    let context = info.context_length;
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
    let prompt_tokens = prompt.len();
    let logprobs = valid.sampling.logprobs;
    // Compiling may take a while (bounded by the engine): off the async workers. A grammar
    // that does not compile is the request's fault, never a reason to answer unconstrained.
    let constraint = match constraint_spec {
        None => None,
        Some(spec) => {
            let engine = engine.clone();
            let compiled = tokio::task::spawn_blocking(move || engine.compile(&spec))
                .await
                .map_err(|e| ApiError::Internal(format!("compiling the grammar failed: {e}")))?;
            Some(compiled.map_err(ApiError::invalid)?)
        }
    };
    let events = engine.submit(GenerateRequest {
        prompt,
        sampling: valid.sampling,
        max_tokens,
        stop_sequences: valid.stop_sequences,
        constraint,
    })?;
    Ok((valid.stream, logprobs, prompt_tokens, events, parser))
}

/// The non-stream message of a reply read by a tool parser: plan, calls, and content when
/// there is text (or no call).
fn tool_reply_message(events: Vec<ToolEvent>) -> ResponseMessage {
    let mut plan = String::new();
    let mut content = String::new();
    let mut calls: Vec<ToolCallOut> = Vec::new();
    for event in events {
        match event {
            ToolEvent::PlanDelta(text) => plan.push_str(&text),
            ToolEvent::Content(text) => content.push_str(&text),
            ToolEvent::CallStart { id, name, .. } => calls.push(ToolCallOut::function(id, name)),
            ToolEvent::CallArgsDelta { index, text } => {
                if let Some(call) = calls.get_mut(index) {
                    call.function.arguments.push_str(&text);
                }
            }
            ToolEvent::CallEnd { .. } => {}
        }
    }
    ResponseMessage {
        role: "assistant".into(),
        content: if content.is_empty() && !calls.is_empty() {
            Vec::new()
        } else {
            vec![ResponseContent::Text { text: content }]
        },
        tool_plan: (!plan.is_empty()).then_some(plan),
        tool_calls: (!calls.is_empty()).then_some(calls),
    }
}

async fn collect_reply(
    id: String,
    log: &mut RequestLog,
    mut events: EventStream,
    logprobs: bool,
    tools: Option<ToolParser>,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    let mut items = Vec::new();
    loop {
        match events.recv().await {
            Some(StreamEvent::Text {
                text: piece,
                token_ids,
                logprobs: lps,
            }) => {
                log.saw_token();
                text.push_str(&piece);
                if logprobs {
                    items.push(LogprobItem {
                        text: piece,
                        token_ids,
                        logprobs: lps,
                    });
                }
            }
            Some(StreamEvent::Done {
                reason,
                prompt_tokens,
                output_tokens,
            }) => {
                let mut finish_reason = map_finish_reason(reason);
                let message = match tools {
                    Some(mut parser) => {
                        let mut events = parser.push(&text);
                        events.extend(parser.finish());
                        if parser.calls() > 0 {
                            finish_reason = FinishReason::ToolCall;
                        }
                        tool_reply_message(events)
                    }
                    None => ResponseMessage {
                        role: "assistant".into(),
                        content: vec![ResponseContent::Text { text }],
                        tool_plan: None,
                        tool_calls: None,
                    },
                };
                log.finish(StreamOutcome {
                    finish_reason,
                    input_tokens: prompt_tokens,
                    output_tokens,
                });
                let response = ChatResponse {
                    id,
                    finish_reason,
                    message,
                    usage: Usage::real(prompt_tokens, output_tokens),
                    logprobs: logprobs.then_some(items),
                };
                return Ok(Json(response).into_response());
            }
            Some(StreamEvent::Error { message }) => return Err(ApiError::Internal(message)),
            None => {
                return Err(ApiError::Internal(
                    "the engine stopped before the reply was complete".into(),
                ))
            }
        }
    }
}

/// The SSE body. Dropping it (client gone) drops `events`, which cancels the generation.
fn stream_reply(
    id: String,
    mut log: RequestLog,
    mut events: EventStream,
    logprobs: bool,
    prompt_tokens: usize,
    keep_alive: Duration,
    tools: Option<ToolParser>,
) -> Response {
    let body = async_stream::stream! {
        let mut encoder = SseEncoder::new(logprobs, prompt_tokens);
        if let Some(parser) = tools {
            encoder = encoder.with_tool_parser(parser);
        }
        yield Ok::<Bytes, Infallible>(encoder.start(&id));
        loop {
            match tokio::time::timeout(keep_alive, events.recv()).await {
                Err(_) => yield Ok(Bytes::from_static(KEEP_ALIVE)),
                Ok(Some(event)) => {
                    if matches!(event, StreamEvent::Text { .. }) {
                        log.saw_token();
                    }
                    for frame in encoder.event(event) {
                        yield Ok(frame);
                    }
                }
                Ok(None) => {
                    for frame in encoder.closed() {
                        yield Ok(frame);
                    }
                }
            }
            if let Some(outcome) = encoder.outcome() {
                log.finish(outcome);
                if outcome.finish_reason == FinishReason::Error {
                    tracing::warn!(id = %id, "stream ended with an engine error");
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

// ---------------------------------------------------------------------------------------------
// Models, tokenizer, keys, health
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct ModelsQuery {
    endpoint: Option<String>,
}

fn host(headers: &HeaderMap) -> &str {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
}

async fn list_models(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ModelsQuery>, QueryRejection>,
) -> Result<Json<ListModelsResponse>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let registry = state.registry()?;
    let models = registry
        .models()
        .iter()
        .filter(|m| {
            query
                .endpoint
                .as_deref()
                .is_none_or(|e| m.backend.endpoints().iter().any(|x| x.name() == e))
        })
        .flat_map(|m| {
            m.names
                .iter()
                .map(|name| registry.describe(m, name, host(&headers)))
        })
        .collect();
    Ok(Json(ListModelsResponse { models }))
}

async fn get_model(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(model): Path<String>,
) -> Result<Json<ModelDescription>, ApiError> {
    let registry = state.registry()?;
    let served = registry
        .models()
        .iter()
        .find(|m| m.names.contains(&model))
        .ok_or_else(|| ApiError::ModelNotFound(model.clone()))?;
    Ok(Json(registry.describe(served, &model, host(&headers))))
}

#[derive(Debug, Deserialize)]
struct TokenizerQuery {
    model: Option<String>,
}

async fn tokenizer_file(
    State(state): State<AppState>,
    query: Result<Query<TokenizerQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let json = state.registry()?.tokenizer_json(query.model.as_deref())?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

async fn tokenize(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TokenizeResponse>, ApiError> {
    let request: TokenizeRequest = parse_json(&state, body)?;
    let engine = state.registry()?.chat(request.model.as_deref())?;
    let text = request.text.unwrap_or_default();
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_TOKENIZE_CHARS {
        return Err(ApiError::invalid(format!(
            "text must be between 1 and {MAX_TOKENIZE_CHARS} characters long (received {chars})."
        )));
    }
    let tokens = engine.tokenize(&text, false)?;
    let token_strings = tokens
        .iter()
        .map(|t| engine.detokenize(&[*t]))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(TokenizeResponse {
        tokens,
        token_strings,
    }))
}

async fn detokenize(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DetokenizeResponse>, ApiError> {
    let request: DetokenizeRequest = parse_json(&state, body)?;
    let engine = state.registry()?.chat(request.model.as_deref())?;
    let tokens = request.tokens.unwrap_or_default();
    if tokens.is_empty() || tokens.len() > MAX_DETOKENIZE_TOKENS {
        return Err(ApiError::invalid(format!(
            "tokens must hold between 1 and {MAX_DETOKENIZE_TOKENS} token ids (received {}).",
            tokens.len()
        )));
    }
    let vocab = engine.info().vocab_size;
    let ids = tokens
        .iter()
        .map(|&t| match u32::try_from(t) {
            Ok(id) if (id as usize) < vocab => Ok(id),
            _ => Err(ApiError::invalid(format!(
                "token id {t} is outside the vocabulary (0 to {}).",
                vocab - 1
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(DetokenizeResponse {
        text: engine.detokenize(&ids)?,
    }))
}

/// Reaching the handler means the key passed (or auth is off).
async fn check_api_key() -> Json<CheckApiKeyResponse> {
    Json(CheckApiKeyResponse { valid: true })
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let models: Vec<&str> = state
        .registry()?
        .models()
        .iter()
        .map(|m| m.backend.own_name())
        .collect();
    Ok(Json(
        serde_json::json!({"status": "ready", "model": models.first(), "models": models}),
    ))
}
