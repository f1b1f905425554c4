//! The console's pages, one file per page or group of pages.

pub mod certificate;
mod format;
pub mod login;
pub mod mailboxes;
pub mod settings;
pub mod status;
mod table;
