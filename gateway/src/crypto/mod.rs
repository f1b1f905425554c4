//! Mailbox cryptography.

/// Fills `buf` from the OS CSPRNG. Failure of the OS generator leaves nothing safe to do, so
/// it aborts the operation with a panic rather than continuing with predictable bytes.
pub fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random number generator failed");
}
