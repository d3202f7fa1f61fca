//! Weights by name, from a GGUF file or a set of safetensors files, as host data that any backend
//! can take: a matrix as its ggml block bytes (GGUF) or dense f32 (safetensors), a vector in f32.
//! candle parses the files; nothing of candle's tensors leaves this module.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::{DType, Device};
use kernels::QuantType;

use super::ModelError;

/// A matrix as read.
#[derive(Debug)]
pub(super) struct RawMatrix {
    pub rows: usize,
    pub cols: usize,
    pub data: RawData,
}

#[derive(Debug)]
pub(super) enum RawData {
    /// ggml block bytes of this format.
    Blocks(QuantType, Vec<u8>),
    /// Dense f32 (safetensors).
    F32(Vec<f32>),
}

/// Where a model's weights are read from, by the names of its [`super::ModelDesc`].
pub(super) trait WeightSource {
    /// The tensor's dims, outermost first (`[rows, cols]` for a matrix); None when absent.
    fn dims(&self, name: &str) -> Option<Vec<usize>>;

    fn has(&self, name: &str) -> bool {
        self.dims(name).is_some()
    }

    /// A 2-D tensor.
    fn matrix(&mut self, name: &str) -> Result<RawMatrix, ModelError>;

    /// Any tensor (norm weight, bias, per-head norm rows) flattened, in f32.
    fn vector(&mut self, name: &str) -> Result<Vec<f32>, ModelError>;
}

fn two_dims(name: &str, dims: Option<Vec<usize>>) -> Result<(usize, usize), ModelError> {
    match dims.as_deref() {
        Some([rows, cols]) => Ok((*rows, *cols)),
        Some(other) => Err(ModelError::Config(format!(
            "{name} has shape {other:?}, not 2-D"
        ))),
        None => Err(ModelError::MissingTensor(name.to_string())),
    }
}

/// Tensors of one GGUF file.
pub(super) struct GgufSource<'a, R> {
    content: &'a gguf_file::Content,
    reader: &'a mut R,
}

impl<'a, R: Read + Seek> GgufSource<'a, R> {
    pub fn new(content: &'a gguf_file::Content, reader: &'a mut R) -> Self {
        Self { content, reader }
    }

    fn info(&self, name: &str) -> Result<&'a gguf_file::TensorInfo, ModelError> {
        self.content
            .tensor_infos
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }
}

impl<R: Read + Seek> WeightSource for GgufSource<'_, R> {
    fn dims(&self, name: &str) -> Option<Vec<usize>> {
        // GGUF lists dims innermost first; candle has reversed them.
        let info = self.content.tensor_infos.get(name)?;
        Some(info.shape.dims().to_vec())
    }

    /// A 2-D weight as its raw block bytes. Formats the CPU kernels do not run are dequantized
    /// by candle and requantized to Q8_0 (or kept in f32 when the width does not allow blocks).
    fn matrix(&mut self, name: &str) -> Result<RawMatrix, ModelError> {
        let info = self.info(name)?;
        let (rows, cols) = two_dims(name, self.dims(name))?;
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

    fn vector(&mut self, name: &str) -> Result<Vec<f32>, ModelError> {
        let info = self.info(name)?;
        let q = info.read(self.reader, self.content.tensor_data_offset, &Device::Cpu)?;
        Ok(q.dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }
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

/// Tensors of a set of safetensors files, read as f32 whatever their dtype.
pub(super) struct SafetensorsSource {
    st: candle_core::safetensors::MmapedSafetensors,
}

impl SafetensorsSource {
    pub fn open(files: &[PathBuf]) -> Result<Self, ModelError> {
        // SAFETY: the files are mapped read-only and only read during loading.
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(files)? };
        Ok(Self { st })
    }

    fn f32s(&self, name: &str) -> Result<Vec<f32>, ModelError> {
        if !self.has(name) {
            return Err(ModelError::MissingTensor(name.to_string()));
        }
        let t = self.st.load(name, &Device::Cpu)?;
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }
}

impl WeightSource for SafetensorsSource {
    fn dims(&self, name: &str) -> Option<Vec<usize>> {
        self.st.get(name).ok().map(|view| view.shape().to_vec())
    }

    fn matrix(&mut self, name: &str) -> Result<RawMatrix, ModelError> {
        let (rows, cols) = two_dims(name, self.dims(name))?;
        Ok(RawMatrix {
            rows,
            cols,
            data: RawData::F32(self.f32s(name)?),
        })
    }

    fn vector(&mut self, name: &str) -> Result<Vec<f32>, ModelError> {
        self.f32s(name)
    }
}
