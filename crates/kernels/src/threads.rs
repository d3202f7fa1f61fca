//! A persistent worker pool for the matmuls of one forward pass.
//!
//! A 135M model runs ~250 matmuls per token, each a few µs to a few hundred µs, so waking
//! threads through the OS for every call would cost more than the work. Workers spin for a short
//! while after each job (the next matmul usually follows within microseconds), then park on a
//! condition variable so an idle server does not burn the CPU.
//!
//! A task that panics does not take the pool down: the panic is caught where the task ran, the
//! job's remaining tasks are skipped, and once every helper has left the job the caller of
//! [`Threads::run`] resumes the panic. The pool serves the next job as if nothing happened.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking.
const SPIN: Duration = Duration::from_micros(300);

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// `epoch << 1 | open`: a job is published by storing a new epoch with the open bit, and
    /// closed (no new helpers may join) by clearing it.
    state: AtomicU64,
    /// The current job: (tasks, closure). Written only while no worker can read it.
    job: std::cell::UnsafeCell<(usize, Option<Job>)>,
    next_task: AtomicUsize,
    /// Workers that joined the current job and have not finished.
    active: AtomicUsize,
    sleepers: AtomicUsize,
    /// The first panic of the current job, resumed by the caller once the job is over.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    park: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
}

// The raw job pointer is only read by a worker that joined while the job was open; `run` closes
// the job and waits for those workers before the closure goes away or the cell is rewritten.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// A fixed-size pool; `run` uses the calling thread plus `n - 1` workers.
pub struct Threads {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises callers: one job at a time.
    caller: Mutex<()>,
}

impl Threads {
    /// A pool of `n` threads in total (the caller counts as one); `n == 0` is treated as 1.
    pub fn new(n: usize) -> Self {
        let n = n.max(1);
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: std::cell::UnsafeCell::new((0, None)),
            next_task: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            panic: Mutex::new(None),
            park: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let workers = (1..n)
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("kernels-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("spawning a kernel worker thread")
            })
            .collect();
        Threads {
            shared,
            workers,
            caller: Mutex::new(()),
        }
    }

    /// Number of threads that run tasks, the caller included.
    pub fn len(&self) -> usize {
        self.workers.len() + 1
    }

    /// Always false: a pool has at least the calling thread.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Runs `f(i)` for every `i` in `0..tasks` across the pool (the caller participates) and
    /// returns when all are done. Tasks are handed out dynamically, and the caller does not
    /// wait for a worker that has not joined: on a busy machine a descheduled worker costs
    /// nothing but its share of the speed-up.
    ///
    /// If a task panics, the tasks not yet started are skipped and the panic is resumed here
    /// after the job has closed, so the pool stays usable.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        if self.workers.is_empty() || tasks == 1 {
            (0..tasks).for_each(f);
            return;
        }
        let _one_job = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        let epoch = (s.state.load(Ordering::Relaxed) >> 1) + 1;
        // SAFETY: the previous job is closed and its helpers have left (we waited for
        // `active == 0`), and no worker reads the cell before it joins the open job below.
        // The lifetime is erased; `f` outlives every use because we close the job and wait for
        // the workers that joined before returning.
        unsafe {
            let f: Job = std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f);
            *s.job.get() = (tasks, Some(f));
        }
        s.next_task.store(0, Ordering::Relaxed);
        s.state.store(epoch << 1 | 1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.park.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        run_tasks(s, tasks, f);
        s.state.store(epoch << 1, Ordering::SeqCst);
        let mut spins = 0u32;
        while s.active.load(Ordering::SeqCst) != 0 {
            spins += 1;
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // Every helper has left: the job is over, and the pool is ready for the next one.
        let panic = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
    }
}

