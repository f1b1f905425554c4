//! A memory limit around the gateway child: the budget's 512 MiB, enforced by the kernel.
//!
//! Mechanisms, tried in this order (the first that can be set up wins; the report says which
//! and why the earlier ones were passed over):
//! 1. `systemd-run --scope -p MemoryMax=...`: only where systemd is PID 1
//!    (`/run/systemd/system` exists, as `sd_booted` checks) and `systemd-run` is installed;
//! 2. a cgroup v2 group of our own (`/sys/fs/cgroup/cgroup.controllers` lists `memory` and
//!    the root's `cgroup.subtree_control` hands it down): `memory.max`, `memory.peak`,
//!    `memory.events`;
//! 3. a cgroup v1 memory group, nested under the runner's own memory cgroup:
//!    `memory.limit_in_bytes`, `memory.max_usage_in_bytes`, `memory.failcnt`,
//!    `memory.oom_control`;
//! 4. `prlimit --as`: RLIMIT_AS caps virtual address space, not memory in use. It is much
//!    weaker: a multi-threaded runtime reserves far more address space than it touches, and
//!    going over it makes an allocation fail (an abort) rather than a kill by the OOM killer.
//!    Measured (`budget_bench --quick --rlimit`): at 512 MiB of address space the gateway's
//!    POP3 login already fails, its Argon2id derivation refused memory ("out of memory").
//!
//! With a cgroup the child joins the group before it allocates anything: the wrapper is a
//! `sh -c` that writes its own pid into `cgroup.procs` and then `exec`s the gateway. The
//! group is removed when the [`MemoryLimit`] is dropped (after the child exited). A cgroup's
//! usage includes the page cache the gateway's writes leave behind; the kernel reclaims that
//! before it kills, so the peak usage is an upper bound on what the gateway needed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// How the limit is enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    SystemdRun,
    /// A cgroup v2 group at this directory.
    CgroupV2(PathBuf),
    /// A cgroup v1 memory group at this directory.
    CgroupV1(PathBuf),
    /// `prlimit --as` (RLIMIT_AS).
    Rlimit,
}

impl Mechanism {
    pub fn label(&self) -> &'static str {
        match self {
            Mechanism::SystemdRun => "systemd-run scope (MemoryMax)",
            Mechanism::CgroupV2(_) => "cgroup v2 (memory.max)",
            Mechanism::CgroupV1(_) => "cgroup v1 (memory.limit_in_bytes)",
            Mechanism::Rlimit => "prlimit --as (RLIMIT_AS)",
        }
    }

    /// What the mechanism means for the figures, for the report.
    pub fn meaning(&self) -> &'static str {
        match self {
            Mechanism::SystemdRun | Mechanism::CgroupV2(_) | Mechanism::CgroupV1(_) => {
                "the kernel charges the gateway's resident memory and page cache to the group; \
                 it reclaims cache at the limit and kills the gateway (OOM) if that is not \
                 enough, which the group's oom_kill counter and the child's SIGKILL show"
            }
            Mechanism::Rlimit => {
                "only the gateway's virtual address space is capped, not its resident memory; \
                 an allocation beyond it fails (the process aborts) and there is no counter \
                 of usage: the peak is the process's own VmHWM"
            }
        }
    }
}

/// The candidate mechanisms in order of preference, from what the file system under `root`
/// (`/` in real use) shows. `self_cgroup` is the text of `/proc/self/cgroup`;
/// `systemd_run_installed`: whether `systemd-run` is on the PATH. Ends with [`Mechanism::Rlimit`].
pub fn candidates(
    root: &Path,
    self_cgroup: &str,
    systemd_run_installed: bool,
    name: &str,
) -> Vec<Mechanism> {
    let mut found = Vec::new();
    if systemd_run_installed && root.join("run/systemd/system").is_dir() {
        found.push(Mechanism::SystemdRun);
    }
    let fs = root.join("sys/fs/cgroup");
    let lists_memory = |file: &Path| {
        std::fs::read_to_string(file).is_ok_and(|t| t.split_whitespace().any(|c| c == "memory"))
    };
    if lists_memory(&fs.join("cgroup.controllers"))
        && lists_memory(&fs.join("cgroup.subtree_control"))
    {
        found.push(Mechanism::CgroupV2(fs.join(name)));
    }
    let v1 = fs.join("memory");
    if v1.join("memory.limit_in_bytes").is_file() {
        // Nested under our own group, so whoever accounts for the runner still sees the
        // gateway; at the top of the hierarchy when we cannot tell where we are.
        let own = self_cgroup
            .lines()
            .find_map(|line| {
                // hierarchy-id:controllers:path
                let mut fields = line.splitn(3, ':').skip(1);
                let (controllers, path) = (fields.next()?, fields.next()?);
                controllers
                    .split(',')
                    .any(|c| c == "memory")
                    .then_some(path)
            })
            .map(|path| path.trim_start_matches('/'))
            .unwrap_or("");
        let parent = if own.is_empty() {
            v1.clone()
        } else {
            v1.join(own)
        };
        found.push(Mechanism::CgroupV1(parent.join(name)));
    }
    found.push(Mechanism::Rlimit);
    found
}

