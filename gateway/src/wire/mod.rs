//! What SMTP and POP3 share on the wire, in both directions (server sessions and the
//! proxy's upstream clients), written once.
//!
//! - [`dot`]: dot-stuffing of message bodies, strict for DATA and lenient (repairing) for
//!   RETR/TOP.
//! - [`undot`]: dot-un-stuffing, strict for the SMTP server's DATA and BDAT, lenient for the
//!   POP3 client reading RETR/TOP from an upstream.
//! - [`line`](mod@line): bounded line framing (LF or strict CRLF, a limit per protocol direction).
//! - [`sasl`]: SASL response lines (RFC 4954 §4, RFC 5034 §4) and the PLAIN mechanism
//!   (RFC 4616), decoding and encoding.

pub mod dot;
pub mod line;
pub mod sasl;
pub mod undot;
