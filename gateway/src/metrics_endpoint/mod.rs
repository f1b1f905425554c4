//! `/metrics`: the scrape of this moment's state, and the HTTP endpoints that serve it.
//!
//! [`crate::metrics`] holds the counters and knows nothing above them. Gauges that need a
//! look at the store (mailboxes, messages waiting, the oldest message's age, store size,
//! free disk space) and the certificate's remaining lifetime are computed here at scrape
//! time ([`gauges`], read by [`scrape`]), so they are never stale and cost nothing between
//! scrapes; reading the service and the certificate puts this module above both.
//!
//! The text is served at `/metrics` on the console listener (behind the API's
//! authentication, [`crate::console_listener`]) and, when `[metrics] listen` is set, on a
//! plain-HTTP listener meant for a scraper on the same machine ([`http`]).

pub mod gauges;
pub mod http;
#[cfg(test)]
mod tests;

pub use gauges::{scrape, ScrapeSources};
