//! One memory budget for the decoded pages of the whole process.
//!
//! Each worker decodes one collage page at a time, so without a budget peak memory grows
//! with `--workers` (and with sessions run side by side): 64 workers on 12 MB pages hold
//! 1.5 GB. A worker reserves a page's bytes before it decodes it and gives them back when
//! the page is dropped; when the budget is spent, it waits. A single page larger than the
//! whole budget still runs, alone, so that no page can wait forever.
//!
//! The pages' buffers are kept here too, for the next page whichever worker decodes it:
//! freed by the thread that used them, buffers of this size would otherwise stay in that
//! thread's allocator arena, and the process would hold one page per worker however small
//! the budget.

use std::sync::{Condvar, Mutex, OnceLock};

/// The budget unless `--memory-limit` says otherwise.
pub const DEFAULT_MIB: usize = 512;
/// The smallest budget accepted: one large page and its crops.
pub const MIN_MIB: usize = 64;
/// The largest budget accepted (1 TiB).
pub const MAX_MIB: usize = 1 << 20;

pub struct MemoryBudget {
    limit: Mutex<usize>,
    used: Mutex<usize>,
    freed: Condvar,
    /// Buffers given back, for reuse; never more bytes than the limit.
    spare: Mutex<Vec<Vec<u8>>>,
}

/// Bytes reserved from a budget, given back when dropped.
pub struct Reservation {
    budget: &'static MemoryBudget,
    bytes: usize,
}

impl MemoryBudget {
    const fn new(limit: usize) -> MemoryBudget {
        MemoryBudget {
            limit: Mutex::new(limit),
            used: Mutex::new(0),
            freed: Condvar::new(),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// A zeroed buffer of `len` bytes, reusing a spare one when one is large enough.
    pub fn buffer(&self, len: usize) -> Vec<u8> {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        let best = spare
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let mut buffer = match best {
            Some(i) => spare.swap_remove(i),
            None => {
                drop(spare);
                Vec::with_capacity(len)
            }
        };
        buffer.clear();
        buffer.resize(len, 0);
        buffer
    }

    /// Keeps `buffer` for [`MemoryBudget::buffer`], unless the spares would exceed the
    /// limit (then the largest spares go back to the system).
    pub fn give_back(&self, buffer: Vec<u8>) {
        if buffer.capacity() == 0 {
            return;
        }
        let limit = self.limit();
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        spare.push(buffer);
        spare.sort_by_key(|b| b.capacity());
        while spare.iter().map(Vec::capacity).sum::<usize>() > limit {
            spare.pop();
        }
    }

    /// The process's budget for decoded pages.
    pub fn pages() -> &'static MemoryBudget {
        static PAGES: OnceLock<MemoryBudget> = OnceLock::new();
        PAGES.get_or_init(|| MemoryBudget::new(DEFAULT_MIB << 20))
    }

    /// Sets the limit, in bytes.
    pub fn set_limit(&self, bytes: usize) {
        *self.limit.lock().unwrap_or_else(|p| p.into_inner()) = bytes.max(1);
        self.freed.notify_all();
    }

    pub fn limit(&self) -> usize {
        *self.limit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes reserved right now.
    pub fn in_use(&self) -> usize {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `bytes` fit (or nothing else is reserved), then reserves them.
    pub fn reserve(&'static self, bytes: usize) -> Reservation {
        let limit = self.limit();
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used > 0 && used.saturating_add(bytes) > limit {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += bytes;
        Reservation {
            budget: self,
            bytes,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|p| p.into_inner());
        *used -= self.bytes;
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn reservations_wait_for_the_budget_and_an_oversized_one_runs_alone() {
        let budget: &'static MemoryBudget = Box::leak(Box::new(MemoryBudget::new(100)));
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..20 {
                        let _held = budget.reserve(40);
                        let now = inside.fetch_add(40, Ordering::SeqCst) + 40;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_micros(200));
                        inside.fetch_sub(40, Ordering::SeqCst);
                    }
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= 100, "never above the budget");
        assert_eq!(budget.in_use(), 0);
        let alone = budget.reserve(1000);
        assert_eq!(budget.in_use(), 1000);
        drop(alone);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn buffers_are_reused_and_spares_stay_within_the_limit() {
        let budget = MemoryBudget::new(100);
        let first = budget.buffer(60);
        let address = first.as_ptr();
        budget.give_back(first);
        let again = budget.buffer(50);
        assert_eq!(again.as_ptr(), address, "the spare is reused");
        assert!(again.len() == 50 && again.iter().all(|&b| b == 0));
        budget.give_back(again);
        budget.give_back(vec![1; 80]);
        let kept: usize = budget.spare.lock().unwrap().iter().map(Vec::capacity).sum();
        assert!(kept <= 100, "{kept}");
    }
}
