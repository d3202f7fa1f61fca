//! `POST /v1/embed` and `POST /v2/embed`: validation in Cohere's wording, tokenization with the
//! model's prompts, the encoder engine, and the embedding types.
//!
//! Embedding types (each computed from the model's float vector `v` of dimension `d`):
//! - `float`: `v` as the model gives it (normalized when the model has a Normalize module).
//! - `int8`: `round(v_i * 127 / max_j |v_j|)`, in [-127, 127]: one scale per vector, so the
//!   direction is kept (cosine to `v` above 0.99 for all-MiniLM-L6-v2) but magnitudes are not.
//! - `uint8`: the `int8` values plus 128, in [1, 255]; subtract 128 to compare.
//! - `ubinary`: one sign bit per dimension (1 for `v_i > 0`), packed 8 per byte, most
//!   significant bit first; `ceil(d / 8)` bytes, the last padded with zero bits.
//! - `binary`: the same bytes read as signed int8 (each `ubinary` byte minus 128).
//! - `base64`: the f32 vector as little-endian bytes, base64-encoded (standard alphabet, padded).

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use base64::Engine as _;
use encoder::{Encoded, EncoderHandle, Output, Truncate};

use crate::error::ApiError;
use crate::registry::Endpoint;
use crate::routes::{read_json, AppState};
use crate::wire_retrieval::{
    ApiMeta, BilledUnits, EmbedRequest, EmbedResponse, Embeddings, EmbeddingsByType,
};

/// Cohere's limit on texts (or inputs) per call.
pub const MAX_TEXTS: usize = 96;

const INPUT_TYPES: [&str; 5] = [
    "search_document",
    "search_query",
    "classification",
    "clustering",
    "image",
];

/// Which embedding types a request asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Types {
    pub float: bool,
    pub int8: bool,
    pub uint8: bool,
    pub binary: bool,
    pub ubinary: bool,
    pub base64: bool,
}

/// A checked embed request: the texts with the prompt they get, and how to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEmbed {
    pub texts: Vec<String>,
    pub prompt: String,
    pub truncate: Truncate,
    pub max_tokens: Option<usize>,
    /// `None`: v1's plain float response.
    pub types: Option<Types>,
}

/// The prompt a model declares for a Cohere `input_type`: the prompt named like the input type,
/// else its common short name (`query`; `document` or `passage`), else the model's default
/// prompt, else none.
pub fn prompt_for(handle: &EncoderHandle, input_type: Option<&str>) -> String {
    let encoder::config::Head::Embedding(head) = &handle.spec().head else {
        return String::new();
    };
    let candidates: &[&str] = match input_type {
        Some("search_query") => &["search_query", "query"],
        Some("search_document") => &["search_document", "document", "passage"],
        Some("classification") => &["classification"],
        Some("clustering") => &["clustering"],
        _ => &[],
    };
    candidates
        .iter()
        .find_map(|c| head.prompts.get(*c))
        .or_else(|| {
            head.default_prompt
                .as_ref()
                .and_then(|d| head.prompts.get(d))
        })
        .cloned()
        .unwrap_or_default()
}

