//! Reading an encoder's safetensors into the forms the forward pass runs on: every matrix packed
//! for [`kernels::gemm`] or, at bf16 precision, rounded and packed for [`kernels::gemm_bf16`]
//! (q, k and v fused into one), vectors as `Vec<f32>`. candle parses the
//! files and converts f16 / bf16 to f32; nothing of candle's survives loading.

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use kernels::{PackedBf16, PackedF32, Threads};

use crate::config::{EncoderSpec, Family, Head, ModelConfig};
use crate::{EncoderError, Precision};

/// A weight matrix, packed for the precision the model runs at.
pub(crate) enum Matrix {
    F32(PackedF32),
    Bf16(PackedBf16),
}

/// `y = x Wᵀ + b`.
pub(crate) struct Linear {
    pub w: Matrix,
    pub b: Option<Vec<f32>>,
}

impl Linear {
    pub fn out_features(&self) -> usize {
        match &self.w {
            Matrix::F32(w) => w.rows(),
            Matrix::Bf16(w) => w.rows(),
        }
    }

    /// `out = x Wᵀ + b` for `m` rows of `x`.
    pub fn apply(&self, x: &[f32], m: usize, out: &mut [f32], threads: &Threads) {
        let b = self.b.as_deref();
        match &self.w {
            Matrix::F32(w) => kernels::gemm(w, x, m, b, out, threads),
            Matrix::Bf16(w) => kernels::gemm_bf16(w, x, m, b, out, threads),
        }
    }

    pub fn weight_bytes(&self) -> usize {
        let w = match &self.w {
            Matrix::F32(w) => w.weight_bytes(),
            Matrix::Bf16(w) => w.weight_bytes(),
        };
        w + self.b.as_ref().map_or(0, |b| b.len() * 4)
    }
}

pub(crate) struct Norm {
    pub g: Vec<f32>,
    pub b: Vec<f32>,
}

pub(crate) struct Layer {
    /// q, k and v side by side: `[3 * hidden, hidden]`.
    pub qkv: Linear,
    pub attn_out: Linear,
    pub ln_attn: Norm,
    pub up: Linear,
    pub down: Linear,
    pub ln_ffn: Norm,
}

pub(crate) struct Embeddings {
    /// `[vocab, hidden]`, `[positions, hidden]`, `[types, hidden]`, row-major.
    pub word: Vec<f32>,
    pub position: Vec<f32>,
    pub token_type: Vec<f32>,
    pub norm: Norm,
}

/// The cross-encoder head: `out(tanh(dense(h[first token])))` (BERT's pooler and classifier,
/// RoBERTa's `classifier.dense` and `classifier.out_proj`).
pub(crate) struct Classifier {
    pub dense: Linear,
    pub out: Linear,
}

/// A sentence-transformers `Dense` module.
pub(crate) struct Dense {
    pub linear: Linear,
    pub tanh: bool,
}

pub(crate) struct Weights {
    pub embeddings: Embeddings,
    pub layers: Vec<Layer>,
    pub classifier: Option<Classifier>,
    pub dense: Vec<Dense>,
}

struct Reader {
    st: MmapedSafetensors,
    files: Vec<PathBuf>,
    /// "", "bert.", "roberta.", "model." ...: where the encoder's tensors sit.
    prefix: String,
    precision: Precision,
}