/// A number from a `key value` line of a cgroup file (`memory.events`, `memory.oom_control`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A file holding one number (`memory.peak`, `memory.max_usage_in_bytes`).
fn number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// What the group's counters say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Peak usage of the group in bytes (page cache included), where the kernel keeps one.
    pub peak: Option<u64>,
    /// Times the usage hit the limit (v1 `failcnt`, v2 `max` events).
    pub hit_limit: Option<u64>,
    /// Processes the OOM killer killed in the group.
    pub oom_kills: Option<u64>,
    /// Anonymous memory (heaps, stacks: no page cache) charged to the group when read.
    pub anon: Option<u64>,
}

/// Reads the counters of the group at `dir` (`v2`: cgroup v2 file names).
pub fn read_counters(dir: &Path, v2: bool) -> Counters {
    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    if v2 {
        let events = std::fs::read_to_string(dir.join("memory.events")).unwrap_or_default();
        Counters {
            peak: number(&dir.join("memory.peak")),
            hit_limit: keyed(&events, "max"),
            oom_kills: keyed(&events, "oom_kill"),
            anon: keyed(&stat, "anon"),
        }
    } else {
        let oom = std::fs::read_to_string(dir.join("memory.oom_control")).unwrap_or_default();
        Counters {
            peak: number(&dir.join("memory.max_usage_in_bytes")),
            hit_limit: number(&dir.join("memory.failcnt")),
            oom_kills: keyed(&oom, "oom_kill"),
            // The group has no children: its own rss is all there is.
            anon: keyed(&stat, "rss"),
        }
    }
}

/// The memory limit in force around the gateway child.
#[derive(Debug)]
pub struct MemoryLimit {
    pub mechanism: Mechanism,
    pub bytes: u64,
    /// Why each earlier candidate was passed over.
    pub passed_over: Vec<String>,
    /// Whether we created a group directory that must be removed.
    created: bool,
}

impl MemoryLimit {
    /// Sets up the first mechanism that works for a limit of `bytes`; the group (if any) is
    /// named `name`. `rlimit_only`: skip the others (to try the last resort where a cgroup
    /// would do).
    pub fn establish(bytes: u64, name: &str, rlimit_only: bool) -> anyhow::Result<Self> {
        let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let systemd_run = on_path("systemd-run");
        let mut found = candidates(Path::new("/"), &self_cgroup, systemd_run, name);
        let mut passed_over = Vec::new();
        if rlimit_only {
            found.retain(|m| *m == Mechanism::Rlimit);
            passed_over.push("the others: asked for RLIMIT_AS only".to_owned());
        }
        if !rlimit_only && !found.contains(&Mechanism::SystemdRun) {
            passed_over.push(format!(
                "{}: {}",
                Mechanism::SystemdRun.label(),
                if systemd_run {
                    "systemd is not running (no /run/systemd/system)"
                } else {
                    "systemd-run is not installed"
                }
            ));
        }
        if !rlimit_only && !found.iter().any(|m| matches!(m, Mechanism::CgroupV2(_))) {
            passed_over.push(
                "cgroup v2: /sys/fs/cgroup is not a v2 hierarchy handing down the memory \
                 controller"
                    .to_owned(),
            );
        }
        for mechanism in found {
            match set_up(&mechanism, bytes) {
                Ok(created) => {
                    return Ok(Self {
                        mechanism,
                        bytes,
                        passed_over,
                        created,
                    })
                }
                Err(e) => passed_over.push(format!("{}: {e:#}", mechanism.label())),
            }
        }
        bail!("no way to limit memory: {}", passed_over.join("; "))
    }

    /// The command words that run a program under the limit (the program and its
    /// arguments follow).
    pub fn wrapper(&self) -> Vec<String> {
        match &self.mechanism {
            Mechanism::SystemdRun => vec![
                "systemd-run".into(),
                "--scope".into(),
                "--quiet".into(),
                "-p".into(),
                format!("MemoryMax={}", self.bytes),
                "--".into(),
            ],
            Mechanism::CgroupV1(dir) | Mechanism::CgroupV2(dir) => vec![
                "/bin/sh".into(),
                "-c".into(),
                // $0 is the cgroup.procs file; the rest is the command to exec.
                r#"echo $$ > "$0" && exec "$@""#.into(),
                dir.join("cgroup.procs").display().to_string(),
            ],
            Mechanism::Rlimit => vec![
                "prlimit".into(),
                format!("--as={}", self.bytes),
                "--".into(),
            ],
        }
    }

