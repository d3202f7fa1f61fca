//! The architectures without small real weights (cohere, cohere2, qwen3) on tiny random models
//! made with Hugging Face `transformers` (tests/golden-gen/make_tiny_models.py), in both file
//! formats, against transformers' float32 logits on the same weights: each sequence alone, and
//! all of them in mixed batches where prefill chunks and decode rows share a step.

use std::path::{Path, PathBuf};

use runner::model::desc::{BlockKind, NormKind, RopeStyle};
use runner::model::{
    describe_gguf, describe_safetensors_dir, load_gguf, load_safetensors_dir, BatchItem,
    BatchModel, ModelError,
};

const ARCHITECTURES: [&str; 3] = ["cohere", "cohere2", "qwen3"];

/// max |ours - transformers| / max |transformers| per logits row. The weights are f16 values
/// (exact in both files) and our matmuls over F16/F32 weights are exact f32; what remains is the
/// f16 KV cache (keys and values rounded to 11 bits, as llama.cpp does) and f32 summation order.
/// Measured worst cases are a few 1e-4; a wrong norm, RoPE pairing, window or scale moves these
/// logits by 1e-1 and more.
const TOLERANCE: f32 = 1e-3;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

#[derive(serde::Deserialize)]
struct Reference {
    vocab: usize,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    prompt: Vec<u32>,
    continuation: Vec<u32>,
    /// Logits after the last prompt token, then after each continuation token.
    logits: Vec<Vec<f32>>,
}

