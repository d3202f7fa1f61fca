//! Matrix multiplication of f32 activations by weight matrices, on the CPU.
//!
//! That is this crate's one job: `out = x · Wᵀ` for a weight matrix stored in one of ggml's block
//! formats (F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K), for `m` activation rows at once
//! (a decode batch or a prefill chunk), with every weight block read from memory once per call;
//! or, for encoders, dense f32 weights packed for many rows ([`gemm`], below).
//! It knows nothing about models, tensors or files.
//!
//! # Paths
//!
//! The instruction set is chosen once at run time ([`isa`]), so one binary built for plain
//! x86-64 takes the fast path on the CPU it runs on:
//!
//! - [`Isa::Avx512Vnni`] (AVX-512 F/BW/VL + VNNI, with AVX2/FMA/F16C): `vpdpbusd` on 256-bit
//!   vectors for every unsigned format (Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, and Q8_0 with its sign
//!   bit flipped); Q5 fifth bits expand with one masked move. Q6_K uses the AVX2 kernel below
//!   8 rows, and from 8 on the 16-row tiles with unsigned 6-bit quants (`x86/wide.rs`).
//! - [`Isa::Avx2`] (AVX2 + FMA + F16C): the same scheme with `vpmaddubsw`/`vpmaddwd`; Q8_0 and
//!   Q6_K keep signed weights (sign trick, Q6_K's per-16 scales applied by `vpmaddwd`).
//! - [`Isa::Portable`]: dequantize one weight row to f32 and dot it with every activation row;
//!   exact up to f32 rounding. Also used for F32/F16 weights on every CPU.
//!
//! Both int8 paths quantize each activation row once per call to blocks of 32 int8 (absmax /
//! 127), then, per weight row range owned by a task:
//!
//! - `m <= 8` (decode and small batches), 32-weight formats: each weight group is unpacked in
//!   registers and dotted with up to 4 activation rows (2 on AVX2) before the next is loaded;
//!   about 1.4-2.2x the old per-row passes at m = 2-8 on SmolLM2's shapes;
//!   Q8_0 on AVX2 (signed weights, no tile path) takes this kernel at every `m`;
//! - `m < 8`, other formats: each weight row is unpacked once into an L1-resident buffer (a
//!   block of rows at a time) and swept by every activation row;
//! - `m >= 8` (prefill, big batches), unsigned formats (from 9 for 32-weight ones): 8 unpacked rows are interleaved so one
//!   broadcast activation word feeds all 8 rows and no horizontal sums are needed; under
//!   AVX-512 VNNI, 16 rows at a time on 512-bit vectors (`x86/wide.rs`), lane for lane the same
//!   arithmetic, about 1.3-1.4x the 8-row rate at SmolLM2's shapes and m = 64.
//!
//! Under AVX-512 VNNI, Q4_0, Q4_1 and Q8_0 matrices with a multiple of 16 rows are laid out in
//! strips instead ([`Layout::Strips`], `x86/strips.rs`): each 64-byte slot holds the same dword
//! of 16 rows and a block's 16 scales sit side by side, so one broadcast activation word meets
//! 16 rows straight from memory, with no horizontal sums for decode and no per-call tile
//! building for prefill. Up to 8 activation rows dot each strip 4 rows a pass; beyond, a strip is
//! unpacked once into a 16-row tile and swept by the tile kernel. The results are bit-identical
//! to the row layout's (SmolLM2's shapes, 2 threads of a Sapphire Rapids-class CPU: m = 1 in 3.1
//! against 7.4 ms a sweep, m = 8 8.4 against 19.8, m = 64 62 against 85).
//!
//! AVX2 reads Q4_0 and Q4_1 in the same strips (`x86/strips/avx2.rs`): half a slot is a word
//! of the 8-row tile once its nibbles are split, so up to 8 activation rows dot each half-strip
//! straight from memory with the tile kernel's steps, and above 8 a half-strip becomes a tile
//! for a split and a store per slot instead of unpacking and shuffling 8 rows. Bit-identical to
//! the row layout there too (Zen 3, 2 threads, weights in cache: m = 8 0.78 against 1.50 ms a
//! sweep of two layers). Q8_0 stays in rows on AVX2, whose Q8_0 kernels use signed weights.
//!
//! Weight rows of the 32-weight formats are regrouped at load (same bytes, see `pack`), so
//! memory does not grow; K-quants are used as stored. Rows are split across [`Threads`] in
//! contiguous ranges of whole strips, a few per thread and as equal as the strips allow, so
//! every weight byte is read from memory once per call whatever `m` is.
//!
//! The int8 paths' error per output is bounded by about `sum_k |w_k| * max|x|_block / 254`
//! (half an activation quantization step), the same scheme as llama.cpp's.
//!
//! # Dense f32
//!
//! [`gemm`] multiplies many rows (an encoder's whole packed batch) by f32 weights packed once
//! into [`PackedF32`] panels: a register-blocked AVX2/FMA kernel at close to the CPU's f32 peak,
//! exact up to f32 rounding, for models whose accuracy budget rules out int8 activations.
//! [`gemm_bf16`] is its faster sibling on CPUs with AMX: bf16 weights ([`PackedBf16`]) and
//! bf16-rounded activations, exact f32 products and f32 sums, on the tile unit.