impl Reader {
    fn open(files: &[PathBuf], precision: Precision) -> Result<Self, EncoderError> {
        // SAFETY: the files are mapped read-only and not modified while loading.
        let st = unsafe { MmapedSafetensors::multi(files) }.map_err(|e| EncoderError::Weights {
            file: files.first().cloned().unwrap_or_default(),
            message: e.to_string(),
        })?;
        Ok(Self {
            st,
            files: files.to_vec(),
            prefix: String::new(),
            precision,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.st.get(name).is_ok()
    }

    fn error(&self, message: String) -> EncoderError {
        EncoderError::Weights {
            file: self.files.first().cloned().unwrap_or_default(),
            message,
        }
    }

    /// A tensor as f32 with exactly `shape`.
    fn f32s(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EncoderError> {
        let t = self
            .st
            .load(name, &Device::Cpu)
            .map_err(|_| self.error(format!("no tensor {name}")))?;
        if t.dims() != shape {
            return Err(self.error(format!(
                "{name} has shape {:?}, expected {shape:?}",
                t.dims()
            )));
        }
        t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| self.error(format!("{name}: {e}")))
    }

    fn enc(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn linear(&self, name: &str, rows: usize, cols: usize) -> Result<Linear, EncoderError> {
        self.linear_fused(&[name], rows, cols)
    }

    /// Several `[rows, cols]` linears sharing their input, stacked into one.
    fn linear_fused(
        &self,
        names: &[&str],
        rows: usize,
        cols: usize,
    ) -> Result<Linear, EncoderError> {
        let mut w = Vec::with_capacity(names.len() * rows * cols);
        let mut b = Vec::with_capacity(names.len() * rows);
        let mut biased = 0;
        for n in names {
            w.extend(self.f32s(&format!("{n}.weight"), &[rows, cols])?);
            let bias = format!("{n}.bias");
            if self.has(&bias) {
                b.extend(self.f32s(&bias, &[rows])?);
                biased += 1;
            } else {
                b.extend(std::iter::repeat_n(0.0, rows));
            }
        }
        let rows = names.len() * rows;
        let w = match self.precision.resolve() {
            Precision::Bf16 => Matrix::Bf16(PackedBf16::new(rows, cols, &w)),
            _ => Matrix::F32(PackedF32::new(rows, cols, &w)),
        };
        Ok(Linear {
            w,
            b: (biased > 0).then_some(b),
        })
    }

    /// A layer norm, under either of its spellings (`weight`/`bias` or `gamma`/`beta`).
    fn norm(&self, name: &str, n: usize) -> Result<Norm, EncoderError> {
        let (g, b) = if self.has(&format!("{name}.gamma")) {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(Norm {
            g: self.f32s(&format!("{name}.{g}"), &[n])?,
            b: self.f32s(&format!("{name}.{b}"), &[n])?,
        })
    }
}

pub(crate) fn load(spec: &EncoderSpec, precision: Precision) -> Result<Weights, EncoderError> {
    let cfg = &spec.config;
    let mut r = Reader::open(&spec.weights, precision)?;
    r.prefix = ["", "bert.", "roberta.", "model.", "encoder."]
        .into_iter()
        .find(|p| r.has(&format!("{p}embeddings.word_embeddings.weight")))
        .ok_or_else(|| r.error("no embeddings.word_embeddings.weight tensor".into()))?
        .to_string();
    let h = cfg.hidden;
    let embeddings = Embeddings {
        word: r.f32s(
            &r.enc("embeddings.word_embeddings.weight"),
            &[cfg.vocab_size, h],
        )?,
        position: r.f32s(
            &r.enc("embeddings.position_embeddings.weight"),
            &[cfg.max_positions, h],
        )?,
        token_type: r.f32s(
            &r.enc("embeddings.token_type_embeddings.weight"),
            &[cfg.type_vocab_size, h],
        )?,
        norm: r.norm(&r.enc("embeddings.LayerNorm"), h)?,
    };
    let layers = (0..cfg.layers)
        .map(|i| layer(&r, cfg, i))
        .collect::<Result<Vec<_>, _>>()?;
    let classifier = match spec.head {
        Head::Classifier => Some(classifier(&r, cfg)?),
        Head::Embedding(_) => None,
    };
    let dense = match &spec.head {
        Head::Embedding(head) => head
            .dense
            .iter()
            .map(|d| {
                // Dense modules run once per text, not per token: f32 costs nothing here.
                let r = Reader::open(&[dense_file(&d.dir)?], Precision::F32)?;
                let linear = r.linear("linear", d.out_features, d.in_features)?;
                if d.bias && linear.b.is_none() {
                    return Err(r.error("the Dense module has no linear.bias".into()));
                }
                Ok(Dense {
                    linear,
                    tanh: d.tanh,
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Head::Classifier => Vec::new(),
    };
    Ok(Weights {
        embeddings,
        layers,
        classifier,
        dense,
    })
}

fn layer(r: &Reader, cfg: &ModelConfig, i: usize) -> Result<Layer, EncoderError> {
    let (h, f) = (cfg.hidden, cfg.intermediate);
    let p = r.enc(&format!("encoder.layer.{i}."));
    let att = format!("{p}attention.self.");
    Ok(Layer {
        qkv: r.linear_fused(
            &[
                &format!("{att}query"),
                &format!("{att}key"),
                &format!("{att}value"),
            ],
            h,
            h,
        )?,
        attn_out: r.linear(&format!("{p}attention.output.dense"), h, h)?,
        ln_attn: r.norm(&format!("{p}attention.output.LayerNorm"), h)?,
        up: r.linear(&format!("{p}intermediate.dense"), f, h)?,
        down: r.linear(&format!("{p}output.dense"), h, f)?,
        ln_ffn: r.norm(&format!("{p}output.LayerNorm"), h)?,
    })
}

fn classifier(r: &Reader, cfg: &ModelConfig) -> Result<Classifier, EncoderError> {
    let h = cfg.hidden;
    match cfg.family {
        Family::Bert => Ok(Classifier {
            dense: r.linear(&r.enc("pooler.dense"), h, h)?,
            out: r.linear("classifier", 1, h)?,
        }),
        Family::Roberta => Ok(Classifier {
            dense: r.linear("classifier.dense", h, h)?,
            out: r.linear("classifier.out_proj", 1, h)?,
        }),
    }
}

fn dense_file(dir: &Path) -> Result<PathBuf, EncoderError> {
    let f = dir.join("model.safetensors");
    if f.is_file() {
        Ok(f)
    } else if dir.join("pytorch_model.bin").is_file() {
        Err(EncoderError::Unsupported(format!(
            "PyTorch .bin weights in {}: convert them to model.safetensors",
            dir.display()
        )))
    } else {
        Err(EncoderError::Missing(f))
    }
}
