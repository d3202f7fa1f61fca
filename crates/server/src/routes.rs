//! The HTTP routes: `app(state)` builds the whole router, so tests drive it without a socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use runner::engine::EngineHandle;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::registry::{Backend, Registry};
use crate::wire::{
    CheckApiKeyResponse, DetokenizeRequest, DetokenizeResponse, ListModelsResponse,
    ModelDescription, TokenizeRequest, TokenizeResponse,
};

/// Longest text `/v1/tokenize` takes and most tokens `/v1/detokenize` takes, per the spec.
const MAX_TOKENIZE_CHARS: usize = 65_536;
const MAX_DETOKENIZE_TOKENS: usize = 65_536;

/// What every handler shares: the settings, once every model is loaded the models, and the
/// server's state of life (draining, streams being cut at the end of a shutdown).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    config: Config,
    registry: OnceLock<Registry>,
    /// Template rendering, tokenizing and grammar compiling run here, at most this many at once,
    /// never on the async workers (a 5 MB message must not stall every stream).
    text_pool: Arc<Semaphore>,
    /// Each model's `/tokenizer.json` (by the `model` query, `""` for none), built once.
    tokenizer_files: Mutex<HashMap<String, (Bytes, HeaderValue)>>,
    /// Set at SIGTERM/SIGINT: `/ready` answers 503 and new chats are refused while running
    /// streams finish.
    draining: AtomicBool,
    /// Set when the shutdown grace runs out: open streams end with `ERROR` and `[DONE]`.
    cut_streams: watch::Sender<bool>,
    /// Chat requests in progress (a stream counts until its body is dropped).
    active_chats: Arc<AtomicUsize>,
    /// What `/metrics` exports.
    metrics: Arc<Metrics>,
}

/// One chat request in progress, counted in [`AppState::active_chats`] until dropped.
pub(crate) struct ActiveChat(Arc<AtomicUsize>);

impl Drop for ActiveChat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AppState {
    /// A state with no model yet: model routes answer 503 until [`AppState::set_registry`].
    pub fn new(config: Config) -> Self {
        let text_workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        Self {
            inner: Arc::new(Shared {
                config,
                registry: OnceLock::new(),
                text_pool: Arc::new(Semaphore::new(text_workers)),
                tokenizer_files: Mutex::new(HashMap::new()),
                draining: AtomicBool::new(false),
                cut_streams: watch::channel(false).0,
                active_chats: Arc::new(AtomicUsize::new(0)),
                metrics: Arc::new(Metrics::default()),
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

    /// Marks the server ready with every model; a second call is ignored. Each chat engine
    /// reports its queue waits and steps to the metrics from then on.
    pub fn set_registry(&self, registry: Registry) {
        for served in registry.models() {
            if let Backend::Chat(engine) = &served.backend {
                let (metrics, name) = (
                    self.inner.metrics.clone(),
                    served.backend.own_name().to_string(),
                );
                engine.observe(move |event| metrics.engine_event(&name, event));
            }
        }
        let _ = self.inner.registry.set(registry);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The served models, or a 503 while they load.
    pub(crate) fn registry(&self) -> Result<&Registry, ApiError> {
        self.inner.registry.get().ok_or(ApiError::NotReady)
    }

    /// Starts draining: `/ready` turns 503 at once and new chats are refused (503, which the
    /// SDKs retry, on another replica behind a load balancer).
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Ends every open stream now, each with `message-end` (`ERROR`) and `[DONE]`.
    pub fn cut_streams(&self) -> watch::Receiver<bool> {
        self.inner.cut_streams.subscribe()
    }

    pub fn cut_open_streams(&self) {
        self.inner.cut_streams.send_replace(true);
    }

    /// Chat requests in progress, streams included.
    pub fn active_chats(&self) -> usize {
        self.inner.active_chats.load(Ordering::SeqCst)
    }

    /// Counts a chat request until the returned guard is dropped.
    pub(crate) fn chat_started(&self) -> ActiveChat {
        self.inner.active_chats.fetch_add(1, Ordering::SeqCst);
        ActiveChat(self.inner.active_chats.clone())
    }

    /// Refuses new work while draining.
    pub(crate) fn check_serving(&self) -> Result<(), ApiError> {
        if self.is_draining() {
            Err(ApiError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// Runs blocking text work (render, tokenize, compile) on the blocking pool, at most a few
    /// at once. The permit travels with the work, so a client that goes away cannot make the
    /// pool run more than its bound.
    pub(crate) async fn text_work<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self
            .inner
            .text_pool
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::ShuttingDown)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("text work failed: {e}")))
    }
}

pub fn app(state: AppState) -> Router {
    let keys = Arc::new(state.config().api_keys.clone());
    let body_limit = state.config().max_body_bytes;
    let api = Router::new()
        .route("/v2/chat", post(crate::chat::chat))
        .route("/v1/embed", post(crate::embed::embed_v1))
        .route("/v2/embed", post(crate::embed::embed_v2))
        .route("/v1/rerank", post(crate::rerank::rerank_v1))
        .route("/v2/rerank", post(crate::rerank::rerank_v2))
        .route("/v1/models", get(list_models))
        // A wildcard so that Hugging Face ids (`org/name`) work as model names.
        .route("/v1/models/{*model}", get(get_model))
        .route("/v1/tokenize", post(tokenize))
        .route("/v1/detokenize", post(detokenize))
        .route("/v1/check-api-key", post(check_api_key));
    // `/metrics` needs the key like the API, unless `--metrics-public`.
    let (api, open) = if state.config().metrics_public {
        (
            api,
            Router::new().route("/metrics", get(crate::metrics::metrics)),
        )
    } else {
        (
            api.route("/metrics", get(crate::metrics::metrics)),
            Router::new(),
        )
    };
    let api = api.route_layer(middleware::from_fn_with_state(
        keys,
        crate::auth::require_key,
    ));
    // No key needed: the playground page, probes, and the tokenizer file the Python SDK downloads without auth.
    let open = open
        .route("/", get(crate::playground::page))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/tokenizer.json", get(tokenizer_file));
    api.merge(open)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::count_requests,
        ))
        // Outermost: whatever answers in another shape (axum's rejections) becomes our JSON.
        .layer(middleware::from_fn(crate::error::json_errors))
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

/// Reads a request body within the configured time and size and parses it as JSON, so that
/// every failure (too large, too slow, bad syntax, wrong shape) comes out in the one error
/// shape. A declared `Content-Length` over the limit is refused before a byte is read. The
/// `Content-Type` is not required, as the SDKs always send JSON.
pub(crate) async fn read_json<T: DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let config = state.config();
    let limit = config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let timeout = config.body_read_timeout;
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => {
            return Err(ApiError::BodyTimeout {
                seconds: timeout.as_secs(),
            })
        }
        Ok(Err(error)) => {
            // `to_bytes` fails on the limit (a body without a length, or a lying one) or on
            // a connection that broke mid-body.
            let too_large = std::error::Error::source(&error)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>())
                || error.to_string().contains("length limit");
            return Err(if too_large {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::invalid(format!("the request body could not be read: {error}"))
            });
        }
        Ok(Ok(bytes)) => bytes,
    };
    serde_json::from_slice(&bytes).map_err(|e| ApiError::from_json(&e))
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

/// The tokenizer as `tokenizer.json` (the SDKs fetch it to tokenize offline): serialized once,
/// served from memory with an ETag, and `304 Not Modified` to a client that has it. `?model=`
/// names another model than the first.
async fn tokenizer_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<TokenizerQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let key = query.model.clone().unwrap_or_default();
    let known = state
        .inner
        .tokenizer_files
        .lock()
        .unwrap()
        .get(&key)
        .cloned();
    let (bytes, etag) = match known {
        Some(file) => file,
        None => {
            let registry = state.registry()?.clone();
            let built = state
                .text_work(move || {
                    let json = Bytes::from(registry.tokenizer_json(query.model.as_deref())?);
                    let etag = format!("\"{:016x}\"", fnv1a(&json));
                    let etag = HeaderValue::from_str(&etag).expect("hex is a valid header value");
                    Ok::<_, ApiError>((json, etag))
                })
                .await??;
            let mut files = state.inner.tokenizer_files.lock().unwrap();
            files.entry(key).or_insert(built).clone()
        }
    };
    let cached = headers.get(header::IF_NONE_MATCH).is_some_and(|tags| {
        tags.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii() == etag.as_bytes() || t.trim_ascii() == b"*")
    });
    let mut response = if cached {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
    };
    response.headers_mut().insert(header::ETAG, etag);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    Ok(response)
}

