//! Keeping secrets out of core dumps and debuggers.
//!
//! The running service holds unsealed private keys during pick-up and sees mailbox and
//! upstream passwords as they arrive. A core dump would write them to disk, and a process of
//! the same user could read them with ptrace or `/proc/<pid>/mem`. At start the service sets
//! the core-file limit to zero and, on Linux, marks itself not dumpable, which also refuses
//! ptrace attachment and access to `/proc/<pid>/mem` by anything without `CAP_SYS_PTRACE`.
//! Both are read back, so a refusal by the kernel (or a sandbox) stops the start instead of
//! leaving the protection silently off.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

#[derive(Debug, thiserror::Error)]
pub enum HardeningError {
    #[error("cannot set the core file size limit to 0: {0}")]
    CoreLimit(#[source] std::io::Error),
    #[error("cannot mark the process as not dumpable (PR_SET_DUMPABLE): {0}")]
    Dumpable(#[source] std::io::Error),
    #[error("the kernel did not apply {0}")]
    NotApplied(&'static str),
}

/// Turns off core dumps and (on Linux) ptrace attachment for this process.
pub fn disable_core_dumps_and_ptrace() -> Result<(), HardeningError> {
    let none = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    setrlimit(Resource::Core, none).map_err(|e| HardeningError::CoreLimit(e.into()))?;
    if getrlimit(Resource::Core).current != Some(0) {
        return Err(HardeningError::NotApplied("RLIMIT_CORE = 0"));
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{dumpable_behavior, set_dumpable_behavior, DumpableBehavior};
        set_dumpable_behavior(DumpableBehavior::NotDumpable)
            .map_err(|e| HardeningError::Dumpable(e.into()))?;
        if !matches!(dumpable_behavior(), Ok(DumpableBehavior::NotDumpable)) {
            return Err(HardeningError::NotApplied("PR_SET_DUMPABLE = 0"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the child process that applies the hardening (it must not touch the test
    /// runner's own process, whose other tests may read `/proc/self`).
    const CHILD: &str = "GATEWAY_HARDENING_TEST_CHILD";
    const NAME: &str = "hardening::tests::hardened_process_is_not_dumpable_and_has_no_core_limit";

    #[test]
    fn hardened_process_is_not_dumpable_and_has_no_core_limit() {
        if std::env::var_os(CHILD).is_some() {
            disable_core_dumps_and_ptrace().expect("hardening applies");
            assert_eq!(getrlimit(Resource::Core).current, Some(0));
            assert_eq!(getrlimit(Resource::Core).maximum, Some(0));
            #[cfg(target_os = "linux")]
            assert_eq!(
                rustix::process::dumpable_behavior().unwrap(),
                rustix::process::DumpableBehavior::NotDumpable
            );
            // What a debugger or a dump tool of the same user would see.
            let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
            let core = limits
                .lines()
                .find(|l| l.starts_with("Max core file size"))
                .unwrap();
            assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
