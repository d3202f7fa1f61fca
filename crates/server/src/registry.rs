//! The models one server process serves, each under its names, with what it can do.
//!
//! A model's kind comes from its own files: a GGUF file or a causal LM directory is a chat
//! model (the runner's engine); a sentence-embedding directory is an embedder and a
//! sequence-classification directory a cross-encoder (the encoder crate's engine). Each model
//! has its own engine thread, queue and compute pool. An embedder also answers rerank, by the
//! cosine between the query's and each document's embeddings mapped to [0, 1].

use std::path::Path;

use encoder::{EncoderHandle, EncoderKind};
use runner::engine::EngineHandle;

use crate::config::Config;
use crate::error::ApiError;
use crate::wire::{ModelDescription, SamplingDefaults};

/// The Cohere endpoints a model can serve (`CompatibleEndpoint` spellings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Embed,
    Rerank,
}

impl Endpoint {
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Embed => "embed",
            Endpoint::Rerank => "rerank",
        }
    }
}

/// What runs a model.
#[derive(Clone)]
pub enum Backend {
    Chat(EngineHandle),
    Encoder(EncoderHandle),
}

impl Backend {
    /// The endpoints this model serves, its main one first.
    pub fn endpoints(&self) -> &'static [Endpoint] {
        match self {
            Backend::Chat(_) => &[Endpoint::Chat],
            Backend::Encoder(e) => match e.spec().kind {
                EncoderKind::Embed => &[Endpoint::Embed, Endpoint::Rerank],
                EncoderKind::Rerank => &[Endpoint::Rerank],
            },
        }
    }

    /// The model's own name (file stem, directory name or Hugging Face id).
    pub fn own_name(&self) -> &str {
        match self {
            Backend::Chat(e) => &e.info().name,
            Backend::Encoder(e) => &e.spec().name,
        }
    }

    /// Tokens one request may hold: the chat context, or the encoder's window.
    pub fn context_length(&self) -> usize {
        match self {
            Backend::Chat(e) => e.info().context_length,
            Backend::Encoder(e) => e.spec().max_tokens,
        }
    }

    fn tokenizer_json(&self) -> String {
        match self {
            Backend::Chat(e) => e.tokenizer_json(),
            Backend::Encoder(e) => e.text().tokenizer_json(),
        }
    }
}

/// One served model: the names a request's `model` may use, and its backend.
#[derive(Clone)]
pub struct ServedModel {
    pub names: Vec<String>,
    pub backend: Backend,
}

/// Every served model, in the order of `--model`.
#[derive(Clone, Default)]
pub struct Registry {
    models: Vec<ServedModel>,
}

/// The feature an embedder's /v1/models entry carries for its cosine-based rerank.
pub const RERANK_BY_COSINE: &str = "rerank-by-embedding-cosine";

impl Registry {
    /// Pairs loaded backends (in `--model` order) with their names: with one model every
    /// `--served-model-name` is one of its names; with several, the i-th name is the i-th
    /// model's, and a model without one keeps its own name.
    pub fn new(backends: Vec<Backend>, served_names: &[String]) -> Self {
        let single = backends.len() == 1;
        let models = backends
            .into_iter()
            .enumerate()
            .map(|(i, backend)| {
                let names = if single && !served_names.is_empty() {
                    served_names.to_vec()
                } else {
                    match served_names.get(i) {
                        Some(n) => vec![n.clone()],
                        None => vec![backend.own_name().to_string()],
                    }
                };
                ServedModel { names, backend }
            })
            .collect();
        Self { models }
    }

    pub fn models(&self) -> &[ServedModel] {
        &self.models
    }

    /// The model a request names, checked against the endpoint it was sent to: no name is a
    /// 400, an unknown name a 404, a model that does not serve `endpoint` a 400 that says what
    /// it does serve.
    pub fn find(&self, model: Option<&str>, endpoint: Endpoint) -> Result<&ServedModel, ApiError> {
        let name = match model {
            None | Some("") => return Err(ApiError::invalid("model must be specified.")),
            Some(m) => m,
        };
        let served = self
            .models
            .iter()
            .find(|m| m.names.iter().any(|n| n == name))
            .ok_or_else(|| ApiError::ModelNotFound(name.to_string()))?;
        let endpoints = served.backend.endpoints();
        if !endpoints.contains(&endpoint) {
            let serves: Vec<&str> = endpoints.iter().map(|e| e.name()).collect();
            return Err(ApiError::invalid(format!(
                "model '{name}' does not support the {} endpoint; it serves: {}.",
                endpoint.name(),
                serves.join(", ")
            )));
        }
        Ok(served)
    }

