//! What SMTP and POP3 share on the wire, in both directions (server sessions and the
//! proxy's upstream clients), written once.
//!
//! - [`dot`]: dot-stuffing of message bodies, strict for DATA and repairing for RETR/TOP.
//! - [`sasl`]: SASL response lines (RFC 4954 §4, RFC 5034 §4) and the PLAIN mechanism
//!   (RFC 4616), decoding and encoding.

pub mod dot;
pub mod sasl;
