//! The open-files limit: every connection is a descriptor (a proxied one two), so a gateway
//! started with the common soft limit of 1024 runs out long before `max_connections`.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Descriptors kept aside for the store, logs, listeners and certificates.
const BASE_DESCRIPTORS: u64 = 256;

/// Descriptors the configured limits may use at once: SMTP and POP3 connections with an
/// upstream leg each (proxy mode), and the console's connections.
pub fn descriptors_needed(max_connections: u32) -> u64 {
    u64::from(max_connections) * (2 + 2 + 1) + BASE_DESCRIPTORS
}

/// The open-files limit before and after [`raise_open_files_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub before: u64,
    pub now: u64,
}

impl OpenFiles {
    /// Whether `needed` descriptors fit.
    pub fn suffices(&self, needed: u64) -> bool {
        self.now >= needed
    }
}

/// Raises the soft open-files limit to the hard one (what an unprivileged process may do):
/// the soft limit exists for programs that use `select`, which the gateway does not.
pub fn raise_open_files_limit() -> std::io::Result<OpenFiles> {
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(u64::MAX);
    if limit.current == limit.maximum {
        return Ok(OpenFiles {
            before,
            now: before,
        });
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )?;
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    Ok(OpenFiles { before, now })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let limits = raise_open_files_limit().unwrap();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(now.current, now.maximum);
        assert_eq!(limits.now, now.current.unwrap_or(u64::MAX));
        assert!(limits.now >= limits.before);
    }

    #[test]
    fn the_default_limits_need_more_than_the_common_soft_limit() {
        // 500 connections per protocol (the default) with proxy legs.
        let needed = descriptors_needed(500);
        assert_eq!(needed, 2756);
        let common = OpenFiles {
            before: 1024,
            now: 1024,
        };
        assert!(!common.suffices(needed));
        assert!(OpenFiles {
            before: 1024,
            now: 65536
        }
        .suffices(needed));
    }
}
