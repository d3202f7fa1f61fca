//! How a matmul's weight rows are shared out among the pool's tasks.

/// `rows` weight rows split into contiguous ranges of whole `align`-row units (strips), one
/// per task.
#[derive(Clone, Copy)]
pub(crate) struct RowSplit {
    rows: usize,
    align: usize,
    units: usize,
    pub(crate) tasks: usize,
}

impl RowSplit {
    pub(crate) fn new(rows: usize, threads: usize, align: usize) -> Self {
        let units = rows.div_ceil(align);
        // At least 32 rows a task.
        let most = (rows / 32).clamp(1, units);
        // A few tasks per thread balances a thread that gets descheduled; a count that is a
        // multiple of the threads and divides the units evenly gives every thread the same
        // share (36 strips on 2 threads as 7 x 5 + 1 left one thread 20 strips to do, and
        // prefill ran about 15% slower).
        let tasks = (1..=4)
            .rev()
            .map(|k| threads * k)
            .find(|&t| t <= most && units.is_multiple_of(t))
            .unwrap_or((threads * 4).min(most));
        RowSplit {
            rows,
            align,
            units,
            tasks,
        }
    }

    /// The rows of task `t`: its share of the units, within one unit of every other task's.
    pub(crate) fn range(self, t: usize) -> std::ops::Range<usize> {
        let at = |t: usize| (t * self.units / self.tasks * self.align).min(self.rows);
        at(t)..at(t + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::RowSplit;

    /// The ranges cover every row once, in order, in whole units, and where the units allow,
    /// every thread gets the same share.
    #[test]
    fn ranges_cover_the_rows_in_whole_equal_units() {
        for (rows, threads, align) in [(576, 2, 16), (960, 2, 16), (49152, 16, 16), (40, 2, 1)] {
            let split = RowSplit::new(rows, threads, align);
            let mut next = 0;
            let mut sizes = Vec::new();
            for t in 0..split.tasks {
                let r = split.range(t);
                assert_eq!(r.start, next);
                assert!(
                    r.start.is_multiple_of(align) && (r.end.is_multiple_of(align) || r.end == rows)
                );
                sizes.push(r.len());
                next = r.end;
            }
            assert_eq!(next, rows, "{rows} rows");
            if split.tasks.is_multiple_of(threads) && rows >= 32 * threads {
                assert!(
                    sizes.iter().all(|&s| s == sizes[0]),
                    "{rows} rows: {sizes:?}"
                );
            }
        }
        // 36 strips on 2 threads: 6 tasks of 6 strips, not 7 of 5 and one of 1.
        assert_eq!(RowSplit::new(576, 2, 16).tasks, 6);
    }
}
