//! The tile kernels, as inline assembly (Rust's AMX intrinsics are not stable). Every tile
//! register is configured as 16 rows x 64 bytes.

use std::arch::asm;

thread_local! {
    static CONFIGURED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Loads the tile configuration on this thread, once: it is per-thread state that the OS
/// saves and restores with the rest of the registers.
pub(super) fn configure() {
    if CONFIGURED.get() {
        return;
    }
    let mut cfg = [0u8; 64];
    cfg[0] = 1; // palette 1
    for t in 0..8 {
        cfg[16 + 2 * t] = 64; // bytes per row
        cfg[48 + t] = 16; // rows
    }
    // SAFETY: only reached after `amx_available()` said the CPU and OS allow tiles.
    unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack, readonly)) };
    CONFIGURED.set(true);
}

/// One block's operands: A as one or two 16-row groups of `steps` 1 KiB tiles; B as two
/// panels of `steps` 1 KiB tiles; the 32 bias values the sums start from; the 32-column
/// output block at byte stride `ldc`.
pub(super) struct Operands {
    pub a0: *const u16,
    pub a1: *const u16,
    pub b0: *const u16,
    pub b1: *const u16,
    pub steps: usize,
    pub bias: *const f32,
    pub c: *mut f32,
    pub ldc: usize,
}

/// `c[32 x 32] = bias + A[32 x k] · B[k x 32]`. The sum tiles start as the bias row loaded
/// with stride 0 (16 copies of it).
///
/// # Safety
/// Tiles configured; `steps >= 1`; all operands as sized above.
pub(super) unsafe fn tile_32x32(t: &Operands) {
    asm!(
        "tileloadd tmm0, [{bias} + {zero}*1]",
        "tileloadd tmm1, [{bias1} + {zero}*1]",
        "tileloadd tmm2, [{bias} + {zero}*1]",
        "tileloadd tmm3, [{bias1} + {zero}*1]",
        "2:",
        "tileloadd tmm4, [{a} + {s64}*1]",
        "tileloadd tmm6, [{b0} + {s64}*1]",
        "tileloadd tmm7, [{b1} + {s64}*1]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tileloadd tmm5, [{a2} + {s64}*1]",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tdpbf16ps tmm3, tmm5, tmm7",
        "add {a}, 1024",
        "add {a2}, 1024",
        "add {b0}, 1024",
        "add {b1}, 1024",
        "dec {n}",
        "jnz 2b",
        "tilestored [{c} + {ldc}*1], tmm0",
        "tilestored [{c1} + {ldc}*1], tmm1",
        "tilestored [{c2} + {ldc}*1], tmm2",
        "tilestored [{c3} + {ldc}*1], tmm3",
        a = inout(reg) t.a0 => _,
        a2 = inout(reg) t.a1 => _,
        b0 = inout(reg) t.b0 => _,
        b1 = inout(reg) t.b1 => _,
        n = inout(reg) t.steps => _,
        s64 = in(reg) 64usize,
        zero = in(reg) 0usize,
        bias = in(reg) t.bias,
        bias1 = in(reg) t.bias.add(16),
        c = in(reg) t.c,
        c1 = in(reg) t.c.add(16),
        c2 = in(reg) t.c.byte_add(16 * t.ldc),
        c3 = in(reg) t.c.byte_add(16 * t.ldc).add(16),
        ldc = in(reg) t.ldc,
        options(nostack),
    );
}

/// The same for 16 rows (`c`'s first 16 rows).
///
/// # Safety
/// As [`tile_32x32`], with 16 rows of A.
pub(super) unsafe fn tile_16x32(t: &Operands) {
    asm!(
        "tileloadd tmm0, [{bias} + {zero}*1]",
        "tileloadd tmm1, [{bias1} + {zero}*1]",
        "2:",
        "tileloadd tmm4, [{a} + {s64}*1]",
        "tileloadd tmm6, [{b0} + {s64}*1]",
        "tileloadd tmm7, [{b1} + {s64}*1]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "add {a}, 1024",
        "add {b0}, 1024",
        "add {b1}, 1024",
        "dec {n}",
        "jnz 2b",
        "tilestored [{c} + {ldc}*1], tmm0",
        "tilestored [{c1} + {ldc}*1], tmm1",
        a = inout(reg) t.a0 => _,
        b0 = inout(reg) t.b0 => _,
        b1 = inout(reg) t.b1 => _,
        n = inout(reg) t.steps => _,
        s64 = in(reg) 64usize,
        zero = in(reg) 0usize,
        bias = in(reg) t.bias,
        bias1 = in(reg) t.bias.add(16),
        c = in(reg) t.c,
        c1 = in(reg) t.c.add(16),
        ldc = in(reg) t.ldc,
        options(nostack),
    );
}