/// Runs tasks of the open job until none is left. A panicking task is caught here (a worker
/// must survive it, and the caller must reach the wait for its helpers); the first payload is
/// kept for the caller, and the tasks not yet handed out are skipped.
fn run_tasks(s: &Shared, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    loop {
        let i = s.next_task.fetch_add(1, Ordering::Relaxed);
        if i >= tasks {
            break;
        }
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(i))) {
            s.next_task.store(tasks, Ordering::Relaxed);
            let mut first = s.panic.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert(payload);
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    let fresh = |st: u64, seen: u64| st & 1 == 1 && st >> 1 != seen;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        let mut st = s.state.load(Ordering::Acquire);
        while !fresh(st, seen) && !s.stop.load(Ordering::Relaxed) {
            spins += 1;
            std::hint::spin_loop();
            if spins.is_multiple_of(256) && start.elapsed() > SPIN {
                let mut g = s.park.lock().unwrap_or_else(|e| e.into_inner());
                s.sleepers.fetch_add(1, Ordering::SeqCst);
                while !fresh(s.state.load(Ordering::SeqCst), seen) && !s.stop.load(Ordering::SeqCst)
                {
                    g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                s.sleepers.fetch_sub(1, Ordering::SeqCst);
            }
            st = s.state.load(Ordering::Acquire);
        }
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        seen = st >> 1;
        // Join, then check the job is still open: if it closed meanwhile the caller may not
        // wait for us, so we must not touch it.
        s.active.fetch_add(1, Ordering::SeqCst);
        if s.state.load(Ordering::SeqCst) == st {
            // SAFETY: we joined an open job; `run` waits for us before it returns.
            let (tasks, f) = unsafe { *s.job.get() };
            if let Some(f) = f {
                run_tasks(s, tasks, unsafe { &*f });
            }
        }
        s.active.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.stop.store(true, Ordering::SeqCst);
        {
            let _g = s.park.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl std::fmt::Debug for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Threads").field("len", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_exactly_once() {
        for n in [1, 2, 3] {
            let pool = Threads::new(n);
            assert_eq!(pool.len(), n);
            for tasks in [0, 1, 2, 5, 64] {
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                pool.run(tasks, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn many_short_jobs_back_to_back() {
        // Exercises the join/close race: workers arriving as a job closes must neither run a
        // task twice nor miss the next job.
        let pool = Threads::new(3);
        let count = AtomicUsize::new(0);
        for round in 1..=20_000 {
            pool.run(3, &|_| {
                count.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(count.load(Ordering::Relaxed), 3 * round);
        }
    }

    #[test]
    fn workers_wake_after_parking() {
        let pool = Threads::new(2);
        let sum = AtomicUsize::new(0);
        for round in 0..3 {
            std::thread::sleep(SPIN * 4);
            pool.run(8, &|i| {
                sum.fetch_add(i, Ordering::Relaxed);
            });
            assert_eq!(sum.load(Ordering::Relaxed), 28 * (round + 1));
        }
    }

    /// Runs `body` on a thread and fails (instead of hanging the suite) if it takes over 20 s.
    fn within_20s(body: impl FnOnce() + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            body();
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the pool hung (or the test body panicked)");
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_pool_keeps_working() {
        within_20s(|| {
            for n in [1, 2, 3] {
                let pool = Threads::new(n);
                for bad in [0, 5, 63] {
                    let ran = AtomicUsize::new(0);
                    let result = catch_unwind(AssertUnwindSafe(|| {
                        pool.run(64, &|i| {
                            if i == bad {
                                panic!("injected panic in task {i}");
                            }
                            ran.fetch_add(1, Ordering::Relaxed);
                        })
                    }));
                    let payload = result.expect_err("the caller sees the panic");
                    let text = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_default();
                    assert_eq!(text, format!("injected panic in task {bad}"));
                    assert!(ran.load(Ordering::Relaxed) < 64);
                    // The next jobs run every task, on a pool that is not stuck.
                    for _ in 0..100 {
                        let hits = AtomicUsize::new(0);
                        pool.run(16, &|_| {
                            hits.fetch_add(1, Ordering::Relaxed);
                        });
                        assert_eq!(hits.load(Ordering::Relaxed), 16);
                    }
                }
            }
        });
    }

    #[test]
    fn uses_more_than_one_thread() {
        let pool = Threads::new(2);
        let ids = Mutex::new(std::collections::HashSet::new());
        // Each task waits until a second thread has shown up (or 10 s pass, on a machine too
        // busy to schedule the worker), so the caller cannot run every task alone.
        pool.run(4, &|_| {
            ids.lock().unwrap().insert(std::thread::current().id());
            let start = Instant::now();
            while ids.lock().unwrap().len() < 2 && start.elapsed() < Duration::from_secs(10) {
                std::thread::yield_now();
            }
        });
        assert_eq!(ids.lock().unwrap().len(), 2);
    }
}
