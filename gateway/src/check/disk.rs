//! Free disk space of the data directory, asked of the running gateway through its control
//! socket (`GetServerInfo`, which reads it through the service layer, the same reading the
//! metrics and the console show). WARNING below the warning threshold, CRITICAL below the
//! critical one: by default the gateway's own `[limits] warn_free_disk_mib` and
//! `min_free_disk_mib` (below which it refuses new mail), or `--warn-disk-mib` /
//! `--crit-disk-mib`.

use super::status::{Finding, Perf, State};
use super::CheckOptions;
use crate::config::Config;
use crate::service::DiskLevel;

const MIB: u64 = 1024 * 1024;

/// What the gateway says of its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DiskFacts {
    pub free: Option<u64>,
    pub total: Option<u64>,
    pub warn: u64,
    pub min: u64,
}

/// The finding and performance data of the disk part.
pub(super) async fn check(config: &Config, options: &CheckOptions) -> (Finding, Vec<Perf>) {
    let asked = tokio::time::timeout(options.timeout, facts(config)).await;
    let reason = match asked {
        Ok(Ok(facts)) => return assess(&facts, options),
        Ok(Err(reason)) => reason,
        Err(_) => format!(
            "the gateway did not answer within {}s",
            options.timeout.as_secs_f64()
        ),
    };
    (
        Finding::new(State::Unknown, format!("free disk space unknown: {reason}")),
        Vec::new(),
    )
}

async fn facts(config: &Config) -> Result<DiskFacts, String> {
    let info = super::control::invoke(config, "GetServerInfo", "disk space").await?;
    let bytes = |key: &str| info[key].as_u64();
    match (bytes("warnFreeDiskBytes"), bytes("minFreeDiskBytes")) {
        (Some(warn), Some(min)) => Ok(DiskFacts {
            free: bytes("freeDiskBytes"),
            total: bytes("totalDiskBytes"),
            warn,
            min,
        }),
        _ => Err("GetServerInfo gave no disk thresholds (an older gateway?)".into()),
    }
}

/// Judges the free space against the thresholds: the options' where given, else the
/// gateway's own. Free space exactly at a threshold is not below it.
pub(super) fn assess(facts: &DiskFacts, options: &CheckOptions) -> (Finding, Vec<Perf>) {
    let warn = options
        .warn_disk_mib
        .map_or(facts.warn, |mib| mib.saturating_mul(MIB));
    let crit = options
        .crit_disk_mib
        .map_or(facts.min, |mib| mib.saturating_mul(MIB));
    let Some(free) = facts.free else {
        return (
            Finding::new(
                State::Unknown,
                "free disk space unknown: the gateway cannot read its file system's free space",
            ),
            Vec::new(),
        );
    };
    // Nagios ranges: `N:` alerts below N.
    let perf = Perf::new("free_disk", format!("{free}B"))
        .thresholds(format!("{warn}:"), format!("{crit}:"))
        .min("0");
    let of = facts
        .total
        .map(|total| format!(" of {}", size(total)))
        .unwrap_or_default();
    let finding = match DiskLevel::of(free, warn, crit) {
        DiskLevel::Ok => Finding::new(State::Ok, format!("{} disk free{of}", size(free))),
        DiskLevel::Low => Finding::new(
            State::Warning,
            format!(
                "{} disk free{of}, below the warning threshold of {}",
                size(free),
                size(warn)
            ),
        ),
        DiskLevel::Critical => Finding::new(
            State::Critical,
            format!(
                "{} disk free{of}, below the critical threshold of {}{}",
                size(free),
                size(crit),
                if crit == facts.min {
                    ": new mail is refused"
                } else {
                    ""
                }
            ),
        ),
    };
    (finding, vec![perf])
}

/// `812 MiB`, `3.4 GiB`: a size for people (binary units, as the configuration counts).
fn size(bytes: u64) -> String {
    const GIB: u64 = 1024 * MIB;
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(free_mib: u64) -> DiskFacts {
        DiskFacts {
            free: Some(free_mib * MIB),
            total: Some(10 * 1024 * MIB),
            warn: 1024 * MIB,
            min: 256 * MIB,
        }
    }

    fn options(warn: Option<u64>, crit: Option<u64>) -> CheckOptions {
        CheckOptions {
            disk: true,
            warn_disk_mib: warn,
            crit_disk_mib: crit,
            ..CheckOptions::default()
        }
    }

    #[test]
    fn the_gateways_own_thresholds_judge_the_free_space() {
        let (finding, perf) = assess(&facts(2048), &options(None, None));
        assert_eq!(
            finding,
            Finding::new(State::Ok, "2.0 GiB disk free of 10.0 GiB")
        );
        assert_eq!(
            perf[0].to_string(),
            format!(
                "'free_disk'={}B;{}:;{}:;0",
                2048 * MIB,
                1024 * MIB,
                256 * MIB
            )
        );
        // At the threshold is not below it.
        assert_eq!(
            assess(&facts(1024), &options(None, None)).0.state,
            State::Ok
        );
        let (finding, _) = assess(&facts(1023), &options(None, None));
        assert_eq!(finding.state, State::Warning);
        assert_eq!(
            finding.text,
            "1023 MiB disk free of 10.0 GiB, below the warning threshold of 1.0 GiB"
        );
        let (finding, _) = assess(&facts(100), &options(None, None));
        assert_eq!(finding.state, State::Critical);
        assert!(
            finding.text.ends_with("of 256 MiB: new mail is refused"),
            "{}",
            finding.text
        );
    }

    #[test]
    fn options_override_the_thresholds_and_unknown_free_space_is_unknown() {
        let (finding, perf) = assess(&facts(2048), &options(Some(4096), None));
        assert_eq!(finding.state, State::Warning);
        assert!(perf[0].to_string().contains(&format!(";{}:;", 4096 * MIB)));
        let (finding, _) = assess(&facts(2048), &options(Some(8192), Some(4096)));
        assert_eq!(finding.state, State::Critical);
        assert!(!finding.text.contains("refused"), "{}", finding.text);
        assert_eq!(
            assess(&facts(300), &options(Some(0), Some(0))).0.state,
            State::Ok
        );
        let unknown = DiskFacts {
            free: None,
            ..facts(0)
        };
        let (finding, perf) = assess(&unknown, &options(None, None));
        assert_eq!(finding.state, State::Unknown);
        assert!(perf.is_empty());
    }
}