    /// The group's directory, for a child with process id `pid` (a systemd scope's group is
    /// only known once the child runs).
    fn group(&self, pid: u32) -> Option<(PathBuf, bool)> {
        match &self.mechanism {
            Mechanism::CgroupV1(dir) => Some((dir.clone(), false)),
            Mechanism::CgroupV2(dir) => Some((dir.clone(), true)),
            Mechanism::SystemdRun => {
                let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
                let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
                Some((
                    Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')),
                    true,
                ))
            }
            Mechanism::Rlimit => None,
        }
    }

    /// The group's counters (none under RLIMIT_AS).
    pub fn counters(&self, pid: u32) -> Counters {
        self.group(pid)
            .map(|(dir, v2)| read_counters(&dir, v2))
            .unwrap_or_default()
    }

    /// Resets the group's peak to its current usage, where the kernel allows it (v1 always,
    /// v2 from Linux 6.12); returns whether it did.
    pub fn reset_peak(&self, pid: u32) -> bool {
        match self.group(pid) {
            Some((dir, false)) => {
                std::fs::write(dir.join("memory.max_usage_in_bytes"), "0").is_ok()
            }
            Some((dir, true)) => std::fs::write(dir.join("memory.peak"), "reset").is_ok(),
            None => false,
        }
    }

    /// One line for the report: the mechanism, the limit and what it means.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "Memory limit {} MiB by {}: {}.",
            self.bytes / (1024 * 1024),
            self.mechanism.label(),
            self.mechanism.meaning()
        );
        if let Mechanism::CgroupV1(dir) | Mechanism::CgroupV2(dir) = &self.mechanism {
            s.push_str(&format!(
                " Group {}; the child joins it before it starts (a shell writes its pid into \
                 cgroup.procs and execs the gateway).",
                dir.display()
            ));
        }
        for skipped in &self.passed_over {
            s.push_str(&format!(" Passed over {skipped}."));
        }
        s
    }
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        if let (true, Mechanism::CgroupV1(dir) | Mechanism::CgroupV2(dir)) =
            (self.created, &self.mechanism)
        {
            // Only empty groups can go; the child has exited by now.
            if let Err(e) = std::fs::remove_dir(dir) {
                eprintln!("cannot remove the cgroup {}: {e}", dir.display());
            }
        }
    }
}

