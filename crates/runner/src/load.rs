//! `load`: from a model reference to everything the engine needs.

use std::path::Path;

use crate::engine::ModelInfo;
use crate::loader::{self, LoadError, ModelFiles, ResolveOptions};
use crate::model::{self, BatchModel};
use crate::template::{ChatTemplate, TemplateOrigin};
use crate::tokenizer::{self, TokenizerBundle};

/// A model ready to serve: weights, tokenizer and chat template.
pub struct LoadedModel {
    pub info: ModelInfo,
    pub model: Box<dyn BatchModel>,
    pub tokenizer: TokenizerBundle,
    pub template: ChatTemplate,
    /// Every token that ends generation (the tokenizer's end-of-turn tokens plus
    /// `generation_config.json`'s `eos_token_id` list).
    pub end_token_ids: Vec<u32>,
}

/// Anything that can go wrong between a `--model` reference and a loaded model.
#[derive(Debug, thiserror::Error)]
pub enum LoadModelError {
    #[error(transparent)]
    Resolve(#[from] LoadError),
    #[error(transparent)]
    Model(#[from] model::ModelError),
    #[error("{0}")]
    Text(#[from] crate::text_error::TextError),
}

/// Resolves `reference` (a `.gguf` file, a Hugging Face directory or id) and loads it.
pub fn load(reference: &str, opts: &ResolveOptions) -> Result<LoadedModel, LoadModelError> {
    load_with(reference, opts, &model::LoadOptions::default())
}

/// [`load`] with options for running the model (thread count).
pub fn load_with(
    reference: &str,
    opts: &ResolveOptions,
    run: &model::LoadOptions,
) -> Result<LoadedModel, LoadModelError> {
    let resolved = loader::resolve(reference, opts)?;
    match &resolved.files {
        ModelFiles::Gguf { path } => load_gguf(path, resolved.name, run),
        ModelFiles::HfDir { dir } => load_hf_dir(dir, resolved.name, run),
    }
}

fn load_gguf(
    path: &Path,
    name: String,
    run: &model::LoadOptions,
) -> Result<LoadedModel, LoadModelError> {
    let (model, content) = model::load_gguf_model(path, run)?;
    let model: Box<dyn BatchModel> = Box::new(model);
    let tokenizer = tokenizer::tokenizer_from_gguf(&content)?;
    let architecture = match content.metadata.get("general.architecture") {
        Some(value) => value.to_string().cloned().unwrap_or_default(),
        None => String::new(),
    };
    let template = chat_template(&tokenizer, &architecture, TemplateOrigin::Gguf)?;
    let end_token_ids = tokenizer.end_of_turn.clone();
    Ok(assemble(
        name,
        architecture,
        model,
        tokenizer,
        template,
        end_token_ids,
    ))
}

fn load_hf_dir(
    dir: &Path,
    name: String,
    run: &model::LoadOptions,
) -> Result<LoadedModel, LoadModelError> {
    let model: Box<dyn BatchModel> = Box::new(model::load_safetensors_model(dir, run)?);
    let tokenizer = tokenizer::tokenizer_from_hf_dir(dir)?;
    let architecture = model_type(dir);
    let template = chat_template(&tokenizer, &architecture, TemplateOrigin::TokenizerConfig)?;
    let mut end_token_ids = tokenizer.end_of_turn.clone();
    if let Some(generation) = loader::read_generation_config(dir)? {
        for id in generation.eos_token_ids {
            if !end_token_ids.contains(&id) {
                end_token_ids.push(id);
            }
        }
    }
    Ok(assemble(
        name,
        architecture,
        model,
        tokenizer,
        template,
        end_token_ids,
    ))
}

/// The model's own chat template, or the architecture's built-in format when it has none.
fn chat_template(
    tokenizer: &TokenizerBundle,
    architecture: &str,
    origin: TemplateOrigin,
) -> Result<ChatTemplate, crate::text_error::TextError> {
    let bos = tokenizer.bos.as_ref().map(|t| t.text.clone());
    let eos = tokenizer.eos.as_ref().map(|t| t.text.clone());
    match &tokenizer.chat_template {
        Some(source) => ChatTemplate::new(source.clone(), bos, eos, origin),
        None => ChatTemplate::fallback_for(architecture, bos, eos),
    }
}

fn assemble(
    name: String,
    architecture: String,
    model: Box<dyn BatchModel>,
    tokenizer: TokenizerBundle,
    template: ChatTemplate,
    end_token_ids: Vec<u32>,
) -> LoadedModel {
    let info = ModelInfo {
        name,
        architecture,
        context_length: model.max_context(),
        vocab_size: model.vocab_size(),
        template_origin: template.origin().to_string(),
        tool_format: template.tool_format(),
        thinking: crate::thinking::markers_of(template.source()),
    };
    tracing::info!(
        model = %info.name,
        architecture = %info.architecture,
        context = info.context_length,
        vocab = info.vocab_size,
        template = %info.template_origin,
        "model loaded"
    );
    LoadedModel {
        info,
        model,
        tokenizer,
        template,
        end_token_ids,
    }
}

/// `model_type` from `config.json` (already validated to exist by the resolver).
fn model_type(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|config| config.get("model_type")?.as_str().map(str::to_string))
        .unwrap_or_default()
}