mod bf16;
mod formats;
mod gemm;
mod pack;
mod split;
mod threads;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use bf16::{
    amx_available, avx512_bf16_available, bf16_paths, bf16_to_f32, f32_to_bf16, gemm_bf16,
    gemm_bf16_on, gemm_bf16_reference, Bf16Path, PackedBf16,
};
pub use formats::{f16_to_f32, f32_to_f16};
pub use gemm::{gemm, gemm_on, gemm_reference, PackedF32};
pub use threads::Threads;

/// A ggml block format, ggml byte layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q6K,
}

impl QuantType {
    /// Every supported format, for tests and benches.
    pub const ALL: [QuantType; 9] = [
        QuantType::F32,
        QuantType::F16,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::Q4K,
        QuantType::Q6K,
    ];

    /// The format for a ggml type id (as stored in GGUF tensor infos).
    pub fn from_ggml_type(id: u32) -> Option<Self> {
        Some(match id {
            0 => QuantType::F32,
            1 => QuantType::F16,
            2 => QuantType::Q4_0,
            3 => QuantType::Q4_1,
            6 => QuantType::Q5_0,
            7 => QuantType::Q5_1,
            8 => QuantType::Q8_0,
            12 => QuantType::Q4K,
            14 => QuantType::Q6K,
            _ => return None,
        })
    }

    /// Weights per block.
    pub fn block_len(self) -> usize {
        match self {
            QuantType::F32 | QuantType::F16 => 1,
            QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q5_0 | QuantType::Q5_1 => 32,
            QuantType::Q8_0 => 32,
            QuantType::Q4K | QuantType::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QuantType::F32 => 4,
            QuantType::F16 => 2,
            QuantType::Q4_0 => 18,
            QuantType::Q4_1 => 20,
            QuantType::Q5_0 => 22,
            QuantType::Q5_1 => 24,
            QuantType::Q8_0 => 34,
            QuantType::Q4K => 144,
            QuantType::Q6K => 210,
        }
    }

    /// Bytes of one row of `cols` weights (`cols` a multiple of `block_len`).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_len() * self.block_bytes()
    }
}

/// Why a weight matrix was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    #[error("{ty:?} needs a column count that is a multiple of {block}, got {cols}")]
    ColsNotBlockMultiple {
        ty: QuantType,
        cols: usize,
        block: usize,
    },
    #[error("{ty:?} [{rows} x {cols}] takes {expected} bytes, got {got}")]
    WrongByteCount {
        ty: QuantType,
        rows: usize,
        cols: usize,
        expected: usize,
        got: usize,
    },
}

/// How a matrix's bytes are arranged (the same bytes, rearranged at load).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One row after another: ggml's layout, or `pack`'s for the 32-weight formats.
    Rows,
    /// Q4_0, Q4_1 and Q8_0 with a multiple of 16 rows, for the AVX-512 VNNI path: strips of 16
    /// rows whose quants are interleaved dword by dword and whose scales sit side by side, so
    /// one broadcast activation word meets all 16 rows with no unpacking into tiles per call
    /// and no horizontal sums (see `pack::strip_fields`).
    Strips,
}

impl Layout {
    /// The layout `path` reads fastest for a `ty` matrix of `rows` rows.
    pub fn for_path(path: Isa, ty: QuantType, rows: usize) -> Layout {
        if strip_kernels(path, ty) && pack::strips_apply(ty, rows) {
            Layout::Strips
        } else {
            Layout::Rows
        }
    }
}

/// Whether `path` has kernels for `ty` in strips. Portable has none: it reads any layout, but
/// strips only row by row through a gather, so its matrices stay in rows.
fn strip_kernels(path: Isa, ty: QuantType) -> bool {
    match path {
        Isa::Avx512Vnni => true,
        Isa::Avx2 => matches!(ty, QuantType::Q4_0 | QuantType::Q4_1),
        Isa::Portable => false,
    }
}

