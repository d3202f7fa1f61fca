//! `POST /v1/rerank` and `POST /v2/rerank`.
//!
//! A cross-encoder reads each (query, document) pair; its logit becomes the relevance score by
//! the logistic function, `1 / (1 + e^-logit)`. An embedding model answers too: the cosine
//! between the query's embedding (`search_query` prompt) and each document's (`search_document`)
//! mapped to [0, 1] as `(cos + 1) / 2`. Either way results are sorted by score, highest first
//! (ties by index), and cut to `top_n`.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use encoder::{Encoded, EncoderHandle, EncoderKind, Output, Truncate};
use serde_json::Value;

use crate::embed::{embed_texts, prompt_for, ValidEmbed};
use crate::error::ApiError;
use crate::registry::Endpoint;
use crate::routes::{read_json, AppState};
use crate::wire_retrieval::{ApiMeta, BilledUnits, RerankRequest, RerankResponse, RerankResult};

/// Most documents one request may rank (Cohere's limit).
pub const MAX_DOCUMENTS: usize = 10_000;
/// Tokens of a document read when the request does not say (Cohere's default).
pub const DEFAULT_MAX_TOKENS_PER_DOC: usize = 4096;
/// Documents per billed search unit.
const DOCS_PER_SEARCH_UNIT: usize = 100;

/// A checked rerank request.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRerank {
    pub query: String,
    /// The text ranked for each document.
    pub texts: Vec<String>,
    /// What `return_documents` echoes (v1).
    pub documents: Option<Vec<Value>>,
    pub top_n: usize,
    pub max_tokens_per_doc: usize,
}

