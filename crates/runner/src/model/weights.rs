//! Reading weights into the forms the CPU forward pass runs on: [`kernels::QMatrix`] for every
//! matrix (the GGUF block bytes as they are, or dense f32 from safetensors) and `Vec<f32>` for
//! norms and biases. candle parses the files; nothing of candle's tensors survives loading.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::{DType, Device};
use kernels::{QMatrix, QuantType, Scratch, Threads};

use super::transformer::{Arch, Layer, Transformer, Weights};
use super::{LoadOptions, ModelError};

/// A matrix as read, before it is fused with its neighbours.
pub(super) struct RawMatrix {
    pub rows: usize,
    pub cols: usize,
    pub data: RawData,
}

pub(super) enum RawData {
    /// ggml block bytes of this format.
    Blocks(QuantType, Vec<u8>),
    /// Dense f32 (safetensors).
    F32(Vec<f32>),
}

impl RawMatrix {
    /// Appends `other`'s rows when both are stored alike.
    fn try_append(&mut self, other: &mut RawMatrix) -> bool {
        if self.cols != other.cols {
            return false;
        }
        match (&mut self.data, &mut other.data) {
            (RawData::Blocks(a, x), RawData::Blocks(b, y)) if a == b => x.append(y),
            (RawData::F32(x), RawData::F32(y)) => x.append(y),
            _ => return false,
        }
        self.rows += other.rows;
        true
    }

    pub fn into_qmatrix(self) -> Result<QMatrix, ModelError> {
        match self.data {
            RawData::F32(values) => Ok(QMatrix::from_f32(self.rows, self.cols, values)),
            RawData::Blocks(ty, bytes) => QMatrix::new(ty, self.rows, self.cols, bytes)
                .map_err(|e| ModelError::Config(e.to_string())),
        }
    }
}

/// `y = x W^T (+ b)` for one or more matrices that share the input and whose outputs sit side
/// by side (q|k|v, gate|up). Matrices of the same format are fused into one at load, so a step
/// runs one matmul (one pass over the weights, one thread hand-off) for all of them.
pub(super) struct Proj {
    parts: Vec<QMatrix>,
    bias: Option<Vec<f32>>,
    out: usize,
}

impl Proj {
    /// Fuses `mats` (outputs in this order) wherever neighbours share a format.
    pub fn fuse(mats: Vec<RawMatrix>, bias: Option<Vec<f32>>) -> Result<Self, ModelError> {
        let out = mats.iter().map(|m| m.rows).sum();
        let mut merged: Vec<RawMatrix> = Vec::new();
        for mut m in mats {
            if !merged
                .last_mut()
                .is_some_and(|prev| prev.try_append(&mut m))
            {
                merged.push(m);
            }
        }
        let parts = merged
            .into_iter()
            .map(RawMatrix::into_qmatrix)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(b) = &bias {
            if b.len() != out {
                return Err(ModelError::Config(format!(
                    "bias of {} values for {out} outputs",
                    b.len()
                )));
            }
        }
        Ok(Self { parts, bias, out })
    }

    pub fn single(m: RawMatrix) -> Result<Self, ModelError> {
        Self::fuse(vec![m], None)
    }

    pub fn out_features(&self) -> usize {
        self.out
    }

    pub fn in_features(&self) -> usize {
        self.parts[0].cols()
    }

    /// `out[i * out_features + j]` for the `m` rows of `x`. `tmp` holds one part's output when
    /// the matrices could not be fused.
    pub fn forward(
        &self,
        x: &[f32],
        m: usize,
        out: &mut [f32],
        tmp: &mut Vec<f32>,
        scratch: &mut Scratch,
        threads: &Threads,
    ) {
        let out = &mut out[..m * self.out];
        if let [w] = self.parts.as_slice() {
            kernels::matmul(w, &x[..m * w.cols()], m, out, scratch, threads);
        } else {
            let mut col = 0;
            for w in &self.parts {
                let rows = w.rows();
                if tmp.len() < m * rows {
                    tmp.resize(m * rows, 0.0);
                }
                let t = &mut tmp[..m * rows];
                kernels::matmul(w, &x[..m * w.cols()], m, t, scratch, threads);
                for (o, r) in out.chunks_exact_mut(self.out).zip(t.chunks_exact(rows)) {
                    o[col..col + rows].copy_from_slice(r);
                }
                col += rows;
            }
        }
        if let Some(b) = &self.bias {
            for row in out.chunks_exact_mut(self.out) {
                for (y, &bj) in row.iter_mut().zip(b) {
                    *y += bj;
                }
            }
        }
    }
}

/// Reads tensors of one GGUF file by name.
pub(super) struct GgufReader<'a, R> {
    content: &'a gguf_file::Content,
    reader: &'a mut R,
}

impl<'a, R: Read + Seek> GgufReader<'a, R> {
    pub fn new(content: &'a gguf_file::Content, reader: &'a mut R) -> Self {
        Self { content, reader }
    }

