//! Randomness: the OS CSPRNG for keys, salts, nonces and passwords, and for identifiers
//! (mailbox, message, SMTP session, API key, job) unless the simulation seeded them.
//!
//! Its own module, below [`crate::crypto`] and [`crate::mailbox`], because both need it:
//! mailbox ids are random, and the crypto binds every record to a mailbox id.

/// Fills `buf` from the OS CSPRNG. Failure of the OS generator leaves nothing safe to do, so
/// it aborts the operation with a panic rather than continuing with predictable bytes.
pub fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random number generator failed");
}

/// Fills `buf` for an identifier (mailbox, message, SMTP session): from the OS CSPRNG, so ids
/// cannot be guessed, except where a test-support build seeded `seeded_ids` on this thread.
/// Keys, salts, nonces and passwords always come from [`fill_random`].
pub fn fill_random_id(buf: &mut [u8]) {
    #[cfg(feature = "test-support")]
    if seeded_ids::fill(buf) {
        return;
    }
    fill_random(buf);
}

/// The leading, ordering part of a time-ordered id made at `unix_ms`: that time, except in a
/// seeded simulation, where the real clock would make the store's key order (and so its
/// pages) differ from run to run, and a count of the ids made so far stands in for it.
pub fn id_order(unix_ms: u64) -> u64 {
    #[cfg(feature = "test-support")]
    if let Some(count) = seeded_ids::next_order() {
        return count;
    }
    unix_ms
}

/// Ids as a function of a seed, for the deterministic simulation: ids are keys in the store,
/// so their order shapes redb's pages and, through them, what a simulated crash tears. The
/// simulation runs all its hosts on one thread, hence a thread-local generator.
#[cfg(feature = "test-support")]
pub mod seeded_ids {
    use std::cell::Cell;

    thread_local! {
        static STATE: Cell<Option<u64>> = const { Cell::new(None) };
        static ORDER: Cell<u64> = const { Cell::new(0) };
    }

    /// Ids made on this thread follow `seed` from now on; `None` returns to the OS generator.
    pub fn set(seed: Option<u64>) {
        STATE.with(|state| state.set(seed));
        ORDER.with(|order| order.set(0));
    }

    /// With a seed, the next in a count that orders time-ordered ids.
    pub(super) fn next_order() -> Option<u64> {
        STATE.with(|state| state.get())?;
        Some(ORDER.with(|order| {
            let next = order.get() + 1;
            order.set(next);
            next
        }))
    }

    /// SplitMix64; predictable on purpose, never used without a seed.
    pub(super) fn fill(buf: &mut [u8]) -> bool {
        STATE.with(|state| {
            let Some(mut x) = state.get() else {
                return false;
            };
            for piece in buf.chunks_mut(8) {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                piece.copy_from_slice(&z.to_le_bytes()[..piece.len()]);
            }
            state.set(Some(x));
            true
        })
    }
}

#[cfg(all(test, feature = "test-support"))]
mod tests {
    use super::*;

    /// A seeded simulation orders ids by a count, not the clock, and starts it over with
    /// each seed, so two runs of one seed lay out the store alike.
    #[test]
    fn seeded_ids_order_by_a_count_that_restarts_with_the_seed() {
        seeded_ids::set(Some(7));
        let first: Vec<u64> = (0..3).map(|_| id_order(99)).collect();
        seeded_ids::set(Some(7));
        let again: Vec<u64> = (0..3).map(|_| id_order(99)).collect();
        seeded_ids::set(None);
        assert_eq!(first, vec![1, 2, 3]);
        assert_eq!(first, again);
        assert_eq!(id_order(99), 99, "unseeded: the time");
    }
}
