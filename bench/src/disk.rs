//! What one durable write costs on the disk a runner's gateway writes to, and what that
//! cost leaves of a ratio: the proxy's copy is made durable between the client's final dot
//! and the dot it sends upstream (so a copy that fails never lets the provider deliver), so at
//! one session a proxied message takes at least a direct one plus that write.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The piece redb writes a message's chunks in.
const PIECE: usize = 64 * 1024;

/// The median of `count` durable writes of `size` bytes into new space: each appends `size`
/// bytes to a file in `dir` in 64 KiB writes, then `fdatasync`s it, as a growing store's
/// commit does. The file is removed afterwards. It first writes out everything the system
/// holds unwritten (`sync`), so no earlier write's backlog is timed: on its own, without the
/// peer's load, it is the least such a write costs there.
pub fn durable_write_median(dir: &Path, size: usize, count: usize) -> std::io::Result<Duration> {
    let synced = std::process::Command::new("sync").status()?;
    if !synced.success() {
        return Err(std::io::Error::other(format!("sync: {synced}")));
    }
    let path = dir.join(".durable-write-probe");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let timed = (|| {
        let data = crate::body(size, 7);
        let mut times = Vec::with_capacity(count);
        for round in 0..count {
            let start = Instant::now();
            let base = (round * size) as u64;
            for (i, piece) in data.chunks(PIECE).enumerate() {
                file.write_all_at(piece, base + (i * PIECE) as u64)?;
            }
            file.sync_data()?;
            times.push(start.elapsed());
        }
        times.sort();
        Ok(times.get(count / 2).copied().unwrap_or_default())
    })();
    drop(file);
    std::fs::remove_file(&path)?;
    timed
}

/// The most a proxied session can reach as a share of a direct one, when each message takes
/// `direct` directly and the proxy adds at least `added` in series.
pub fn serial_ceiling(direct: Duration, added: Duration) -> f64 {
    ceiling_over(direct, direct, added)
}

/// The most a proxied session can reach as a share of a direct one (a message in `direct`),
/// when each message takes at least `base` (a bare relay's) plus `added` in series.
pub fn ceiling_over(direct: Duration, base: Duration, added: Duration) -> f64 {
    let whole = base + added;
    if whole.is_zero() {
        return 1.0;
    }
    direct.as_secs_f64() / whole.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_durable_write_takes_time_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let median = durable_write_median(dir.path(), 3 * PIECE + 5, 5).unwrap();
        assert!(median > Duration::ZERO);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_write_already_there_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".durable-write-probe"), b"mine").unwrap();
        assert!(durable_write_median(dir.path(), PIECE, 1).is_err());
        let kept = std::fs::read(dir.path().join(".durable-write-probe")).unwrap();
        assert_eq!(kept, b"mine");
    }

    #[test]
    fn the_ceiling_is_the_direct_share_of_the_whole() {
        let ms = Duration::from_millis;
        assert!((serial_ceiling(ms(6), ms(2)) - 0.75).abs() < 1e-9);
        assert_eq!(serial_ceiling(ms(5), Duration::ZERO), 1.0);
        assert_eq!(serial_ceiling(Duration::ZERO, Duration::ZERO), 1.0);
        // Over a relay taking 8 ms where direct takes 6: 6 / (8 + 2).
        assert!((ceiling_over(ms(6), ms(8), ms(2)) - 0.6).abs() < 1e-9);
    }
}
