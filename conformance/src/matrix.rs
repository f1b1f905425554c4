//! The requirement matrix: what each check claims (RFC, section, level) and what it found.

use std::fmt;

/// How strongly the RFC asks for the behaviour (RFC 2119 keywords).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Must,
    Should,
    May,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
            Level::May => "MAY",
        })
    }
}

/// Which suite a requirement belongs to; the report groups rows by it, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Suite {
    Smtp,
    Pop3,
    Tls,
    Security,
    Interop,
}

impl Suite {
    pub const ALL: [Suite; 5] = [
        Suite::Smtp,
        Suite::Pop3,
        Suite::Tls,
        Suite::Security,
        Suite::Interop,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Suite::Smtp => "SMTP (journal target: 25, 587 STARTTLS, 465 implicit TLS)",
            Suite::Pop3 => "POP3 (pick-up: 110 STLS, 995 implicit TLS)",
            Suite::Tls => "TLS configuration of every listener",
            Suite::Security => "Security",
            Suite::Interop => "Interoperability with real clients",
        }
    }
}

/// One row of the matrix. `id` is stable: it names the row in the report and in
/// `--only` filters, so renaming one is a visible change of the report.
#[derive(Debug, Clone, Copy)]
pub struct Requirement {
    pub id: &'static str,
    pub suite: Suite,
    /// The RFC number(s), e.g. "5321" or "3207".
    pub rfc: &'static str,
    pub section: &'static str,
    pub level: Level,
    /// What the gateway must do, in our words.
    pub title: &'static str,
    /// Set when the gateway is known not to meet this requirement yet: why, or who fixes it.
    /// A failing row with a reason does not fail the run; a passing one does (the reason is
    /// stale and must be removed), so the matrix never hides a fix or a regression.
    pub known_gap: Option<&'static str>,
}

impl Requirement {
    pub const fn new(
        id: &'static str,
        suite: Suite,
        rfc: &'static str,
        section: &'static str,
        level: Level,
        title: &'static str,
    ) -> Self {
        Self {
            id,
            suite,
            rfc,
            section,
            level,
            title,
            known_gap: None,
        }
    }

    pub const fn known_gap(mut self, why: &'static str) -> Self {
        self.known_gap = Some(why);
        self
    }
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// The gateway does not meet the requirement: what was observed.
    Fail(String),
    /// The check could not run here (a client tool is missing); never on CI.
    Skip(String),
}

/// A requirement with its verdict.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub requirement: Requirement,
    pub verdict: Verdict,
}

impl Outcome {
    /// Whether this row makes the run fail: a MUST that fails without a known gap, any
    /// requirement whose known gap has been closed (so the note gets removed), or a skip
    /// where skipping is not allowed.
    pub fn blocks(&self, allow_skips: bool) -> Option<String> {
        let r = &self.requirement;
        match (&self.verdict, r.known_gap) {
            (Verdict::Fail(why), None) if r.level == Level::Must => {
                Some(format!("{} ({} {}): {why}", r.id, r.level, r.rfc))
            }
            (Verdict::Pass, Some(_)) => Some(format!(
                "{} now passes: remove its known_gap note from the matrix",
                r.id
            )),
            (Verdict::Skip(why), _) if !allow_skips => Some(format!("{} skipped: {why}", r.id)),
            _ => None,
        }
    }
}

/// Counts per level, for the summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub pass: usize,
    pub fail: usize,
    pub skip: usize,
}

/// Pass/fail/skip counts for MUST, SHOULD and MAY, in that order.
pub fn tally(outcomes: &[Outcome]) -> [(Level, Tally); 3] {
    let mut out = [
        (Level::Must, Tally::default()),
        (Level::Should, Tally::default()),
        (Level::May, Tally::default()),
    ];
    for o in outcomes {
        let Some((_, t)) = out.iter_mut().find(|(l, _)| *l == o.requirement.level) else {
            continue;
        };
        match o.verdict {
            Verdict::Pass => t.pass += 1,
            Verdict::Fail(_) => t.fail += 1,
            Verdict::Skip(_) => t.skip += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(level: Level, verdict: Verdict, gap: Option<&'static str>) -> Outcome {
        let mut requirement = Requirement::new("x.y", Suite::Smtp, "5321", "1", level, "t");
        requirement.known_gap = gap;
        Outcome {
            requirement,
            verdict,
        }
    }

    #[test]
    fn only_unexplained_must_failures_and_stale_gaps_block() {
        let fail = || Verdict::Fail("no".into());
        assert!(outcome(Level::Must, fail(), None).blocks(true).is_some());
        assert!(outcome(Level::Must, fail(), Some("lead"))
            .blocks(true)
            .is_none());
        assert!(outcome(Level::Should, fail(), None).blocks(true).is_none());
        assert!(outcome(Level::Must, Verdict::Pass, None)
            .blocks(true)
            .is_none());
        assert!(outcome(Level::Should, Verdict::Pass, Some("x"))
            .blocks(true)
            .is_some());
        let skip = Verdict::Skip("no tool".into());
        assert!(outcome(Level::May, skip.clone(), None)
            .blocks(true)
            .is_none());
        assert!(outcome(Level::May, skip, None).blocks(false).is_some());
    }

    #[test]
    fn tally_counts_per_level() {
        let outcomes = [
            outcome(Level::Must, Verdict::Pass, None),
            outcome(Level::Must, Verdict::Fail("x".into()), None),
            outcome(Level::May, Verdict::Skip("x".into()), None),
        ];
        let t = tally(&outcomes);
        assert_eq!(
            t[0].1,
            Tally {
                pass: 1,
                fail: 1,
                skip: 0
            }
        );
        assert_eq!(t[1].1, Tally::default());
        assert_eq!(
            t[2].1,
            Tally {
                pass: 0,
                fail: 0,
                skip: 1
            }
        );
    }
}
