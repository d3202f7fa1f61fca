//! The int8 matmul's driver: quantize the activations once, then split the weight rows over
//! the pool, each task running the kernels of the instruction set in use.

use super::*;
use crate::{Isa, Threads};

/// Buffers reused across calls.
#[derive(Default)]
pub(crate) struct Scratch {
    act: Vec<AGroup>,
    /// The activations in the decode dots' 512-bit layout, when `wants_wide`.
    wide: Vec<XWide>,
    /// The activations' [`Sums16`], when `wants_sums`.
    sums: Vec<Sums16>,
    /// One unpacked weight row per task.
    rows: Vec<RowBufs>,
}

/// `out = x · Wᵀ` on the int8 path `isa` (Avx2 or Avx512Vnni; the caller checked the CPU and
/// that `m` and the rows are not zero).
pub(crate) fn matmul(
    isa: Isa,
    w: &QMatrix,
    x: &[f32],
    m: usize,
    out: &mut [f32],
    scratch: &mut Scratch,
    threads: &Threads,
) {
    let (rows, cols) = (w.rows, w.cols);
    let vnni = isa == Isa::Avx512Vnni;
    let ngroups = (cols / 32).div_ceil(GROUP);

    // Quantize the activations, rows split across the pool when there are many.
    scratch.act.resize(m * ngroups, ZERO_A);
    {
        let act = SharedMut(scratch.act.as_mut_ptr());
        let per = m.div_ceil(threads.len()).max(8);
        threads.run(m.div_ceil(per), &|t| {
            for i in t * per..((t + 1) * per).min(m) {
                // SAFETY: task t owns activation rows [t*per, (t+1)*per).
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(act.get().add(i * ngroups), ngroups) };
                let src = &x[i * cols..(i + 1) * cols];
                unsafe {
                    if vnni {
                        vnni::quantize_row(src, dst)
                    } else {
                        avx2::quantize_row(src, dst)
                    }
                }
            }
        });
    }

    // Made once per call rather than by every task.
    let strips = w.layout == crate::Layout::Strips;
    scratch.wide.clear();
    if wants_wide(w.ty, m, vnni) && !strips {
        scratch.wide.extend(scratch.act.iter().map(XWide::of));
    }
    scratch.sums.clear();
    if wants_sums(w.ty, m, vnni) {
        scratch.sums.extend(scratch.act.iter().map(Sums16::of));
    }

    // Tasks take whole strips.
    let align = if strips { pack::STRIP } else { 1 };
    let split = crate::split::RowSplit::new(rows, threads.len(), align);
    scratch.rows.resize_with(split.tasks, Default::default);
    let bufs = SharedMut(scratch.rows.as_mut_ptr());
    let outp = SharedMut(out.as_mut_ptr());
    let acts = Acts {
        groups: &scratch.act,
        wide: &scratch.wide,
        sums: &scratch.sums,
    };
    threads.run(split.tasks, &|t| {
        // SAFETY: task t owns buffer t and output columns split.range(t) of every row.
        let buf = unsafe { &mut *bufs.get().add(t) };
        let range = split.range(t);
        unsafe {
            if strips && vnni {
                strips::rows_task(w, acts.groups, m, ngroups, range, outp, &mut buf.3)
            } else if strips {
                strips::avx2::rows_task(w, acts.groups, m, ngroups, range, outp, &mut buf.2)
            } else if vnni {
                vnni::rows_task(w, acts, m, ngroups, range, outp, buf)
            } else {
                avx2::rows_task(w, acts, m, ngroups, range, outp, buf)
            }
        }
    });
}