/// Checks an embed request against the API's rules (`version` 1 or 2) and the model.
pub fn validate(
    req: EmbedRequest,
    version: u8,
    handle: &EncoderHandle,
) -> Result<ValidEmbed, ApiError> {
    if req.images.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err(ApiError::invalid(format!(
            "model '{}' embeds text only: images are not supported.",
            handle.spec().name
        )));
    }
    let texts = match (req.texts, req.inputs) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "only one of texts, images or inputs may be given.",
            ))
        }
        (Some(t), None) => t,
        (None, Some(inputs)) => inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| input_text(i, input))
            .collect::<Result<Vec<_>, _>>()?,
        (None, None) => {
            return Err(ApiError::invalid(
                "one of texts, images or inputs must be provided.",
            ))
        }
    };
    if texts.is_empty() || texts.len() > MAX_TEXTS {
        return Err(ApiError::invalid(format!(
            "texts must contain between 1 and {MAX_TEXTS} items (received {}).",
            texts.len()
        )));
    }
    let input_type = req.input_type.as_deref();
    match input_type {
        None if version >= 2 => {
            return Err(ApiError::invalid(format!(
                "input_type is required: one of {}.",
                INPUT_TYPES[..4].join(", ")
            )))
        }
        Some("image") => {
            return Err(ApiError::invalid(format!(
                "input_type 'image' is not supported: model '{}' embeds text only.",
                handle.spec().name
            )))
        }
        Some(t) if !INPUT_TYPES.contains(&t) => {
            return Err(ApiError::invalid(format!(
                "input_type must be one of {} (received '{t}').",
                INPUT_TYPES.join(", ")
            )))
        }
        _ => {}
    }
    let truncate = match req
        .truncate
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("END") => Truncate::End,
        Some("START") => Truncate::Start,
        Some("NONE") => Truncate::None,
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "truncate must be one of NONE, START, END (received '{}').",
                req.truncate.unwrap_or_default()
            )))
        }
    };
    let max_tokens = match req.max_tokens {
        None => None,
        Some(n) if n >= 1 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        Some(n) => {
            return Err(ApiError::invalid(format!(
                "max_tokens must be a positive integer (received {n})."
            )))
        }
    };
    if let Some(d) = req.output_dimension {
        let native = handle.spec().dimension();
        if usize::try_from(d) != Ok(native) {
            return Err(ApiError::invalid(format!(
                "output_dimension {d} is not supported by model '{}': its embeddings have {native} dimensions.",
                handle.spec().name
            )));
        }
    }
    let types = match req.embedding_types {
        None if version == 1 => None,
        None => Some(Types {
            float: true,
            ..Types::default()
        }),
        Some(list) if list.is_empty() && version == 1 => None,
        Some(list) if list.is_empty() => Some(Types {
            float: true,
            ..Types::default()
        }),
        Some(list) => {
            let mut t = Types::default();
            for name in &list {
                match name.as_str() {
                    "float" => t.float = true,
                    "int8" => t.int8 = true,
                    "uint8" => t.uint8 = true,
                    "binary" => t.binary = true,
                    "ubinary" => t.ubinary = true,
                    "base64" => t.base64 = true,
                    other => {
                        return Err(ApiError::invalid(format!(
                            "embedding_types must be among float, int8, uint8, binary, ubinary, base64 (received '{other}')."
                        )))
                    }
                }
            }
            Some(t)
        }
    };
    Ok(ValidEmbed {
        prompt: prompt_for(handle, input_type),
        texts,
        truncate,
        max_tokens,
        types,
    })
}

/// The text of one `inputs` entry: its text parts joined by newlines; an image part is a 400.
fn input_text(i: usize, input: crate::wire_retrieval::EmbedInput) -> Result<String, ApiError> {
    let content = input.content.unwrap_or_default();
    if content.is_empty() {
        return Err(ApiError::invalid(format!(
            "inputs[{i}].content must hold at least one text."
        )));
    }
    let mut parts = Vec::with_capacity(content.len());
    for (j, c) in content.into_iter().enumerate() {
        match c.kind.as_deref() {
            Some("text") => parts.push(c.text.unwrap_or_default()),
            Some("image_url") => {
                return Err(ApiError::invalid(format!(
                    "inputs[{i}].content[{j}] is an image: the model embeds text only."
                )))
            }
            other => {
                return Err(ApiError::invalid(format!(
                "inputs[{i}].content[{j}].type must be 'text' or 'image_url' (received {other:?})."
            )))
            }
        }
    }
    Ok(parts.join("\n"))
}

/// Tokenizes every text (blocking: run it off the async workers).
pub fn tokenize(handle: &EncoderHandle, valid: &ValidEmbed) -> Result<Vec<Encoded>, ApiError> {
    valid
        .texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            handle
                .text()
                .encode_limited(&valid.prompt, t, valid.truncate, valid.max_tokens)
                .map_err(|e| match e {
                    encoder::TextError::TooLong { tokens, max } => ApiError::invalid(format!(
                        "texts[{i}] has {tokens} tokens, more than the {max} allowed; set truncate to START or END to cut it."
                    )),
                    other => ApiError::from(other),
                })
        })
        .collect()
}

/// Embeds checked texts: tokenized on the bounded text-work pool (as chat prompts are), run on
/// the model's engine.
pub async fn embed_texts(
    state: &AppState,
    handle: &EncoderHandle,
    valid: &ValidEmbed,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let inputs = {
        let (handle, valid) = (handle.clone(), valid.clone());
        state.text_work(move || tokenize(&handle, &valid)).await??
    };
    let tokens = inputs.iter().map(Encoded::len).sum();
    match handle.run(inputs).await? {
        Output::Embeddings(v) => Ok((v, tokens)),
        Output::Logits(_) => Err(ApiError::Internal("an embedder returned logits".into())),
    }
}

