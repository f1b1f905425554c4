//! ACME (RFC 8555): obtaining and renewing the certificate.

pub mod renewal;