/// A weight matrix `[rows = out features, cols = in features]`.
#[derive(Clone)]
pub struct QMatrix {
    ty: QuantType,
    rows: usize,
    cols: usize,
    /// In `layout`: rows one after another, or strips of 16 rows.
    data: Vec<u8>,
    layout: Layout,
    /// Bytes per stored row.
    row_bytes: usize,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QMatrix")
            .field("ty", &self.ty)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

impl QMatrix {
    /// Takes the bytes of a GGUF tensor of type `ty` with `rows` rows of `cols` weights, laid
    /// out for this CPU's path.
    pub fn new(
        ty: QuantType,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
    ) -> Result<Self, KernelError> {
        Self::with_layout(ty, rows, cols, data, Layout::for_path(isa(), ty, rows))
    }

    /// [`QMatrix::new`] in a chosen layout (`Strips` where it applies, else `Rows`).
    #[doc(hidden)]
    pub fn with_layout(
        ty: QuantType,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
        layout: Layout,
    ) -> Result<Self, KernelError> {
        let block = ty.block_len();
        if !cols.is_multiple_of(block) {
            return Err(KernelError::ColsNotBlockMultiple { ty, cols, block });
        }
        let expected = rows * ty.row_bytes(cols);
        if data.len() != expected {
            return Err(KernelError::WrongByteCount {
                ty,
                rows,
                cols,
                expected,
                got: data.len(),
            });
        }
        let layout = if pack::strips_apply(ty, rows) {
            layout
        } else {
            Layout::Rows
        };
        let (mut data, row_bytes) = if pack::is_packed(ty) {
            (
                pack::pack_matrix(ty, rows, cols, data),
                pack::packed_row_bytes(ty, cols),
            )
        } else {
            (data, ty.row_bytes(cols))
        };
        if layout == Layout::Strips {
            data = pack::strip_matrix(ty, rows, cols, data);
        }
        Ok(QMatrix {
            ty,
            rows,
            cols,
            data,
            layout,
            row_bytes,
        })
    }

    /// The same matrix laid out for `path` (tests run every path on one matrix).
    #[doc(hidden)]
    pub fn for_path(&self, path: Isa) -> QMatrix {
        let layout = Layout::for_path(path, self.ty, self.rows);
        if layout == self.layout || !pack::is_packed(self.ty) {
            return self.clone();
        }
        let rb = self.ty.row_bytes(self.cols);
        let mut ggml = vec![0u8; self.rows * rb];
        let mut packed = vec![0u8; self.row_bytes];
        for j in 0..self.rows {
            self.packed_row(j, &mut packed);
            pack::ggml_row(self.ty, &packed, self.cols, &mut ggml[j * rb..(j + 1) * rb]);
        }
        QMatrix::with_layout(self.ty, self.rows, self.cols, ggml, layout)
            .expect("sizes taken from a valid matrix")
    }

    /// How the bytes are arranged.
    #[doc(hidden)]
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// A dense f32 matrix, row-major.
    pub fn from_f32(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), rows * cols, "from_f32: data is not rows x cols");
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        QMatrix {
            ty: QuantType::F32,
            rows,
            cols,
            data: bytes,
            layout: Layout::Rows,
            row_bytes: 4 * cols,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn ty(&self) -> QuantType {
        self.ty
    }

    /// Bytes the weights occupy (what one matmul streams from memory).
    pub fn weight_bytes(&self) -> usize {
        self.data.len()
    }

    /// Writes row `row` as f32 into `out[..cols]` (embedding lookup).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        assert!(row < self.rows, "row {row} out of {}", self.rows);
        let out = &mut out[..self.cols];
        if pack::is_packed(self.ty) {
            // At most 1536 columns stay on the stack; wider rows are rare (not in our models).
            let mut stack = [0u8; 1536 / 32 * 34 + 34];
            let mut heap = Vec::new();
            let stored = if self.row_bytes <= stack.len() {
                &mut stack[..self.row_bytes]
            } else {
                heap.resize(self.row_bytes, 0);
                &mut heap[..]
            };
            self.packed_row(row, stored);
            let mut blk = [0u8; 64];
            let blk = &mut blk[..self.ty.block_bytes()];
            for (b, y) in out.chunks_exact_mut(32).enumerate() {
                pack::unpack_block(self.ty, stored, b, blk);
                dequantize(self.ty, blk, y);
            }
        } else {
            dequantize(self.ty, self.row(row), out);
        }
    }

    /// Row `j` of a 32-weight format in `pack`'s row layout, whatever the matrix's layout.
    fn packed_row(&self, j: usize, out: &mut [u8]) {
        match self.layout {
            Layout::Rows => out.copy_from_slice(self.row(j)),
            Layout::Strips => pack::row_of_strips(self.ty, &self.data, self.row_bytes, j, out),
        }
    }

