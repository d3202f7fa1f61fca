//! A tiny random llama written by the test as config.json + model.safetensors, loaded through
//! `load_safetensors_dir` and compared with candle-transformers' llama on the same weights.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama as reference;
use runner::model::{load_safetensors_dir, BatchItem, ModelError};

const HIDDEN: usize = 64;
const FFN: usize = 96;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const VOCAB: usize = 97;
const MAX_POS: usize = 48;

/// Deterministic pseudo-random weights (an LCG), so a failure reproduces.
fn weights(seed: u64, shape: &[usize], scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn tiny_llama(tied: bool) -> HashMap<String, Tensor> {
    let head_dim = HIDDEN / HEADS;
    let mut t = HashMap::new();
    let mut seed = 1;
    let mut add = |name: String, shape: &[usize], scale: f32| {
        seed += 1;
        t.insert(name, weights(seed, shape, scale));
    };
    add("model.embed_tokens.weight".into(), &[VOCAB, HIDDEN], 1.0);
    for i in 0..LAYERS {
        let p = format!("model.layers.{i}");
        add(
            format!("{p}.self_attn.q_proj.weight"),
            &[HEADS * head_dim, HIDDEN],
            0.3,
        );
        add(
            format!("{p}.self_attn.k_proj.weight"),
            &[KV_HEADS * head_dim, HIDDEN],
            0.3,
        );
        add(
            format!("{p}.self_attn.v_proj.weight"),
            &[KV_HEADS * head_dim, HIDDEN],
            0.3,
        );
        add(
            format!("{p}.self_attn.o_proj.weight"),
            &[HIDDEN, HEADS * head_dim],
            0.2,
        );
        add(format!("{p}.mlp.gate_proj.weight"), &[FFN, HIDDEN], 0.2);
        add(format!("{p}.mlp.up_proj.weight"), &[FFN, HIDDEN], 0.2);
        add(format!("{p}.mlp.down_proj.weight"), &[HIDDEN, FFN], 0.2);
        // Norm weights around 1, not exactly 1, so a missing norm would show.
        add(format!("{p}.input_layernorm.weight"), &[HIDDEN], 0.2);
        add(
            format!("{p}.post_attention_layernorm.weight"),
            &[HIDDEN],
            0.2,
        );
    }
    add("model.norm.weight".into(), &[HIDDEN], 0.2);
    if !tied {
        add("lm_head.weight".into(), &[VOCAB, HIDDEN], 0.5);
    }
    for (name, w) in t.iter_mut() {
        if name.ends_with("norm.weight") {
            *w = (&*w + 1.0).unwrap();
        }
    }
    t
}

fn config_json(tied: bool) -> serde_json::Value {
    serde_json::json!({
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "vocab_size": VOCAB,
        "max_position_embeddings": MAX_POS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tied,
    })
}

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cohost-model-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_model(dir: &Path, tied: bool) -> HashMap<String, Tensor> {
    let tensors = tiny_llama(tied);
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), config_json(tied).to_string()).unwrap();
    tensors
}

fn reference_model(
    tensors: &HashMap<String, Tensor>,
    tied: bool,
) -> (reference::Llama, reference::Config) {
    let cfg: reference::LlamaConfig = serde_json::from_value(config_json(tied)).unwrap();
    let cfg = cfg.into_config(false);
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    (reference::Llama::load(vb, &cfg).unwrap(), cfg)
}

fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn argmax(row: &[f32]) -> u32 {
    (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b }) as u32
}