/// 64-bit FNV-1a: a stable fingerprint of the tokenizer file for its ETag.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

async fn tokenize(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<TokenizeResponse>, ApiError> {
    let request: TokenizeRequest = read_json(&state, &headers, body).await?;
    let engine = state.registry()?.chat(request.model.as_deref())?.clone();
    let text = request.text.unwrap_or_default();
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_TOKENIZE_CHARS {
        return Err(ApiError::invalid(format!(
            "text must be between 1 and {MAX_TOKENIZE_CHARS} characters long (received {chars})."
        )));
    }
    let (tokens, token_strings) = state
        .text_work(move || {
            let tokens = engine.tokenize(&text, false)?;
            let strings = tokens
                .iter()
                .map(|t| engine.detokenize(&[*t]))
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, runner::engine::TextOpError>((tokens, strings))
        })
        .await??;
    Ok(Json(TokenizeResponse {
        tokens,
        token_strings,
    }))
}

async fn detokenize(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<DetokenizeResponse>, ApiError> {
    let request: DetokenizeRequest = read_json(&state, &headers, body).await?;
    let engine = state.registry()?.chat(request.model.as_deref())?.clone();
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
    let text = state.text_work(move || engine.detokenize(&ids)).await??;
    Ok(Json(DetokenizeResponse { text }))
}

/// Reaching the handler means the key passed (or auth is off).
async fn check_api_key() -> Json<CheckApiKeyResponse> {
    Json(CheckApiKeyResponse { valid: true })
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// 200 once the model is loaded, 503 while loading and from the moment a shutdown starts (so a
/// load balancer stops sending work while running streams finish).
async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if state.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Text work runs off the async worker: on a one-thread runtime, a timer task keeps
    /// ticking while a blocking render is in progress.
    #[test]
    fn text_work_leaves_the_async_worker_free() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let state = AppState::new(Config::for_model("unused"));
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let work = tokio::spawn({
                let state = state.clone();
                async move {
                    state
                        .text_work(move || rx.recv_timeout(std::time::Duration::from_secs(10)))
                        .await
                }
            });
            // The only async thread is free: it runs this task while the work blocks.
            let mut ticks = 0;
            while ticks < 5 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                ticks += 1;
            }
            assert!(!work.is_finished(), "the work ended before it was released");
            tx.send(()).unwrap();
            assert!(work.await.unwrap().unwrap().is_ok());
        });
    }
}
