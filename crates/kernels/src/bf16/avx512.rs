//! Rounding activations to bf16 on 16 lanes.

use std::arch::x86_64::*;

/// [`super::f32_to_bf16`], 16 lanes at a time: the same integer rounding, bit for bit.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn round_row(src: &[f32], dst: &mut [u16]) {
    let n = src.len().min(dst.len());
    let full = n / 16 * 16;
    let (one, half, abs, inf, quiet) = (
        _mm512_set1_epi32(1),
        _mm512_set1_epi32(0x7fff),
        _mm512_set1_epi32(0x7fff_ffff),
        _mm512_set1_epi32(0x7f80_0000),
        _mm512_set1_epi32(0x40),
    );
    for i in (0..full).step_by(16) {
        let b = _mm512_loadu_si512(src.as_ptr().add(i).cast());
        let hi = _mm512_srli_epi32::<16>(b);
        let lsb = _mm512_and_si512(hi, one);
        let r = _mm512_srli_epi32::<16>(_mm512_add_epi32(b, _mm512_add_epi32(lsb, half)));
        let nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(b, abs), inf);
        let r = _mm512_mask_blend_epi32(nan, r, _mm512_or_si512(hi, quiet));
        _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), _mm512_cvtepi32_epi16(r));
    }
    for i in full..n {
        dst[i] = super::f32_to_bf16(src[i]);
    }
}