fn compare_with_candle(tied: bool) {
    let dir = TempDir::new(if tied { "tied" } else { "untied" });
    let tensors = write_model(&dir.0, tied);
    let mut ours = load_safetensors_dir(&dir.0).unwrap();
    assert_eq!(ours.vocab_size(), VOCAB);
    assert_eq!(ours.max_context(), MAX_POS);
    let (theirs, cfg) = reference_model(&tensors, tied);

    let prompts: [&[u32]; 2] = [&[3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46], &[2, 71, 82]];
    let mut caches: Vec<reference::Cache> = prompts
        .iter()
        .map(|_| reference::Cache::new(true, DType::F32, &cfg, &Device::Cpu).unwrap())
        .collect();
    let mut inputs: Vec<Vec<u32>> = prompts.iter().map(|p| p.to_vec()).collect();
    let mut pos = [0usize; 2];
    let mut logits = Vec::new();
    let mut worst = 0f32;
    for step in 0..6 {
        let batch: Vec<BatchItem> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| BatchItem::new(i as u64, t))
            .collect();
        ours.forward(&batch, &mut logits).unwrap();
        for i in 0..2 {
            let x = Tensor::new(inputs[i].as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let want = theirs.forward(&x, pos[i], &mut caches[i]).unwrap();
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let got = &logits[i * VOCAB..(i + 1) * VOCAB];
            let d = rel_diff(got, &want);
            worst = worst.max(d);
            // Keys and values are cached in f16 (as llama.cpp does), candle's in f32: rounding
            // each to 11 bits moves these logits by a few 1e-4 (3.6e-4 at worst here); a wrong
            // norm, RoPE or mask moves them by far more.
            assert!(
                d < 1e-3,
                "tied={tied} step {step} seq {i}: relative diff {d}"
            );
            pos[i] += inputs[i].len();
            inputs[i] = vec![argmax(&want)];
        }
    }
    eprintln!("tied={tied}: worst relative diff vs candle llama {worst:e}");
}

#[test]
fn tiny_llama_matches_candle_llama() {
    compare_with_candle(false);
}

#[test]
fn tiny_llama_with_tied_embeddings_matches_candle_llama() {
    compare_with_candle(true);
}

#[test]
fn a_sequence_past_max_context_is_an_error_and_keeps_its_cache() {
    let dir = TempDir::new("overflow");
    write_model(&dir.0, false);
    let mut model = load_safetensors_dir(&dir.0).unwrap();
    let mut logits = Vec::new();
    let prompt: Vec<u32> = (0..MAX_POS as u32 - 2).map(|t| t % VOCAB as u32).collect();
    model
        .forward(&[BatchItem::new(9, &prompt)], &mut logits)
        .unwrap();
    model
        .forward(&[BatchItem::new(9, &[1])], &mut logits)
        .unwrap();
    model
        .forward(&[BatchItem::new(9, &[2])], &mut logits)
        .unwrap();
    let before = logits.clone();
    let err = model
        .forward(&[BatchItem::new(9, &[3])], &mut logits)
        .unwrap_err();
    assert!(
        matches!(err, ModelError::ContextOverflow { seq: 9, needed, max } if needed == MAX_POS + 1 && max == MAX_POS),
        "{err}"
    );
    // The failed step changed nothing: the same sequence, released and replayed, still fits.
    model.release(9);
    let mut full = prompt.clone();
    full.extend([1, 2]);
    model
        .forward(&[BatchItem::new(9, &full)], &mut logits)
        .unwrap();
    assert!(rel_diff(&logits, &before) < 1e-4);
}

#[test]
fn unsupported_model_type_names_what_was_found() {
    let dir = TempDir::new("unsupported");
    write_model(&dir.0, false);
    let mut cfg = config_json(false);
    cfg["model_type"] = "mamba".into();
    std::fs::write(dir.0.join("config.json"), cfg.to_string()).unwrap();
    let err = load_safetensors_dir(&dir.0)
        .err()
        .expect("mamba must be refused");
    match err {
        ModelError::UnsupportedArchitecture { found, supported } => {
            assert_eq!(found, "mamba");
            assert!(supported.contains(&"llama"));
        }
        other => panic!("unexpected error: {other}"),
    }
}

#[test]
fn a_missing_weight_is_named() {
    let dir = TempDir::new("missing");
    let mut tensors = tiny_llama(false);
    tensors.remove("model.layers.1.mlp.up_proj.weight");
    candle_core::safetensors::save(&tensors, dir.0.join("model.safetensors")).unwrap();
    std::fs::write(dir.0.join("config.json"), config_json(false).to_string()).unwrap();
    let err = load_safetensors_dir(&dir.0).err().expect("must fail");
    assert!(
        matches!(&err, ModelError::MissingTensor(name) if name == "model.layers.1.mlp.up_proj.weight"),
        "{err}"
    );
}
