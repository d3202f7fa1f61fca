//! Wire types of the retrieval endpoints, `POST /v1|v2/embed` and `POST /v1|v2/rerank`, in the
//! shapes of Cohere's OpenAPI file (`EmbedRequest`, `V2EmbedRequest`, `EmbedFloatsResponse`,
//! `EmbedByTypeResponse`, `RerankRequest`, `V2RerankRequest` and their responses).
//!
//! Requests are read leniently, as the chat request is: unknown keys and `null` are ignored and
//! every field is optional here, so that validation (`embed.rs`, `rerank.rs`) answers a missing
//! or malformed field with a 400 in Cohere's wording instead of a serde message.

use serde::{Deserialize, Serialize};

/// `EmbedRequest` (v1) and `V2EmbedRequest` (v2) together.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EmbedRequest {
    pub model: Option<String>,
    pub texts: Option<Vec<String>>,
    /// Any image makes the request a 400: the served encoders embed text only.
    pub images: Option<Vec<serde_json::Value>>,
    /// v2: inputs whose `content` holds text (and, for image models, images).
    pub inputs: Option<Vec<EmbedInput>>,
    pub input_type: Option<String>,
    pub embedding_types: Option<Vec<String>>,
    pub truncate: Option<String>,
    /// v2: most tokens embedded per input (then `truncate` applies).
    pub max_tokens: Option<i64>,
    /// v2: only models with several output sizes take it.
    pub output_dimension: Option<i64>,
    /// v2: accepted; requests are served in arrival order.
    pub priority: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct EmbedInput {
    pub content: Option<Vec<EmbedContent>>,
}

/// `EmbedContent`: `{"type": "text", "text": ...}` or `{"type": "image_url", "image_url": ...}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EmbedContent {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub text: Option<String>,
    pub image_url: Option<serde_json::Value>,
}

/// `EmbedByTypeResponseEmbeddings`: one list per requested type, each with one entry per input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsByType {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub float: Option<Vec<Vec<f32>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub int8: Option<Vec<Vec<i8>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uint8: Option<Vec<Vec<u8>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<Vec<Vec<i8>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ubinary: Option<Vec<Vec<u8>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base64: Option<Vec<String>>,
}

/// The `embeddings` of a response: v1 without `embedding_types` answers the floats alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Embeddings {
    Floats(Vec<Vec<f32>>),
    ByType(EmbeddingsByType),
}

/// `EmbedFloatsResponse` / `EmbedByTypeResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedResponse {
    /// `embeddings_floats` or `embeddings_by_type`.
    pub response_type: String,
    pub id: String,
    pub embeddings: Embeddings,
    pub texts: Vec<String>,
    pub meta: ApiMeta,
}

/// `ApiMeta`: the API version and what the request cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiMeta {
    pub api_version: ApiVersion,
    pub billed_units: BilledUnits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiVersion {
    pub version: String,
}

/// `ApiMetaBilledUnits`: input tokens for embed, search units for rerank.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BilledUnits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_units: Option<usize>,
}

impl ApiMeta {
    pub fn new(version: &str, billed_units: BilledUnits) -> Self {
        Self {
            api_version: ApiVersion {
                version: version.to_string(),
            },
            billed_units,
        }
    }
}

/// `RerankRequest` (v1) and `V2RerankRequest` (v2) together. Documents stay JSON values so that
/// v1's objects and a wrong type in either version are validated with a precise message.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RerankRequest {
    pub model: Option<String>,
    pub query: Option<String>,
    pub documents: Option<Vec<serde_json::Value>>,
    pub top_n: Option<i64>,
    /// v2: tokens of each document that are read (default 4096, within the model's window).
    pub max_tokens_per_doc: Option<i64>,
    /// v1: which fields of object documents are ranked, in order (default `text`).
    pub rank_fields: Option<Vec<String>>,
    /// v1: echo each document in its result.
    pub return_documents: Option<bool>,
    /// v1: accepted; a document longer than the model's window is truncated, not chunked.
    pub max_chunks_per_doc: Option<i64>,
    pub priority: Option<i64>,
}

/// One ranked document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankResult {
    /// v1 with `return_documents`: the document as sent (a string becomes `{"text": ...}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<serde_json::Value>,
    pub index: usize,
    pub relevance_score: f32,
}

/// `RerankResponse` / `V2RerankResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankResponse {
    pub id: String,
    pub results: Vec<RerankResult>,
    pub meta: ApiMeta,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1_floats_and_by_type_serialize_in_the_spec_shapes() {
        let floats = EmbedResponse {
            response_type: "embeddings_floats".into(),
            id: "x".into(),
            embeddings: Embeddings::Floats(vec![vec![0.5, -1.0]]),
            texts: vec!["hi".into()],
            meta: ApiMeta::new(
                "1",
                BilledUnits {
                    input_tokens: Some(3),
                    ..BilledUnits::default()
                },
            ),
        };
        assert_eq!(
            serde_json::to_value(&floats).unwrap(),
            json!({"response_type": "embeddings_floats", "id": "x", "embeddings": [[0.5, -1.0]],
                   "texts": ["hi"], "meta": {"api_version": {"version": "1"},
                   "billed_units": {"input_tokens": 3}}})
        );
        let by_type = Embeddings::ByType(EmbeddingsByType {
            int8: Some(vec![vec![-128, 127]]),
            base64: Some(vec!["AAAA".into()]),
            ..EmbeddingsByType::default()
        });
        assert_eq!(
            serde_json::to_value(&by_type).unwrap(),
            json!({"int8": [[-128, 127]], "base64": ["AAAA"]})
        );
    }

    #[test]
    fn requests_ignore_unknown_keys_and_nulls() {
        let r: EmbedRequest = serde_json::from_value(json!({
            "model": "m", "texts": ["a"], "input_type": null, "extra": 1
        }))
        .unwrap();
        assert_eq!(r.texts.unwrap(), ["a"]);
        assert!(r.input_type.is_none());
        let r: RerankRequest = serde_json::from_value(json!({
            "query": "q", "documents": ["a", {"text": "b", "title": "t"}], "top_n": null
        }))
        .unwrap();
        assert_eq!(r.documents.unwrap().len(), 2);
    }
}
