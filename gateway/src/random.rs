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

/// Ids as a function of a seed, for the deterministic simulation: ids are keys in the store,
/// so their order shapes redb's pages and, through them, what a simulated crash tears. The
/// simulation runs all its hosts on one thread, hence a thread-local generator.
#[cfg(feature = "test-support")]
pub mod seeded_ids {
    use std::cell::Cell;

    thread_local! {
        static STATE: Cell<Option<u64>> = const { Cell::new(None) };
    }

    /// Ids made on this thread follow `seed` from now on; `None` returns to the OS generator.
    pub fn set(seed: Option<u64>) {
        STATE.with(|state| state.set(seed));
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