/// The requested types of a batch of float vectors.
pub fn convert(vectors: Vec<Vec<f32>>, types: Types) -> EmbeddingsByType {
    let map = |f: fn(&[f32]) -> Vec<u8>| vectors.iter().map(|v| f(v)).collect::<Vec<_>>();
    EmbeddingsByType {
        int8: types
            .int8
            .then(|| vectors.iter().map(|v| to_int8(v)).collect()),
        uint8: types.uint8.then(|| {
            vectors
                .iter()
                .map(|v| {
                    to_int8(v)
                        .into_iter()
                        .map(|q| (q as i16 + 128) as u8)
                        .collect()
                })
                .collect()
        }),
        binary: types.binary.then(|| {
            map(to_ubinary)
                .into_iter()
                .map(|b| b.into_iter().map(|x| (x as i16 - 128) as i8).collect())
                .collect()
        }),
        ubinary: types.ubinary.then(|| map(to_ubinary)),
        base64: types
            .base64
            .then(|| vectors.iter().map(|v| to_base64(v)).collect()),
        float: types.float.then_some(vectors),
    }
}

/// `round(v * 127 / max|v|)`; the zero vector stays zero.
pub fn to_int8(v: &[f32]) -> Vec<i8> {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return vec![0; v.len()];
    }
    v.iter()
        .map(|x| (x * 127.0 / max).round().clamp(-127.0, 127.0) as i8)
        .collect()
}

/// Sign bits, 1 for `> 0`, 8 per byte, most significant bit first.
pub fn to_ubinary(v: &[f32]) -> Vec<u8> {
    v.chunks(8)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |b, (i, &x)| if x > 0.0 { b | (0x80 >> i) } else { b })
        })
        .collect()
}

/// The f32 values, little-endian, base64-encoded.
pub fn to_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn embed(
    state: AppState,
    headers: HeaderMap,
    body: Body,
    version: u8,
) -> Result<Json<EmbedResponse>, ApiError> {
    state.check_serving()?;
    let request: EmbedRequest = read_json(&state, &headers, body).await?;
    let registry = state.registry()?;
    let handle = registry.encoder(request.model.as_deref(), Endpoint::Embed)?;
    let valid = validate(request, version, handle)?;
    let (vectors, tokens) = embed_texts(&state, handle, &valid).await?;
    let (response_type, embeddings) = match valid.types {
        None => ("embeddings_floats", Embeddings::Floats(vectors)),
        Some(types) => (
            "embeddings_by_type",
            Embeddings::ByType(convert(vectors, types)),
        ),
    };
    Ok(Json(EmbedResponse {
        response_type: response_type.to_string(),
        id: uuid::Uuid::new_v4().to_string(),
        embeddings,
        texts: valid.texts,
        meta: ApiMeta::new(
            &version.to_string(),
            BilledUnits {
                input_tokens: Some(tokens),
                ..BilledUnits::default()
            },
        ),
    }))
}

pub async fn embed_v1(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<EmbedResponse>, ApiError> {
    embed(state, headers, body, 1).await
}

pub async fn embed_v2(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<EmbedResponse>, ApiError> {
    embed(state, headers, body, 2).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (n(a) * n(b))
    }

    #[test]
    fn int8_and_uint8_keep_the_direction() {
        // A unit vector shaped like a sentence embedding: many small values, a few large.
        let v: Vec<f32> = (0..384)
            .map(|i| {
                ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * if i % 37 == 0 { 4.0 } else { 1.0 }
            })
            .collect();
        let q = to_int8(&v);
        let qf: Vec<f32> = q.iter().map(|&x| x as f32).collect();
        assert!(cosine(&qf, &v) > 0.99, "{}", cosine(&qf, &v));
        assert_eq!(q.iter().map(|x| x.unsigned_abs()).max(), Some(127));
        let types = Types {
            uint8: true,
            ..Types::default()
        };
        let u = convert(vec![v.clone()], types).uint8.unwrap().remove(0);
        let uf: Vec<f32> = u.iter().map(|&x| x as f32 - 128.0).collect();
        assert_eq!(uf, qf);
        assert_eq!(to_int8(&[0.0, 0.0]), [0, 0]);
    }

    #[test]
    fn binary_types_pack_sign_bits_most_significant_first() {
        let v = [1.0, -1.0, 0.0, 2.0, -0.5, 0.1, 0.1, -3.0, 5.0];
        assert_eq!(to_ubinary(&v), [0b1001_0110, 0b1000_0000]);
        let types = Types {
            binary: true,
            ubinary: true,
            ..Types::default()
        };
        let out = convert(vec![v.to_vec()], types);
        assert_eq!(out.ubinary.unwrap()[0], [150, 128]);
        assert_eq!(out.binary.unwrap()[0], [22, 0]);
        assert!(out.float.is_none() && out.int8.is_none());
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let s = to_base64(&[1.0, -2.5]);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&s)
            .unwrap();
        assert_eq!(bytes, [0, 0, 128, 63, 0, 0, 32, 192]);
    }
}