    /// The chat engine a request names.
    pub fn chat(&self, model: Option<&str>) -> Result<&EngineHandle, ApiError> {
        match &self.find(model, Endpoint::Chat)?.backend {
            Backend::Chat(e) => Ok(e),
            Backend::Encoder(_) => unreachable!("an encoder does not list chat"),
        }
    }

    /// The encoder a request to `endpoint` names.
    pub fn encoder(
        &self,
        model: Option<&str>,
        endpoint: Endpoint,
    ) -> Result<&EncoderHandle, ApiError> {
        match &self.find(model, endpoint)?.backend {
            Backend::Encoder(e) => Ok(e),
            Backend::Chat(_) => unreachable!("a chat model lists only chat"),
        }
    }

    /// The first chat model, which the name-less routes (`/tokenizer.json`) default to.
    pub fn first_chat(&self) -> Option<&EngineHandle> {
        self.models.iter().find_map(|m| match &m.backend {
            Backend::Chat(e) => Some(e),
            Backend::Encoder(_) => None,
        })
    }

    /// `tokenizer.json` of the model named `model`, or of the default model.
    pub fn tokenizer_json(&self, model: Option<&str>) -> Result<String, ApiError> {
        match model {
            Some(name) => self
                .models
                .iter()
                .find(|m| m.names.iter().any(|n| n == name))
                .map(|m| m.backend.tokenizer_json())
                .ok_or_else(|| ApiError::ModelNotFound(name.to_string())),
            None => self
                .models
                .first()
                .map(|m| m.backend.tokenizer_json())
                .ok_or(ApiError::NotReady),
        }
    }

    /// Whether `name` is the model that `/tokenizer.json` serves without a `model` query.
    fn is_default_tokenizer(&self, name: &str) -> bool {
        self.models
            .first()
            .is_some_and(|m| m.names.iter().any(|n| n == name))
    }

    /// The `/v1/models` entry of one of a model's names.
    pub fn describe(&self, served: &ServedModel, name: &str, host: &str) -> ModelDescription {
        let tokenizer_url = if self.is_default_tokenizer(name) {
            format!("http://{host}/tokenizer.json")
        } else {
            format!("http://{host}/tokenizer.json?model={}", query_escape(name))
        };
        let endpoints: Vec<String> = served
            .backend
            .endpoints()
            .iter()
            .map(|e| e.name().to_string())
            .collect();
        let (features, embedding_dimension) = match &served.backend {
            // Every chat model takes tools: templates that cannot render them get the generic
            // tool section.
            Backend::Chat(engine) => {
                let mut features = vec!["logprobs".to_string(), "tools".to_string()];
                if engine.info().thinking.is_some() {
                    features.push("thinking".to_string());
                }
                (features, None)
            }
            Backend::Encoder(e) => match e.spec().kind {
                EncoderKind::Embed => (
                    vec![RERANK_BY_COSINE.to_string()],
                    Some(e.spec().dimension()),
                ),
                EncoderKind::Rerank => (Vec::new(), None),
            },
        };
        let defaults = sampler::SamplingParams::default();
        ModelDescription {
            name: name.to_string(),
            is_deprecated: false,
            default_endpoints: endpoints[..1].to_vec(),
            endpoints,
            finetuned: false,
            context_length: served.backend.context_length(),
            tokenizer_url,
            features,
            sampling_defaults: SamplingDefaults {
                temperature: defaults.temperature,
                k: defaults.k,
                p: defaults.p,
                frequency_penalty: defaults.frequency_penalty,
                presence_penalty: defaults.presence_penalty,
            },
            embedding_dimension,
        }
    }
}

/// Percent-encodes a model name for a query string (Hugging Face ids hold `/`).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Whether `--model` names an encoder directory (rather than something for the runner).
pub fn is_encoder(model: &str) -> bool {
    let path = Path::new(model);
    path.is_dir() && encoder::config::detect(path).is_some()
}

