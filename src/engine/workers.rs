//! Threads for a task's items, and the CPU slots every running task shares.
//!
//! A task's items run on as many threads as the work needs and its limit allows, the
//! calling thread among them, started when the task starts and ended when it ends: a no-op
//! run starts none, and `--workers 100000` cannot start more threads than there are items.
//! A thread that cannot be started (the machine is out of threads or process ids) is
//! logged and done without: the items run on the threads there are, at worst on the
//! caller's alone, never a panic.
//!
//! Sessions of one pass run side by side, each with its own threads; [`Slots`] makes them
//! share `--workers` CPU slots, so the process never does more CPU work at once than asked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

/// A counting semaphore: at most `limit` holders at once.
pub struct Slots {
    limit: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

/// One held slot, given back when dropped.
pub struct Slot<'a>(&'a Slots);

impl Slots {
    pub fn new(limit: usize) -> Slots {
        Slots {
            limit: limit.max(1),
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Waits for a free slot.
    pub fn acquire(&self) -> Slot<'_> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used >= self.limit {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut used = self.0.used.lock().unwrap_or_else(|p| p.into_inner());
        *used -= 1;
        self.0.freed.notify_one();
    }
}

/// Runs `job(i)` for every `i` in `0..count` on up to `threads` threads (the caller's
/// included), each taking the next index until none is left or `stop()` says to start no
/// more. Returns each job's result by index; `None` for jobs never started.
pub fn run_all<T: Send>(
    count: usize,
    threads: usize,
    job: impl Fn(usize) -> T + Sync,
    stop: impl Fn() -> bool + Sync,
) -> Vec<Option<T>> {
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<T>>> = (0..count).map(|_| Mutex::new(None)).collect();
    let work = || {
        loop {
            if stop() {
                break;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                break;
            }
            let result = job(i);
            *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        }
    };
    let threads = threads.clamp(1, count.max(1));
    std::thread::scope(|scope| {
        for n in 1..threads {
            let spawned = std::thread::Builder::new()
                .name(format!("worker-{n}"))
                .spawn_scoped(scope, work);
            if let Err(e) = spawned {
                tracing::warn!(
                    "started {n} of {threads} worker threads ({e}); going on with those"
                );
                break;
            }
        }
        work();
    });
    results
        .into_iter()
        .map(|r| r.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_runs_once_and_stop_leaves_the_rest() {
        let ran = AtomicUsize::new(0);
        let out = run_all(
            50,
            4,
            |i| {
                ran.fetch_add(1, Ordering::Relaxed);
                i * 2
            },
            || false,
        );
        assert_eq!(ran.load(Ordering::Relaxed), 50);
        assert!(out.iter().enumerate().all(|(i, r)| *r == Some(i * 2)));

        let started = AtomicUsize::new(0);
        let out = run_all(
            50,
            1,
            |_| started.fetch_add(1, Ordering::Relaxed),
            || started.load(Ordering::Relaxed) >= 5,
        );
        assert_eq!(out.iter().filter(|r| r.is_some()).count(), 5);
    }

    #[test]
    fn no_more_threads_start_than_there_are_jobs() {
        let threads = Mutex::new(std::collections::HashSet::new());
        run_all(
            2,
            256,
            |_| {
                threads.lock().unwrap().insert(std::thread::current().id());
                std::thread::sleep(std::time::Duration::from_millis(20));
            },
            || false,
        );
        assert!(threads.lock().unwrap().len() <= 2);
        assert!(run_all(0, 256, |i| i, || false).is_empty());
    }

    #[test]
    fn slots_bound_the_holders() {
        let slots = Slots::new(2);
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        run_all(
            40,
            8,
            |_| {
                let _slot = slots.acquire();
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(1));
                inside.fetch_sub(1, Ordering::SeqCst);
            },
            || false,
        );
        assert!(most.load(Ordering::SeqCst) <= 2);
    }
}