pub fn validate(req: RerankRequest, version: u8) -> Result<ValidRerank, ApiError> {
    let query = match req.query {
        None => return Err(ApiError::invalid("query is required.")),
        Some(q) if q.trim().is_empty() => {
            return Err(ApiError::invalid("query must not be empty."))
        }
        Some(q) => q,
    };
    let documents = req.documents.unwrap_or_default();
    if documents.is_empty() {
        return Err(ApiError::invalid(
            "documents must contain at least one document.",
        ));
    }
    if documents.len() > MAX_DOCUMENTS {
        return Err(ApiError::invalid(format!(
            "documents must contain at most {MAX_DOCUMENTS} documents (received {}).",
            documents.len()
        )));
    }
    let top_n = match req.top_n {
        None => documents.len(),
        Some(n) if n >= 1 => usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(documents.len()),
        Some(n) => {
            return Err(ApiError::invalid(format!(
                "top_n must be at least 1 (received {n})."
            )))
        }
    };
    let max_tokens_per_doc = match req.max_tokens_per_doc {
        None => DEFAULT_MAX_TOKENS_PER_DOC,
        Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
        Some(n) => {
            return Err(ApiError::invalid(format!(
                "max_tokens_per_doc must be at least 1 (received {n})."
            )))
        }
    };
    let rank_fields = req.rank_fields.filter(|f| !f.is_empty());
    if version >= 2 && rank_fields.is_some() {
        return Err(ApiError::invalid(
            "rank_fields is not part of v2 rerank: send each document as one string.",
        ));
    }
    let texts = documents
        .iter()
        .enumerate()
        .map(|(i, d)| document_text(i, d, version, rank_fields.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let echo = (version == 1 && req.return_documents == Some(true)).then(|| {
        documents
            .into_iter()
            .map(|d| match d {
                Value::String(s) => serde_json::json!({ "text": s }),
                other => other,
            })
            .collect()
    });
    Ok(ValidRerank {
        query,
        texts,
        documents: echo,
        top_n,
        max_tokens_per_doc,
    })
}

/// The text ranked for one document: a string as it is (with or without `rank_fields`); a v1
/// object's `text`, or with `rank_fields` each named field as a `name: value` line, in the
/// order given.
fn document_text(
    i: usize,
    doc: &Value,
    version: u8,
    rank_fields: Option<&[String]>,
) -> Result<String, ApiError> {
    match doc {
        Value::String(s) => Ok(s.clone()),
        Value::Object(map) if version == 1 => {
            let field = |name: &str| -> Result<String, ApiError> {
                match map.get(name) {
                    Some(Value::String(s)) => Ok(s.clone()),
                    Some(Value::Null) | None => Err(ApiError::invalid(format!(
                        "documents[{i}] has no field '{name}'."
                    ))),
                    Some(other) => Ok(other.to_string()),
                }
            };
            match rank_fields {
                None => field("text"),
                Some(fields) => Ok(fields
                    .iter()
                    .map(|f| Ok(format!("{f}: {}", field(f)?)))
                    .collect::<Result<Vec<_>, ApiError>>()?
                    .join("\n")),
            }
        }
        _ if version == 1 => Err(ApiError::invalid(format!(
            "documents[{i}] must be a string or an object with a text field."
        ))),
        _ => Err(ApiError::invalid(format!(
            "documents[{i}] must be a string."
        ))),
    }
}

/// `1 / (1 + e^-x)`.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The cosine of two vectors mapped from [-1, 1] to [0, 1].
pub fn cosine_score(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let denom = n(a) * n(b);
    let cos = if denom > 0.0 { dot / denom } else { 0.0 };
    ((cos + 1.0) / 2.0).clamp(0.0, 1.0)
}

/// Scores every document, highest first (ties by index), cut to `top_n`; and the input tokens.
pub async fn rank(
    state: &AppState,
    handle: &EncoderHandle,
    valid: &ValidRerank,
) -> Result<(Vec<(usize, f32)>, usize), ApiError> {
    let (scores, tokens) = match handle.spec().kind {
        EncoderKind::Rerank => {
            let pairs = {
                let (h, v) = (handle.clone(), valid.clone());
                state
                    .text_work(move || -> Result<Vec<Encoded>, ApiError> {
                        v.texts
                            .iter()
                            .map(|d| {
                                h.text()
                                    .encode_pair(&v.query, d, Some(v.max_tokens_per_doc))
                                    .map_err(ApiError::from)
                            })
                            .collect()
                    })
                    .await??
            };
            let tokens = pairs.iter().map(Encoded::len).sum();
            match handle.run(pairs).await? {
                Output::Logits(l) => (l.into_iter().map(sigmoid).collect::<Vec<_>>(), tokens),
                Output::Embeddings(_) => {
                    return Err(ApiError::Internal(
                        "a cross-encoder returned vectors".into(),
                    ))
                }
            }
        }
        EncoderKind::Embed => {
            let query = ValidEmbed {
                texts: vec![valid.query.clone()],
                prompt: prompt_for(handle, Some("search_query")),
                truncate: Truncate::End,
                max_tokens: None,
                types: None,
            };
            let prompt = prompt_for(handle, Some("search_document"));
            // The document's own tokens, plus its prompt and the special tokens around them.
            let extra = handle.text().special_tokens(false) + handle.text().count(&prompt)?;
            let docs = ValidEmbed {
                texts: valid.texts.clone(),
                prompt,
                truncate: Truncate::End,
                max_tokens: Some(valid.max_tokens_per_doc.saturating_add(extra)),
                types: None,
            };
            let ((q, qt), (d, dt)) = tokio::try_join!(
                embed_texts(state, handle, &query),
                embed_texts(state, handle, &docs)
            )?;
            let scores = d.iter().map(|v| cosine_score(&q[0], v)).collect();
            (scores, qt + dt)
        }
    };
    let mut ranked: Vec<(usize, f32)> = scores.into_iter().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(valid.top_n);
    Ok((ranked, tokens))
}

async fn rerank(
    state: AppState,
    headers: HeaderMap,
    body: Body,
    version: u8,
) -> Result<Json<RerankResponse>, ApiError> {
    state.check_serving()?;
    let request: RerankRequest = read_json(&state, &headers, body).await?;
    let registry = state.registry()?;
    let handle = registry.encoder(request.model.as_deref(), Endpoint::Rerank)?;
    let valid = validate(request, version)?;
    let (ranked, tokens) = rank(&state, handle, &valid).await?;
    let results = ranked
        .into_iter()
        .map(|(index, relevance_score)| RerankResult {
            document: valid.documents.as_ref().map(|d| d[index].clone()),
            index,
            relevance_score,
        })
        .collect();
    Ok(Json(RerankResponse {
        id: uuid::Uuid::new_v4().to_string(),
        results,
        meta: ApiMeta::new(
            &version.to_string(),
            BilledUnits {
                search_units: Some(valid.texts.len().div_ceil(DOCS_PER_SEARCH_UNIT)),
                input_tokens: Some(tokens),
            },
        ),
    }))
}

pub async fn rerank_v1(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RerankResponse>, ApiError> {
    rerank(state, headers, body, 1).await
}

pub async fn rerank_v2(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RerankResponse>, ApiError> {
    rerank(state, headers, body, 2).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> RerankRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn bad_requests_are_400s_with_the_reason() {
        let cases = [
            (json!({"documents": ["a"]}), "query is required"),
            (
                json!({"query": " ", "documents": ["a"]}),
                "query must not be empty",
            ),
            (json!({"query": "q"}), "at least one document"),
            (
                json!({"query": "q", "documents": []}),
                "at least one document",
            ),
            (
                json!({"query": "q", "documents": ["a"], "top_n": 0}),
                "top_n must be at least 1",
            ),
            (
                json!({"query": "q", "documents": ["a"], "max_tokens_per_doc": 0}),
                "max_tokens_per_doc",
            ),
            (
                json!({"query": "q", "documents": [{"text": "a"}]}),
                "documents[0] must be a string",
            ),
            (
                json!({"query": "q", "documents": [3]}),
                "documents[0] must be a string",
            ),
        ];
        for (body, want) in cases {
            let err = validate(req(body.clone()), 2).unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
            assert!(err.to_string().contains(want), "{body}: {err}");
        }
        let many: Vec<Value> = (0..MAX_DOCUMENTS + 1).map(|_| json!("d")).collect();
        let err = validate(req(json!({"query": "q", "documents": many})), 2).unwrap_err();
        assert!(err.to_string().contains("at most 10000"), "{err}");
    }

    #[test]
    fn v1_objects_rank_their_fields_and_echo_as_sent() {
        // A string is ranked as it is, whatever rank_fields says; a missing field is a 400.
        let v = validate(
            req(
                json!({"query": "q", "documents": ["plain", {"text": "t", "title": "T"}],
                       "rank_fields": ["title", "text"]}),
            ),
            1,
        )
        .unwrap();
        assert_eq!(v.texts[0], "plain");
        let err = validate(
            req(json!({"query": "q", "documents": [{"text": "t"}], "rank_fields": ["title"]})),
            1,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("documents[0] has no field 'title'"),
            "{err}"
        );
        let v = validate(
            req(json!({"query": "q", "documents": [{"text": "t", "title": "T"}, {"title": "U", "text": "u"}],
                       "rank_fields": ["title", "text"], "return_documents": true, "top_n": 9})),
            1,
        )
        .unwrap();
        assert_eq!(v.texts, ["title: T\ntext: t", "title: U\ntext: u"]);
        assert_eq!(v.top_n, 2, "capped to the number of documents");
        assert_eq!(v.documents.unwrap()[1], json!({"title": "U", "text": "u"}));
        let v = validate(
            req(json!({"query": "q", "documents": ["a", {"text": "b"}]})),
            1,
        )
        .unwrap();
        assert_eq!(v.texts, ["a", "b"]);
        assert!(v.documents.is_none());
    }

    #[test]
    fn scores_map_into_the_unit_interval() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(40.0) <= 1.0 && sigmoid(-40.0) >= 0.0);
        assert_eq!(cosine_score(&[1.0, 0.0], &[1.0, 0.0]), 1.0);
        assert_eq!(cosine_score(&[1.0, 0.0], &[-1.0, 0.0]), 0.0);
        assert_eq!(cosine_score(&[1.0, 0.0], &[0.0, 1.0]), 0.5);
        assert_eq!(cosine_score(&[0.0, 0.0], &[0.0, 1.0]), 0.5);
    }
}