/// Prepares `mechanism`; returns whether a group directory was created.
fn set_up(mechanism: &Mechanism, bytes: u64) -> anyhow::Result<bool> {
    match mechanism {
        Mechanism::SystemdRun => {
            // A scope needs a running systemd to talk to: try a trivial one.
            let status = std::process::Command::new("systemd-run")
                .args(["--scope", "--quiet", "--", "true"])
                .stderr(std::process::Stdio::null())
                .status()
                .context("cannot run systemd-run")?;
            if !status.success() {
                bail!("systemd-run --scope true failed ({status})");
            }
            Ok(false)
        }
        Mechanism::CgroupV1(dir) | Mechanism::CgroupV2(dir) => {
            let file = if matches!(mechanism, Mechanism::CgroupV2(_)) {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            // A leftover group from a run that died: reuse it (it is empty or rmdir fails).
            let _ = std::fs::remove_dir(dir);
            std::fs::create_dir(dir).with_context(|| format!("mkdir {}", dir.display()))?;
            if let Err(e) = std::fs::write(dir.join(file), bytes.to_string()) {
                let _ = std::fs::remove_dir(dir);
                return Err(e).with_context(|| format!("write {file}"));
            }
            Ok(true)
        }
        Mechanism::Rlimit => {
            if !on_path("prlimit") {
                bail!("prlimit is not installed");
            }
            Ok(false)
        }
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, file: &str, text: &str) {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const SELF_V1: &str = "9:name=systemd:/\n4:memory:/jobs/abc\n1:cpu:/\n0::/\n";

    #[test]
    fn nothing_mounted_leaves_only_rlimit() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(
            candidates(root.path(), "", true, "b"),
            vec![Mechanism::Rlimit]
        );
    }

    #[test]
    fn systemd_comes_first_only_when_booted_and_installed() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("run/systemd/system")).unwrap();
        touch(
            root.path(),
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9\n",
        );
        let found = candidates(root.path(), SELF_V1, true, "b");
        assert_eq!(found[0], Mechanism::SystemdRun);
        assert_eq!(found.len(), 3);
        let without = candidates(root.path(), SELF_V1, false, "b");
        assert!(!without.contains(&Mechanism::SystemdRun));
    }

    #[test]
    fn cgroup_v2_needs_the_memory_controller_handed_down() {
        let root = tempfile::tempdir().unwrap();
        let fs = root.path().join("sys/fs/cgroup");
        touch(
            root.path(),
            "sys/fs/cgroup/cgroup.controllers",
            "cpu io memory pids\n",
        );
        touch(root.path(), "sys/fs/cgroup/cgroup.subtree_control", "cpu\n");
        assert_eq!(
            candidates(root.path(), "0::/\n", false, "b"),
            vec![Mechanism::Rlimit]
        );
        touch(
            root.path(),
            "sys/fs/cgroup/cgroup.subtree_control",
            "cpu memory\n",
        );
        assert_eq!(
            candidates(root.path(), "0::/\n", false, "b"),
            vec![Mechanism::CgroupV2(fs.join("b")), Mechanism::Rlimit]
        );
    }

    #[test]
    fn hybrid_mount_without_memory_in_v2_falls_to_v1_nested_in_our_group() {
        // What this machine has: v1 controllers plus an empty unified hierarchy.
        let root = tempfile::tempdir().unwrap();
        touch(root.path(), "sys/fs/cgroup/unified/cgroup.controllers", "");
        touch(
            root.path(),
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9\n",
        );
        let v1 = root.path().join("sys/fs/cgroup/memory");
        assert_eq!(
            candidates(root.path(), SELF_V1, true, "b"),
            vec![
                Mechanism::CgroupV1(v1.join("jobs/abc/b")),
                Mechanism::Rlimit
            ]
        );
        // Not knowing our own group: at the top.
        assert_eq!(
            candidates(root.path(), "", false, "b")[0],
            Mechanism::CgroupV1(v1.join("b"))
        );
    }

    #[test]
    fn counters_of_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        touch(d, "memory.max_usage_in_bytes", "1048576\n");
        touch(d, "memory.failcnt", "3\n");
        touch(
            d,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        touch(
            d,
            "memory.stat",
            "cache 4096\nrss 8192\nrss_huge 0\ntotal_rss 8192\n",
        );
        assert_eq!(
            read_counters(d, false),
            Counters {
                peak: Some(1_048_576),
                hit_limit: Some(3),
                oom_kills: Some(1),
                anon: Some(8192),
            }
        );
        touch(d, "memory.peak", "2048\n");
        touch(
            d,
            "memory.events",
            "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n",
        );
        touch(d, "memory.stat", "anon 12288\nfile 4096\nkernel 0\n");
        assert_eq!(
            read_counters(d, true),
            Counters {
                peak: Some(2048),
                hit_limit: Some(7),
                oom_kills: Some(2),
                anon: Some(12288),
            }
        );
        // An old kernel's oom_control has no oom_kill line: unknown, not zero.
        touch(d, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n");
        assert_eq!(read_counters(d, false).oom_kills, None);
    }

    #[test]
    fn keyed_lines() {
        assert_eq!(keyed("oom 1\noom_kill 4\n", "oom_kill"), Some(4));
        assert_eq!(keyed("oom_kill x\n", "oom_kill"), None);
        assert_eq!(keyed("", "max"), None);
    }

    #[test]
    fn wrappers() {
        let limit = |mechanism| MemoryLimit {
            mechanism,
            bytes: 512 << 20,
            passed_over: Vec::new(),
            created: false,
        };
        let v1 = limit(Mechanism::CgroupV1("/cg/b".into())).wrapper();
        assert_eq!(v1.last().unwrap(), "/cg/b/cgroup.procs");
        assert_eq!(
            limit(Mechanism::Rlimit).wrapper(),
            ["prlimit", "--as=536870912", "--"]
        );
        assert!(limit(Mechanism::SystemdRun)
            .wrapper()
            .contains(&"MemoryMax=536870912".to_owned()));
    }

    /// The real thing, where the machine lets us (root with a cgroup hierarchy): the wrapper
    /// puts the child into the group, and the group goes away afterwards.
    #[test]
    fn the_wrapper_places_the_child_in_the_group() {
        let limit = MemoryLimit::establish(
            256 << 20,
            &format!("bench-test-{}", std::process::id()),
            false,
        )
        .unwrap();
        let dir = match &limit.mechanism {
            Mechanism::CgroupV1(dir) | Mechanism::CgroupV2(dir) => dir.clone(),
            _ => return, // no cgroup here: nothing to place into
        };
        let words = limit.wrapper();
        let out = std::process::Command::new(&words[0])
            .args(&words[1..])
            .args(["cat", "/proc/self/cgroup"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let name = dir.file_name().unwrap().to_str().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(name), "child not in the group: {text}");
        drop(limit);
        assert!(!dir.exists(), "group not removed");
    }
}