    pub fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn info(&self, name: &str) -> Result<&'a gguf_file::TensorInfo, ModelError> {
        self.content
            .tensor_infos
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }

    /// `(rows, cols)` of a 2-D tensor (GGUF lists dims innermost first; candle has reversed them).
    pub fn dims2(&self, name: &str) -> Result<(usize, usize), ModelError> {
        let dims = self.info(name)?.shape.dims().to_vec();
        match dims.as_slice() {
            [rows, cols] => Ok((*rows, *cols)),
            _ => Err(ModelError::Config(format!(
                "{name} has shape {dims:?}, not 2-D"
            ))),
        }
    }

    /// A 2-D weight as its raw block bytes. Formats the kernels do not run are dequantized by
    /// candle and requantized to Q8_0 (or kept in f32 when the width does not allow blocks).
    pub fn matrix(&mut self, name: &str) -> Result<RawMatrix, ModelError> {
        let info = self.info(name)?;
        let (rows, cols) = self.dims2(name)?;
        match quant_type(info.ggml_dtype) {
            Some(ty) if cols.is_multiple_of(ty.block_len()) => {
                let bytes = rows * ty.row_bytes(cols);
                let start = self.content.tensor_data_offset + info.offset;
                let mut data = vec![0u8; bytes];
                let io = |e: std::io::Error| ModelError::Candle(e.into());
                self.reader.seek(SeekFrom::Start(start)).map_err(io)?;
                self.reader.read_exact(&mut data).map_err(io)?;
                Ok(RawMatrix {
                    rows,
                    cols,
                    data: RawData::Blocks(ty, data),
                })
            }
            _ => {
                let q = info.read(self.reader, self.content.tensor_data_offset, &Device::Cpu)?;
                let dense = q.dequantize(&Device::Cpu)?;
                if cols.is_multiple_of(32) {
                    let q8 = candle_core::quantized::QTensor::quantize(&dense, GgmlDType::Q8_0)?;
                    Ok(RawMatrix {
                        rows,
                        cols,
                        data: RawData::Blocks(QuantType::Q8_0, q8.data()?.into_owned()),
                    })
                } else {
                    Ok(RawMatrix {
                        rows,
                        cols,
                        data: RawData::F32(dense.flatten_all()?.to_vec1::<f32>()?),
                    })
                }
            }
        }
    }

    /// A 1-D tensor (norm weight, bias) in f32.
    pub fn vector(&mut self, name: &str) -> Result<Vec<f32>, ModelError> {
        let info = self.info(name)?;
        let q = info.read(self.reader, self.content.tensor_data_offset, &Device::Cpu)?;
        Ok(q.dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    pub fn vector_opt(&mut self, name: &str) -> Result<Option<Vec<f32>>, ModelError> {
        if self.has(name) {
            self.vector(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The four projections of block `i` under llama.cpp's names: `[q, k, v]`, output,
    /// `[gate, up]`, down.
    pub fn block_matrices(&mut self, i: usize) -> Result<BlockMatrices, ModelError> {
        let mut m = |name: &str| self.matrix(&format!("blk.{i}.{name}.weight"));
        Ok(BlockMatrices {
            qkv: vec![m("attn_q")?, m("attn_k")?, m("attn_v")?],
            o: m("attn_output")?,
            gate_up: vec![m("ffn_gate")?, m("ffn_up")?],
            down: m("ffn_down")?,
        })
    }

    /// The tensors outside the blocks (final norm, embedding, output projection unless it is
    /// tied to the embedding), put together with `layers` into the model.
    pub fn finish(
        &mut self,
        arch: Arch,
        layers: Vec<Layer>,
        opts: &LoadOptions,
    ) -> Result<Transformer, ModelError> {
        let norm = self.vector("output_norm.weight")?;
        let lm_head = if self.has("output.weight") {
            Some(self.matrix("output.weight")?.into_qmatrix()?)
        } else {
            None
        };
        let embed = self.matrix("token_embd.weight")?.into_qmatrix()?;
        Transformer::new(
            Weights {
                arch,
                embed,
                layers,
                norm,
                lm_head,
            },
            opts,
        )
    }
}

/// One block's projections as read, before fusing.
pub(super) struct BlockMatrices {
    pub qkv: Vec<RawMatrix>,
    pub o: RawMatrix,
    pub gate_up: Vec<RawMatrix>,
    pub down: RawMatrix,
}

fn quant_type(t: GgmlDType) -> Option<QuantType> {
    Some(match t {
        GgmlDType::F32 => QuantType::F32,
        GgmlDType::F16 => QuantType::F16,
        GgmlDType::Q4_0 => QuantType::Q4_0,
        GgmlDType::Q4_1 => QuantType::Q4_1,
        GgmlDType::Q5_0 => QuantType::Q5_0,
        GgmlDType::Q5_1 => QuantType::Q5_1,
        GgmlDType::Q8_0 => QuantType::Q8_0,
        GgmlDType::Q4K => QuantType::Q4K,
        GgmlDType::Q6K => QuantType::Q6K,
        _ => return None,
    })
}

/// Reads tensors of a set of safetensors files as f32.
pub(super) struct SafetensorsReader {
    st: candle_core::safetensors::MmapedSafetensors,
}

impl SafetensorsReader {
    pub fn open(files: &[PathBuf]) -> Result<Self, ModelError> {
        // SAFETY: the files are mapped read-only and only read during loading.
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(files)? };
        Ok(Self { st })
    }

    pub fn has(&self, name: &str) -> bool {
        self.st.get(name).is_ok()
    }

    fn f32s(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        if !self.has(name) {
            return Err(ModelError::MissingTensor(name.to_string()));
        }
        let t = self.st.load(name, &Device::Cpu)?;
        if t.dims() != shape {
            return Err(ModelError::Config(format!(
                "{name} has shape {:?}, expected {shape:?}",
                t.dims()
            )));
        }
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }

    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<RawMatrix, ModelError> {
        Ok(RawMatrix {
            rows,
            cols,
            data: RawData::F32(self.f32s(name, &[rows, cols])?),
        })
    }

    pub fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>, ModelError> {
        self.f32s(name, &[n])
    }

    pub fn vector_opt(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>, ModelError> {
        if self.has(name) {
            self.vector(name, n).map(Some)
        } else {
            Ok(None)
        }
    }
}
