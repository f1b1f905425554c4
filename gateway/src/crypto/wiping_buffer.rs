//! An input buffer that can forget what it held.
//!
//! A `Vec<u8>` that drains consumed bytes from its front leaves copies of them behind: in the
//! spare capacity after the memmove, and in the old allocation whenever it grows. For protocol
//! input that carries passwords (SMTP AUTH, POP3 PASS and SASL responses) that is a password
//! lying in freed or unused memory until something overwrites it. This buffer keeps all of
//! its storage initialised, grows by copying into a fresh allocation and wiping the old one,
//! and wipes everything past its contents when told the consumed bytes were a credential.
//! Message data goes through the same buffer without the wipe, so it costs nothing extra.

use std::ops::Deref;

use zeroize::{Zeroize, Zeroizing};

/// Smallest allocation, so a command session does not regrow for every line.
const MIN_CAPACITY: usize = 512;

#[derive(Debug, Default)]
pub struct WipingBuffer {
    /// Fully initialised; bytes past `len` are stale or zero.
    storage: Zeroizing<Vec<u8>>,
    len: usize,
}

impl WipingBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `data`, moving to a larger allocation (and wiping the old one) when needed.
    pub fn push(&mut self, data: &[u8]) {
        let needed = self.len + data.len();
        if needed > self.storage.len() {
            let mut bigger = Zeroizing::new(vec![0; needed.next_power_of_two().max(MIN_CAPACITY)]);
            bigger[..self.len].copy_from_slice(&self.storage[..self.len]);
            // The old allocation is wiped as it drops.
            self.storage = bigger;
        }
        self.storage[self.len..needed].copy_from_slice(data);
        self.len = needed;
    }

    /// Removes the first `n` bytes (message data: no wipe).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.storage.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// Removes and returns the first `n` bytes (message data: no wipe).
    pub fn take_front(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.len);
        let front = self.storage[..n].to_vec();
        self.consume(n);
        front
    }

    /// Removes and returns the first `n` bytes, which may hold a credential: the returned
    /// copy wipes itself, and every stale byte left in the storage is wiped now.
    pub fn take_front_wiping(&mut self, n: usize) -> Zeroizing<Vec<u8>> {
        let n = n.min(self.len);
        let front = Zeroizing::new(self.storage[..n].to_vec());
        self.consume(n);
        self.wipe_stale();
        front
    }

    /// Forgets and wipes everything.
    pub fn clear(&mut self) {
        self.len = 0;
        self.wipe_stale();
    }

    /// Removes everything, handing it on (to the proxy after a login); nothing stays behind.
    pub fn take_all(&mut self) -> Zeroizing<Vec<u8>> {
        self.take_front_wiping(self.len)
    }

    fn wipe_stale(&mut self) {
        let len = self.len;
        self.storage[len..].zeroize();
    }

    /// The whole allocation, stale bytes included: what a memory dump would find.
    #[cfg(test)]
    pub(crate) fn storage(&self) -> &[u8] {
        &self.storage
    }
}

impl Deref for WipingBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.storage[..self.len]
    }
}

/// Decodes base64 that may hold a credential (a SASL response) straight into a buffer that
/// wipes itself, so neither success nor a failure half-way leaves decoded bytes behind.
pub fn decode_secret(
    encoding: &data_encoding::Encoding,
    input: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let capacity = encoding.decode_len(input.len()).ok()?;
    let mut out = Zeroizing::new(vec![0; capacity]);
    let len = encoding.decode_mut(input, &mut out).ok()?;
    out.truncate(len);
    Some(out)
}

/// Whether `needle` occurs anywhere in `haystack` (for tests that look for a secret).
#[cfg(test)]
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wiped_line_leaves_no_copy_in_the_storage() {
        let mut buf = WipingBuffer::new();
        buf.push(b"PASS hunter2-secret\r\nST");
        let line = buf.take_front_wiping(21);
        assert_eq!(&line[..], b"PASS hunter2-secret\r\n");
        assert_eq!(&buf[..], b"ST");
        assert!(!contains(buf.storage(), b"hunter2"));
    }

    #[test]
    fn growing_keeps_the_contents_and_wipes_the_old_allocation_contents_on_take() {
        let mut buf = WipingBuffer::new();
        buf.push(b"AUTH PLAIN c2VjcmV0");
        buf.push(&[b'x'; 2000]);
        assert_eq!(buf.len(), 19 + 2000);
        assert!(buf.starts_with(b"AUTH PLAIN c2VjcmV0"));
        drop(buf.take_front_wiping(19));
        assert!(!contains(buf.storage(), b"c2VjcmV0"));
        assert_eq!(buf.len(), 2000);
    }

    #[test]
    fn decodes_secrets_like_the_encoding_does() {
        let b64 = &data_encoding::BASE64;
        for raw in [&b""[..], b"\0u\0p", b"a longer secret value"] {
            let encoded = b64.encode(raw);
            assert_eq!(&*decode_secret(b64, encoded.as_bytes()).unwrap(), raw);
        }
        assert!(decode_secret(b64, b"not base64!").is_none());
        assert!(decode_secret(b64, b"AGEAYg").is_none());
        assert_eq!(
            &*decode_secret(&data_encoding::BASE64_NOPAD, b"AGEAYg").unwrap(),
            b"\0a\0b"
        );
    }

    #[test]
    fn plain_consumption_keeps_order_and_clear_wipes() {
        let mut buf = WipingBuffer::new();
        buf.push(b"abcdef");
        buf.consume(2);
        assert_eq!(buf.take_front(2), b"cd");
        assert_eq!(&buf[..], b"ef");
        buf.consume(10);
        assert!(buf.is_empty());
        buf.push(b"secret");
        buf.clear();
        assert!(buf.is_empty());
        assert!(buf.storage().iter().all(|&b| b == 0));
        buf.push(b"xyz");
        assert_eq!(&*buf.take_all(), b"xyz");
        assert!(buf.storage().iter().all(|&b| b == 0));
    }
}
