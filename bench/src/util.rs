//! Helpers the benchmark runners share: the machine (root, free ports, filesystems, CPU
//! time), external commands and Debian packages, and report formatting.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;

/// Whether this process runs as root (it may then install packages).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(str::to_owned))
        })
        .is_some_and(|uid| uid == "0")
}

/// Installs Debian packages with `apt-get install -y` (running `apt-get update` first if the
/// package lists are missing or stale), non-interactively.
pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "missing packages and we are not root: run `apt-get install {}` first",
            packages.join(" ")
        );
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    let mut status = install()?;
    if !status.success() {
        // A fresh machine may not have the package lists yet.
        Command::new("apt-get").args(["update", "-q"]).status()?;
        status = install()?;
    }
    if !status.success() {
        bail!("installing {} failed ({status})", packages.join(" "));
    }
    Ok(())
}

/// A port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `n` distinct ports that were free a moment ago (all bound at once, then released).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Runs a command to completion; fails with its output if it fails.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let out = command.output().with_context(|| format!("{command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The numeric id of a user (`-u`) or group (`-g`), from `id`.
pub fn id(flag: &str, name: &str) -> anyhow::Result<u32> {
    let out = Command::new("id").args([flag, name]).output()?;
    if !out.status.success() {
        bail!("no user or group {name}");
    }
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

pub fn chown(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))
}

/// The cargo target directory of the running binary (which lives in `<target>/release/`).
pub fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("cannot locate the target directory")
}

/// A runner's fresh scratch directory (`<target>/bench-NAME-scratch`, on the real disk,
/// announced with its file system) and its report path (`--out`, else
/// `<target>/bench-reports/NAME.md`).
pub fn prepare_run(name: &str, out: Option<PathBuf>) -> anyhow::Result<(PathBuf, PathBuf)> {
    let target = target_dir()?;
    let scratch = target.join(format!("bench-{name}-scratch"));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    eprintln!(
        "scratch directory {} (filesystem: {})",
        scratch.display(),
        filesystem_of(&scratch)
    );
    let out = out.unwrap_or_else(|| target.join("bench-reports").join(format!("{name}.md")));
    Ok((scratch, out))
}

/// "ext4 on /dev/sda1", for the report.
pub fn filesystem_of(path: &Path) -> String {
    Command::new("df")
        .args(["--output=fstype,source"])
        .arg(path)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" on "))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// utime + stime of a process, seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start at ") ".
    let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

/// "10 KiB", "1 MiB", "300 B".
pub fn human(size: usize) -> String {
    if size >= MIB && size.is_multiple_of(MIB) {
        format!("{} MiB", size / MIB)
    } else if size >= KIB && size.is_multiple_of(KIB) {
        format!("{} KiB", size / KIB)
    } else {
        format!("{size} B")
    }
}

/// Writes a report, creating its directory.
pub fn write_report(path: &Path, report: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, report).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(10 * KIB), "10 KiB");
        assert_eq!(human(MIB), "1 MiB");
        assert_eq!(human(300), "300 B");
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(3).unwrap();
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
    }
}