    /// The stored bytes of one row (the `Rows` layout only).
    fn row(&self, row: usize) -> &[u8] {
        debug_assert_eq!(self.layout, Layout::Rows);
        &self.data[row * self.row_bytes..(row + 1) * self.row_bytes]
    }
}

/// Dequantizes whole blocks of `ty` from `b` into `y` (`y.len()` weights).
fn dequantize(ty: QuantType, b: &[u8], y: &mut [f32]) {
    let (bl, bb) = (ty.block_len(), ty.block_bytes());
    let block_fn: fn(&[u8], &mut [f32]) = match ty {
        QuantType::F32 => {
            for (v, c) in y.iter_mut().zip(b.chunks_exact(4)) {
                *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            return;
        }
        QuantType::F16 => {
            for (v, c) in y.iter_mut().zip(b.chunks_exact(2)) {
                *v = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
            return;
        }
        QuantType::Q4_0 => formats::dequant_q4_0,
        QuantType::Q4_1 => formats::dequant_q4_1,
        QuantType::Q5_0 => formats::dequant_q5_0,
        QuantType::Q5_1 => formats::dequant_q5_1,
        QuantType::Q8_0 => formats::dequant_q8_0,
        QuantType::Q4K => formats::dequant_q4k,
        QuantType::Q6K => formats::dequant_q6k,
    };
    for (yb, bbytes) in y.chunks_exact_mut(bl).zip(b.chunks_exact(bb)) {
        block_fn(bbytes, yb);
    }
}

/// The instruction set the fast paths use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512Vnni,
    Avx2,
    Portable,
}

impl Isa {
    /// How `cohost --version` and the logs name the path.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }
}

/// The best path this CPU supports, detected once.
pub fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(detect_isa)
}

fn detect_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        if avx2
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
        {
            return Isa::Avx512Vnni;
        }
        if avx2 {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// Reusable per-caller buffers, so the hot path allocates nothing after warm-up.
#[derive(Default)]
pub struct Scratch {
    /// One dequantized weight row per task (portable path).
    rows: Vec<Vec<f32>>,
    #[cfg(target_arch = "x86_64")]
    x86: x86::Scratch,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch").finish_non_exhaustive()
    }
}

/// A raw pointer that tasks share; each task writes a disjoint set of elements.
struct SharedMut<T>(*mut T);
impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<T> {}
impl<T> SharedMut<T> {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper, not the field).
    fn get(self) -> *mut T {
        self.0
    }
    /// The pointer `n` elements on.
    #[cfg(target_arch = "x86_64")]
    fn at(self, n: usize) -> Self {
        SharedMut(self.0.wrapping_add(n))
    }
}
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

/// `out[i*rows + j] = sum_k x[i*cols + k] * W[j, k]` for `i` in `0..m`.
///
/// Every weight block is read from memory once per call for all `m` rows; the rows of `W` are
/// split across `threads`.
pub fn matmul(
    w: &QMatrix,
    x: &[f32],
    m: usize,
    out: &mut [f32],
    scratch: &mut Scratch,
    threads: &Threads,
) {
    matmul_on(isa(), w, x, m, out, scratch, threads);
}

/// The paths this CPU can run, best first (tests run each).
#[doc(hidden)]
pub fn supported_isas() -> Vec<Isa> {
    match isa() {
        Isa::Avx512Vnni => vec![Isa::Avx512Vnni, Isa::Avx2, Isa::Portable],
        Isa::Avx2 => vec![Isa::Avx2, Isa::Portable],
        Isa::Portable => vec![Isa::Portable],
    }
}

/// `matmul` on a chosen path; panics if this CPU cannot run it.
#[doc(hidden)]
pub fn matmul_on(
    path: Isa,
    w: &QMatrix,
    x: &[f32],
    m: usize,
    out: &mut [f32],
    scratch: &mut Scratch,
    threads: &Threads,
) {
    check_shapes(w, x, m, out);
    assert!(
        supported_isas().contains(&path),
        "{path:?} is not supported by this CPU"
    );
    // Nothing to compute: neither path needs to quantize, split or spawn anything.
    if m == 0 || w.rows == 0 {
        return;
    }
    assert!(
        w.layout == Layout::Rows || path == Isa::Portable || strip_kernels(path, w.ty),
        "{path:?} cannot read a matrix in strips (see QMatrix::for_path)"
    );
    let int8 = !matches!(w.ty, QuantType::F32 | QuantType::F16);
    match path {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni if int8 => {
            x86::matmul(path, w, x, m, out, &mut scratch.x86, threads)
        }
        _ => matmul_portable(w, x, m, out, scratch, threads),
    }
}

