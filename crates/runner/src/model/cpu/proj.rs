//! Weight matrices in the form the CPU forward pass runs on: [`kernels::QMatrix`] (the GGUF block
//! bytes as they are, or dense f32 from safetensors), fused where neighbours share an input.

use kernels::{QMatrix, Scratch, Threads};

use super::super::source::{RawData, RawMatrix};
use super::super::ModelError;

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
