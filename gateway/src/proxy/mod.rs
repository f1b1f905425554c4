//! Proxy mode: the gateway between mail clients and their provider.

pub mod pop3_client;