fn check_shapes(w: &QMatrix, x: &[f32], m: usize, out: &[f32]) {
    assert!(
        x.len() >= m * w.cols,
        "x holds {} values, need {m} x {}",
        x.len(),
        w.cols
    );
    assert!(
        out.len() >= m * w.rows,
        "out holds {} values, need {m} x {}",
        out.len(),
        w.rows
    );
}

fn matmul_portable(
    w: &QMatrix,
    x: &[f32],
    m: usize,
    out: &mut [f32],
    scratch: &mut Scratch,
    threads: &Threads,
) {
    let (rows, cols) = (w.rows, w.cols);
    let split = split::RowSplit::new(rows, threads.len(), 1);
    scratch.rows.resize_with(split.tasks, Vec::new);
    for r in &mut scratch.rows {
        r.resize(cols, 0.0);
    }
    let bufs = SharedMut(scratch.rows.as_mut_ptr());
    let outp = SharedMut(out.as_mut_ptr());
    threads.run(split.tasks, &|t| {
        // SAFETY: task t owns buffer t and output columns split.range(t) of every row.
        let buf = unsafe { &mut *bufs.get().add(t) };
        for j in split.range(t) {
            w.dequantize_row(j, buf);
            for i in 0..m {
                let xi = &x[i * cols..(i + 1) * cols];
                unsafe { *outp.get().add(i * rows + j) = dot_f32(buf, xi) };
            }
        }
    });
}

/// An f32 dot product with 8 independent accumulators so the compiler vectorises it (a fixed
/// order: the portable matmul's and the portable bf16 GEMM's).
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(p, q)| p * q)
        .sum();
    for (p, q) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += p[l] * q[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Dequantize-then-multiply in f64-free plain f32, one row at a time: the reference for tests.
pub fn matmul_reference(w: &QMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    check_shapes(w, x, m, out);
    let mut row = vec![0f32; w.cols];
    for j in 0..w.rows {
        w.dequantize_row(j, &mut row);
        for i in 0..m {
            let xi = &x[i * w.cols..(i + 1) * w.cols];
            out[i * w.rows + j] = row.iter().zip(xi).map(|(a, b)| a * b).sum();
        }
    }
}

/// Synthetic weights and activations for tests and benches (not for models).
#[doc(hidden)]
pub mod testing {
    use super::{f32_to_f16, QMatrix, QuantType};

    /// A small xorshift generator: deterministic, no dependency.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
        }
        pub fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        /// Uniform in [-1, 1).
        pub fn unit(&mut self) -> f32 {
            (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    /// A matrix of random blocks: random quants, and scales in the range real models use.
    pub fn random_matrix(ty: QuantType, rows: usize, cols: usize, seed: u64) -> QMatrix {
        let data = random_blocks(ty, rows, cols, seed);
        QMatrix::new(ty, rows, cols, data).expect("sizes computed from the format")
    }

    /// The ggml bytes of `random_matrix(ty, rows, cols, seed)`.
    pub fn random_blocks(ty: QuantType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng::new(seed);
        if ty == QuantType::F32 {
            return (0..rows * cols)
                .flat_map(|_| rng.unit().to_le_bytes())
                .collect();
        }
        let n = rows * ty.row_bytes(cols);
        let mut data: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        let half = |v: f32| f32_to_f16(v).to_le_bytes();
        let bb = ty.block_bytes();
        for b in data.chunks_exact_mut(bb) {
            let scale = 0.002 + 0.02 * rng.unit().abs();
            let min = 0.05 * rng.unit();
            let mut put = |at: usize, v: f32| b[at..at + 2].copy_from_slice(&half(v));
            match ty {
                QuantType::F16 => put(0, rng.unit()),
                QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q8_0 => put(0, scale),
                QuantType::Q4_1 | QuantType::Q5_1 => {
                    put(0, scale);
                    put(2, min);
                }
                QuantType::Q4K => {
                    put(0, scale / 16.0);
                    put(2, min.abs() / 16.0);
                }
                QuantType::Q6K => put(208, scale / 64.0),
                QuantType::F32 => unreachable!(),
            }
        }
        data
    }

    /// `n` activations in [-1, 1), with a few larger outliers as real hidden states have.
    pub fn random_activations(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed ^ 0x5555);
        (0..n)
            .map(|i| {
                let v = rng.unit();
                if i % 97 == 0 {
                    v * 8.0
                } else {
                    v
                }
            })
            .collect()
    }
}