fn reference(arch: &str) -> Reference {
    let path = fixtures().join(format!("{arch}.reference.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn rel_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    got.iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

/// One sequence's inputs, step by step, and which reference row each step's logits must match.
fn schedule(case: &Case, split_prompt: bool) -> Vec<(Vec<u32>, Option<usize>)> {
    let mut steps = Vec::new();
    let p = &case.prompt;
    if split_prompt && p.len() > 1 {
        let half = p.len() / 2;
        steps.push((p[..half].to_vec(), None));
        steps.push((p[half..].to_vec(), Some(0)));
    } else {
        steps.push((p.clone(), Some(0)));
    }
    for (k, &t) in case.continuation.iter().enumerate() {
        steps.push((vec![t], Some(k + 1)));
    }
    steps
}

/// Runs every case, alone (one sequence per forward pass) or batched (every sequence in every
/// step, the longest prompt in two prefill chunks so that chunks and decode rows mix). Returns
/// the checked logits rows, by case and reference row, and the worst relative difference.
fn run(
    model: &mut dyn BatchModel,
    r: &Reference,
    batched: bool,
    seq0: u64,
) -> (Vec<Vec<Vec<f32>>>, f32) {
    assert_eq!(model.vocab_size(), r.vocab);
    let longest = (0..r.cases.len())
        .max_by_key(|&i| r.cases[i].prompt.len())
        .unwrap();
    let plans: Vec<_> = r
        .cases
        .iter()
        .enumerate()
        .map(|(i, c)| schedule(c, batched && i == longest))
        .collect();
    let mut rows: Vec<Vec<Vec<f32>>> = r
        .cases
        .iter()
        .map(|c| vec![Vec::new(); c.logits.len()])
        .collect();
    let mut worst = 0f32;
    let mut logits = Vec::new();
    let mut check = |i: usize, row: usize, got: &[f32], rows: &mut Vec<Vec<Vec<f32>>>| {
        let d = rel_diff(got, &r.cases[i].logits[row]);
        assert!(
            d < TOLERANCE,
            "case {i} (prompt of {}) row {row}: relative diff {d} (batched: {batched})",
            r.cases[i].prompt.len()
        );
        worst = worst.max(d);
        rows[i][row] = got.to_vec();
    };
    if batched {
        let steps = plans.iter().map(Vec::len).max().unwrap();
        for s in 0..steps {
            let live: Vec<usize> = (0..plans.len()).filter(|&i| s < plans[i].len()).collect();
            let batch: Vec<BatchItem> = live
                .iter()
                .map(|&i| BatchItem::new(seq0 + i as u64, &plans[i][s].0))
                .collect();
            model.forward(&batch, &mut logits).unwrap();
            for (b, &i) in live.iter().enumerate() {
                if let Some(row) = plans[i][s].1 {
                    check(i, row, &logits[b * r.vocab..(b + 1) * r.vocab], &mut rows);
                }
            }
        }
    } else {
        for (i, plan) in plans.iter().enumerate() {
            for (tokens, row) in plan {
                let item = BatchItem::new(seq0 + i as u64, tokens);
                model.forward(&[item], &mut logits).unwrap();
                if let Some(row) = row {
                    check(i, *row, &logits, &mut rows);
                }
            }
        }
    }
    for i in 0..plans.len() {
        model.release(seq0 + i as u64);
    }
    (rows, worst)
}

fn check_format(arch: &str, format: &str, mut model: Box<dyn BatchModel>) -> Vec<Vec<Vec<f32>>> {
    let r = reference(arch);
    let (alone, worst_alone) = run(model.as_mut(), &r, false, 0);
    let (batched, worst_batched) = run(model.as_mut(), &r, true, 100);
    eprintln!(
        "{arch} {format}: worst relative diff vs transformers {worst_alone:e} alone, {worst_batched:e} batched"
    );
    // A sequence's logits do not depend on the batch around it or on how its prompt is split.
    assert_eq!(
        alone, batched,
        "{arch} {format}: batched logits differ from alone"
    );
    alone
}

fn check_arch(arch: &str) {
    let dir = fixtures();
    let hf = check_format(
        arch,
        "safetensors",
        load_safetensors_dir(&dir.join(arch)).unwrap(),
    );
    let (model, _) = load_gguf(&dir.join(format!("{arch}.gguf"))).unwrap();
    let gguf = check_format(arch, "gguf", model);
    // Same f16 values, exact matmuls: the two files give the same logits.
    let r = reference(arch);
    let mut worst = 0f32;
    for (a, b) in hf.iter().flatten().zip(gguf.iter().flatten()) {
        worst = worst.max(rel_diff(a, b));
    }
    eprintln!("{arch}: safetensors vs gguf {worst:e}");
    assert!(worst < 1e-5, "{arch}: the formats differ by {worst}");
    assert_eq!(hf.len(), r.cases.len());
}

#[test]
fn tiny_cohere_matches_transformers_in_both_formats() {
    check_arch("cohere");
}

#[test]
fn tiny_cohere2_matches_transformers_in_both_formats() {
    check_arch("cohere2");
}

#[test]
fn tiny_qwen3_matches_transformers_in_both_formats() {
    check_arch("qwen3");
}

#[test]
fn descriptions_read_the_same_structure_from_both_formats() {
    let dir = fixtures();
    for arch in ARCHITECTURES {
        let hf = describe_safetensors_dir(&dir.join(arch)).unwrap();
        let gguf = describe_gguf(&dir.join(format!("{arch}.gguf"))).unwrap();
        let structure = |d: &runner::model::ModelDesc| {
            (
                (
                    d.hidden,
                    d.n_heads,
                    d.n_kv_heads,
                    d.head_dim,
                    d.vocab,
                    d.max_context,
                ),
                d.norm,
                d.block,
                d.rope_style,
                d.rope_bases.clone(),
                d.logit_scale,
                d.lm_head.is_some(),
                d.layers
                    .iter()
                    .map(|l| (l.attention, l.q_norm.is_some(), l.mlp_norm.is_some()))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(structure(&hf), structure(&gguf), "{arch}");
        assert!((hf.norm_eps - gguf.norm_eps).abs() < 1e-12, "{arch}");
        // Every tensor the descriptions name is in the files (the loads above read them all).
        assert!(!hf.tensor_names().is_empty());
    }
    let cohere2 = describe_gguf(&dir.join("cohere2.gguf")).unwrap();
    assert_eq!(cohere2.block, BlockKind::Parallel);
    assert_eq!(cohere2.norm, NormKind::Layer);
    assert_eq!(cohere2.rope_style, RopeStyle::Interleaved);
    assert_eq!(cohere2.logit_scale, Some(0.25));
    assert!(cohere2.lm_head.is_none(), "tied embeddings");
    let pattern: Vec<_> = cohere2
        .layers
        .iter()
        .map(|l| (l.attention.window, l.attention.rope))
        .collect();
    // Three sliding-window layers with RoPE, then a global one without positional encoding.
    assert_eq!(
        pattern,
        [
            (Some(8), Some(0)),
            (Some(8), Some(0)),
            (Some(8), Some(0)),
            (None, None)
        ]
    );
    let cohere = describe_gguf(&dir.join("cohere.gguf")).unwrap();
    assert_eq!(cohere.architecture, "command-r");
    assert!(cohere
        .layers
        .iter()
        .all(|l| l.q_norm.is_some() && l.k_norm.is_some()));
    let qwen3 = describe_safetensors_dir(&dir.join("qwen3")).unwrap();
    assert_eq!(
        (qwen3.norm, qwen3.block, qwen3.rope_style),
        (NormKind::Rms, BlockKind::Sequential, RopeStyle::Halves)
    );
    assert_eq!(
        qwen3.q_dim(),
        64,
        "head_dim 16 x 4 heads, decoupled from hidden 32"
    );
    assert!(qwen3.lm_head.is_some());
}

/// A copy of a fixture directory whose config.json is edited, removed when dropped.
struct EditedDir(PathBuf);

impl EditedDir {
    fn new(arch: &str, tag: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Self {
        let from = fixtures().join(arch);
        let dir =
            std::env::temp_dir().join(format!("cohost-tiny-{arch}-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        edit(&mut config);
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for EditedDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config_error(dir: &EditedDir) -> String {
    match load_safetensors_dir(dir.path()) {
        Err(ModelError::Config(msg)) => msg,
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("expected a config error, the model loaded"),
    }
}

#[test]
fn unsupported_shapes_are_clear_errors() {
    let yarn = EditedDir::new("qwen3", "yarn", |c| {
        c["rope_parameters"] =
            serde_json::json!({"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6});
    });
    assert!(
        config_error(&yarn).contains("not supported"),
        "{}",
        config_error(&yarn)
    );

    let layers = EditedDir::new("cohere2", "layers", |c| {
        c["layer_types"] = serde_json::json!(["sliding_attention", "full_attention"]);
    });
    assert!(config_error(&layers).contains("layer_types lists 2 layers for 4"));

    let act = EditedDir::new("cohere", "gelu", |c| c["hidden_act"] = "gelu".into());
    assert!(config_error(&act).contains("hidden_act \"gelu\""));

    // A config that disagrees with the weights is named, not a panic.
    let heads = EditedDir::new("cohere", "heads", |c| c["num_attention_heads"] = 2.into());
    let msg = config_error(&heads);
    assert!(msg.contains("expected"), "{msg}");

    let missing = EditedDir::new("qwen3", "missing", |c| c["model_type"] = "qwen3".into());
    std::fs::write(missing.path().join("model.safetensors"), b"").ok();
    assert!(load_safetensors_dir(missing.path()).is_err());
}
