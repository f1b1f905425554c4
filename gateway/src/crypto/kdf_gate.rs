//! At most as many Argon2id derivations at once as the machine has cores.
//!
//! Each derivation holds `m_cost` of memory (19 MiB by default) while it runs. Unbounded,
//! four archivers logging in together took 80 MiB at once in the budget bench (heaptrack),
//! and a flood of logins from many addresses (each a wrong password, each still derived)
//! could take the blocking pool's 512 threads × 19 MiB. Argon2id is CPU-bound, so more
//! derivations than cores gain no throughput: the gate bounds the memory at cores × m_cost
//! and costs nothing in logins per second. A machine with little memory gets fewer slots
//! than cores (one per 512 MiB), trading logins per second for a lower peak.

use std::sync::{Condvar, Mutex, OnceLock};

/// A counting semaphore that blocks its caller: derivations run on blocking threads.
struct Gate {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Gate {
    fn new(slots: usize) -> Self {
        Self {
            free: Mutex::new(slots.max(1)),
            freed: Condvar::new(),
        }
    }

    fn run<T>(&self, derive: impl FnOnce() -> T) -> T {
        {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            while *free == 0 {
                free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
            }
            *free -= 1;
        }
        // Handed back even if the derivation panics.
        struct Slot<'a>(&'a Gate);
        impl Drop for Slot<'_> {
            fn drop(&mut self) {
                *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                self.0.freed.notify_one();
            }
        }
        let _slot = Slot(self);
        derive()
    }
}

/// Runs one Argon2id derivation when a slot is free.
pub(super) fn run<T>(derive: impl FnOnce() -> T) -> T {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory = crate::host_memory::current().map(|limit| limit.bytes);
        Gate::new(slots(cores, memory))
    })
    .run(derive)
}

/// One derivation per core, and one per [`MEMORY_PER_SLOT`] of the memory the gateway may
/// use; at least one.
fn slots(cores: usize, memory: Option<u64>) -> usize {
    let by_memory = memory.map_or(usize::MAX, |bytes| {
        usize::try_from(bytes / MEMORY_PER_SLOT).unwrap_or(usize::MAX)
    });
    cores.min(by_memory).max(1)
}

/// Memory the gateway may use for each derivation at once. On a 512 MiB machine one
/// derivation at a time: the budget bench's mixed load peaked at 130 MiB with two (four
/// archivers logging in as the load began) and 116 MiB with one, against a 128 MiB target.
const MEMORY_PER_SLOT: u64 = 512 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    #[test]
    fn no_more_derivations_run_at_once_than_the_gate_has_slots() {
        let gate = Arc::new(Gate::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        // The two holding slots meet inside the gate, so both are in at once; a third
        // would count 3.
        let pair = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (gate, running, most, pair) =
                    (gate.clone(), running.clone(), most.clone(), pair.clone());
                std::thread::spawn(move || {
                    gate.run(|| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        pair.wait();
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(*gate.free.lock().unwrap(), 2, "every slot came back");
    }

    #[test]
    fn a_slot_per_core_and_per_512_mib() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(slots(2, Some(24 * 1024 * MIB)), 2);
        assert_eq!(slots(2, Some(512 * MIB)), 1);
        assert_eq!(slots(8, Some(2048 * MIB)), 4);
        assert_eq!(slots(4, Some(100 * MIB)), 1, "always one");
        assert_eq!(slots(4, None), 4);
    }

    #[test]
    fn a_derivation_that_panics_gives_its_slot_back() {
        let gate = Gate::new(1);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            gate.run(|| panic!("derivation failed"))
        }));
        assert!(panicked.is_err());
        assert_eq!(gate.run(|| 7), 7, "the one slot is free again");
    }
}
