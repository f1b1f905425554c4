//! Helpers the benchmark runners share: scratch directories, filesystems, CPU time and
//! report formatting (ports, commands and Debian packages come from `test-support`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;

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

/// Raises the open-files limit to its hard limit (the gateway child inherits it) and fails
/// unless it allows `want` descriptors.
pub fn ensure_open_files(want: u64) -> anyhow::Result<()> {
    let limits = gateway::net::raise_open_files_limit()?;
    if !limits.suffices(want) {
        anyhow::bail!(
            "the open-files limit is {}; this run needs {want} (lower --sessions)",
            limits.now
        );
    }
    Ok(())
}

/// [`cpu_seconds`] of `pid` once it has used none for `quiet` (polled every 20 ms; at most
/// `max` in all), so work a server left for after its reply counts too.
pub fn cpu_seconds_when_idle(
    pid: u32,
    quiet: std::time::Duration,
    max: std::time::Duration,
) -> f64 {
    let started = std::time::Instant::now();
    let mut last = cpu_seconds(pid);
    let mut still_since = std::time::Instant::now();
    while started.elapsed() < max {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let now = cpu_seconds(pid);
        if now != last {
            (last, still_since) = (now, std::time::Instant::now());
        } else if still_since.elapsed() >= quiet {
            break;
        }
    }
    last
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

/// The whole machine's busy CPU time so far, in seconds: every process and the kernel, on
/// every CPU (`/proc/stat`'s `cpu` line less idle and I/O wait); 0 where it cannot be read.
pub fn machine_busy_seconds() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .map(|stat| busy_seconds_of(&stat))
        .unwrap_or(0.0)
}

/// [`machine_busy_seconds`] from the text of `/proc/stat`.
fn busy_seconds_of(stat: &str) -> f64 {
    let Some(total) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let ticks: Vec<f64> = total
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal; guest time is inside user already.
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    // /proc/stat counts in USER_HZ, 100 on every Linux architecture we run on.
    busy / 100.0
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

/// The item with the median `key`, the lower middle of an even count; `None` when empty.
/// The runners report a cell's median run with that run's other figures.
pub fn median_by<T>(mut items: Vec<T>, key: impl Fn(&T) -> f64) -> Option<T> {
    items.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let middle = items.len().checked_sub(1)? / 2;
    Some(items.swap_remove(middle))
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
    fn machine_busy_time_leaves_out_idle_and_io_wait() {
        let stat = "cpu  100 20 300 9000 50 7 3 10 40 0\ncpu0 50 10 150 4500 25 4 2 5 20 0\n";
        // user + nice + system + irq + softirq + steal = 440 ticks
        assert!((busy_seconds_of(stat) - 4.4).abs() < 1e-9);
        assert_eq!(busy_seconds_of("intr 1 2 3\n"), 0.0);
    }

    #[test]
    fn this_machine_has_been_busy() {
        assert!(machine_busy_seconds() > 0.0);
    }
}