/// Loads one `--model` (blocking): an encoder directory into its engine, anything else through
/// the runner.
pub fn load_backend(config: &Config, model: &str) -> anyhow::Result<Backend> {
    if is_encoder(model) {
        let engine = encoder::EngineConfig {
            threads: config
                .threads
                .unwrap_or_else(|| encoder::EngineConfig::default().threads),
            max_queue: config.max_queue,
            nice: config.encoder_nice,
            precision: config.embed_precision,
            ..encoder::EngineConfig::default()
        };
        let handle = encoder::start(Path::new(model), engine)?;
        let spec = handle.spec();
        tracing::info!(model = %spec.name, kind = ?spec.kind, dimension = spec.dimension(),
            max_tokens = spec.max_tokens, precision = handle.config().precision.name(),
            "encoder loaded");
        return Ok(Backend::Encoder(handle));
    }
    let engine = crate::cli::load_chat(config, model)?;
    tracing::info!(model = %engine.info().name, context = engine.info().context_length,
        template = %engine.info().template_origin, "model loaded");
    Ok(Backend::Chat(engine))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn tiny(name: &str) -> Backend {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../encoder/tests/fixtures")
            .join(name);
        let config = encoder::EngineConfig {
            threads: 1,
            ..encoder::EngineConfig::default()
        };
        Backend::Encoder(encoder::start(&dir, config).unwrap())
    }

    fn names(r: &Registry) -> Vec<Vec<String>> {
        r.models().iter().map(|m| m.names.clone()).collect()
    }

    #[test]
    fn names_pair_with_models_in_order_and_one_model_takes_them_all() {
        let one = Registry::new(vec![tiny("tiny-st-embedder")], &["a".into(), "b".into()]);
        assert_eq!(names(&one), [vec!["a", "b"]]);
        let two = Registry::new(
            vec![tiny("tiny-st-embedder"), tiny("tiny-bert-reranker")],
            &["embedder".into()],
        );
        assert_eq!(names(&two), [vec!["embedder"], vec!["tiny-bert-reranker"]]);
        let own = Registry::new(vec![tiny("tiny-bert-reranker")], &[]);
        assert_eq!(names(&own), [vec!["tiny-bert-reranker"]]);
    }

    #[test]
    fn find_checks_the_endpoint_and_says_what_the_model_serves() {
        let r = Registry::new(
            vec![tiny("tiny-st-embedder"), tiny("tiny-bert-reranker")],
            &[],
        );
        assert!(r.encoder(Some("tiny-st-embedder"), Endpoint::Embed).is_ok());
        assert!(r
            .encoder(Some("tiny-st-embedder"), Endpoint::Rerank)
            .is_ok());
        assert!(r
            .encoder(Some("tiny-bert-reranker"), Endpoint::Rerank)
            .is_ok());
        let err = r
            .encoder(Some("tiny-bert-reranker"), Endpoint::Embed)
            .err()
            .unwrap();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            err.to_string(),
            "invalid request: model 'tiny-bert-reranker' does not support the embed endpoint; it serves: rerank."
        );
        let err = r.chat(Some("tiny-st-embedder")).err().unwrap();
        assert!(
            err.to_string().ends_with("it serves: embed, rerank."),
            "{err}"
        );
        assert_eq!(
            r.chat(Some("nope")).err().unwrap().status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            r.chat(None).err().unwrap().to_string(),
            "invalid request: model must be specified."
        );
        assert!(r.first_chat().is_none());
    }

    #[test]
    fn descriptions_are_honest_about_each_kind() {
        let r = Registry::new(
            vec![tiny("tiny-st-embedder"), tiny("tiny-bert-reranker")],
            &[],
        );
        let [embedder, reranker] = r.models() else {
            panic!("two models")
        };
        let d = r.describe(embedder, "tiny-st-embedder", "h:1");
        assert_eq!(d.endpoints, ["embed", "rerank"]);
        assert_eq!(d.default_endpoints, ["embed"]);
        assert_eq!(d.embedding_dimension, Some(16));
        assert_eq!(d.context_length, 24);
        assert_eq!(d.features, [RERANK_BY_COSINE]);
        assert_eq!(d.tokenizer_url, "http://h:1/tokenizer.json");
        let d = r.describe(reranker, "tiny-bert-reranker", "h:1");
        assert_eq!(d.endpoints, ["rerank"]);
        assert_eq!(d.embedding_dimension, None);
        assert_eq!(
            d.tokenizer_url,
            "http://h:1/tokenizer.json?model=tiny-bert-reranker"
        );
        assert_eq!(query_escape("org/name x"), "org%2Fname%20x");
    }
}
