//! How much memory the gateway may use: the machine's RAM, or less when a control group
//! limits the process (a container, a systemd `MemoryMax=`). The store sizes its default
//! page cache from it, so a gateway on a 512 MiB machine does not keep an eighth of it as
//! cache.

use std::path::Path;

/// The memory limit and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit {
    pub bytes: u64,
    pub source: LimitSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    /// The process's control group (v1 or v2).
    ControlGroup,
    /// The machine's RAM (`MemTotal`).
    Ram,
}

impl std::fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.source {
            LimitSource::ControlGroup => "the control group's memory limit",
            LimitSource::Ram => "the machine's memory",
        };
        write!(f, "{} MiB ({what})", self.bytes / MIB)
    }
}

const MIB: u64 = 1024 * 1024;

/// The default store cache for a limit: a sixteenth of it, between 16 and 64 MiB. 64 MiB
/// is what a machine of 1 GiB or more gets (the throughput benches' setting); a 512 MiB
/// machine gets 32 MiB, which kept the paced budget (100 Mbit/s) at the same CPU share.
pub fn default_store_cache(limit: Option<MemoryLimit>) -> u64 {
    match limit {
        Some(limit) => (limit.bytes / 16).clamp(16 * MIB, 64 * MIB),
        None => 64 * MIB,
    }
}

/// The limit for this process, read from `/proc` and `/sys/fs/cgroup` once (the store
/// cache, its log line and the Argon2id gate all ask at start-up); `None` where neither says
/// (not Linux).
pub fn current() -> Option<MemoryLimit> {
    static LIMIT: std::sync::OnceLock<Option<MemoryLimit>> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(read)
}

fn read() -> Option<MemoryLimit> {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text));
    let group = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| group_limit(&text, Path::new("/sys/fs/cgroup")));
    lesser(ram, group)
}

fn lesser(ram: Option<u64>, group: Option<u64>) -> Option<MemoryLimit> {
    let ram = ram.map(|bytes| MemoryLimit {
        bytes,
        source: LimitSource::Ram,
    });
    let group = group.map(|bytes| MemoryLimit {
        bytes,
        source: LimitSource::ControlGroup,
    });
    match (ram, group) {
        (Some(ram), Some(group)) if group.bytes < ram.bytes => Some(group),
        (Some(ram), _) => Some(ram),
        (None, group) => group,
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The tightest limit on the process's group and its ancestors. `cgroup` is the text of
/// `/proc/self/cgroup`; `root` where the hierarchies are mounted.
fn group_limit(cgroup: &str, root: &Path) -> Option<u64> {
    let mut tightest: Option<u64> = None;
    let mut consider = |limit: Option<u64>| {
        if let Some(limit) = limit {
            tightest = Some(tightest.map_or(limit, |t| t.min(limit)));
        }
    };
    for line in cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            // v2: the group's memory.max and every ancestor's.
            let mut dir = root.join(relative);
            loop {
                consider(read_limit(&dir.join("memory.max")));
                if dir == root || !dir.pop() {
                    break;
                }
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            // v1: the hierarchical limit already folds in the ancestors'.
            let dir = root.join("memory").join(relative);
            let stat = std::fs::read_to_string(dir.join("memory.stat")).ok();
            consider(stat.as_deref().and_then(hierarchical_limit));
            consider(read_limit(&dir.join("memory.limit_in_bytes")));
        }
    }
    tightest
}

/// A limit file's value; `max` and v1's "no limit" (a number near `i64::MAX`) are none.
fn read_limit(path: &Path) -> Option<u64> {
    parse_limit(&std::fs::read_to_string(path).ok()?)
}

fn parse_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value < 1 << 60).then_some(value)
}

fn hierarchical_limit(stat: &str) -> Option<u64> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("hierarchical_memory_limit "))?;
    parse_limit(line.split_whitespace().nth(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cache_is_a_sixteenth_of_the_limit_between_16_and_64_mib() {
        let limit = |mib: u64, source| {
            Some(MemoryLimit {
                bytes: mib * MIB,
                source,
            })
        };
        assert_eq!(
            default_store_cache(limit(512, LimitSource::ControlGroup)),
            32 * MIB
        );
        assert_eq!(default_store_cache(limit(128, LimitSource::Ram)), 16 * MIB);
        assert_eq!(
            default_store_cache(limit(24_576, LimitSource::Ram)),
            64 * MIB
        );
        assert_eq!(default_store_cache(None), 64 * MIB);
    }

    #[test]
    fn meminfo_and_limit_files_are_read_and_no_limit_is_none() {
        let meminfo = "MemTotal:       24590344 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(meminfo), Some(24_590_344 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_limit("536870912\n"), Some(512 * MIB));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(
            hierarchical_limit("cache 0\nhierarchical_memory_limit 268435456\n"),
            Some(256 * MIB)
        );
    }

    #[test]
    fn a_v2_group_limit_is_the_tightest_of_the_group_and_its_ancestors() {
        let root = tempfile::tempdir().unwrap();
        let group = root.path().join("system.slice/gateway.service");
        std::fs::create_dir_all(&group).unwrap();
        std::fs::write(group.join("memory.max"), "max\n").unwrap();
        std::fs::write(
            root.path().join("system.slice/memory.max"),
            format!("{}\n", 512 * MIB),
        )
        .unwrap();
        let cgroup = "0::/system.slice/gateway.service\n";
        assert_eq!(group_limit(cgroup, root.path()), Some(512 * MIB));
        std::fs::write(group.join("memory.max"), format!("{}\n", 300 * MIB)).unwrap();
        assert_eq!(group_limit(cgroup, root.path()), Some(300 * MIB));
    }

    #[test]
    fn a_v1_memory_group_limit_is_read_with_its_ancestors() {
        let root = tempfile::tempdir().unwrap();
        let group = root.path().join("memory/box/gateway");
        std::fs::create_dir_all(&group).unwrap();
        std::fs::write(group.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(
            group.join("memory.stat"),
            format!("cache 0\nhierarchical_memory_limit {}\n", 512 * MIB),
        )
        .unwrap();
        let cgroup = "12:cpu,cpuacct:/box\n5:memory:/box/gateway\n0::/\n";
        assert_eq!(group_limit(cgroup, root.path()), Some(512 * MIB));
        // Without a memory controller line or limit files, there is no group limit.
        assert_eq!(group_limit("12:cpu:/box\n", root.path()), None);
    }

    #[test]
    fn the_lesser_of_ram_and_group_limit_counts() {
        let group = lesser(Some(24 << 30), Some(512 * MIB)).unwrap();
        assert_eq!(group.source, LimitSource::ControlGroup);
        assert_eq!(group.bytes, 512 * MIB);
        let ram = lesser(Some(1 << 30), Some(4 << 30)).unwrap();
        assert_eq!((ram.source, ram.bytes), (LimitSource::Ram, 1 << 30));
        assert_eq!(lesser(None, None), None);
        assert_eq!(
            format!("{}", lesser(Some(1 << 30), None).unwrap()),
            "1024 MiB (the machine's memory)"
        );
    }
}
