//! Monitoring-plugin states, how they combine, and the output a monitoring system reads:
//! one status line (`GATEWAY OK - ...`), performance data after `|`, then one line per
//! thing checked.

use std::fmt;

/// A plugin state, ordered by how much it needs a person: OK, UNKNOWN (the check could not
/// tell), WARNING, CRITICAL. The worst state of the parts is the state of the whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Ok,
    Unknown,
    Warning,
    Critical,
}

impl State {
    /// The exit code of the plugin convention: 0, 1, 2, 3.
    pub fn exit_code(self) -> u8 {
        match self {
            State::Ok => 0,
            State::Warning => 1,
            State::Critical => 2,
            State::Unknown => 3,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The worst of `states`; OK when there are none.
pub fn worst(states: impl IntoIterator<Item = State>) -> State {
    states.into_iter().max().unwrap_or(State::Ok)
}

/// One thing checked and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub state: State,
    pub text: String,
}

impl Finding {
    pub fn new(state: State, text: impl Into<String>) -> Self {
        Self {
            state,
            text: text.into(),
        }
    }
}

/// One performance value: `label=value[uom];[warn];[crit];[min];[max]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Perf {
    pub label: String,
    /// The value with its unit of measure (`0.012s`, `89`).
    pub value: String,
    /// Ranges in the plugin convention (`30:` alerts below 30, `86400` above it).
    pub warn: String,
    pub crit: String,
    pub min: String,
}

impl Perf {
    pub fn new(label: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            value: value.into(),
            warn: String::new(),
            crit: String::new(),
            min: String::new(),
        }
    }

    pub fn thresholds(mut self, warn: impl Into<String>, crit: impl Into<String>) -> Self {
        self.warn = warn.into();
        self.crit = crit.into();
        self
    }

    pub fn min(mut self, min: impl Into<String>) -> Self {
        self.min = min.into();
        self
    }
}

impl fmt::Display for Perf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Labels are plain words here; quoted all the same, as the convention allows, so
        // that no label can ever break the line.
        write!(
            f,
            "'{}'={}",
            self.label.replace('\'', "\"").replace('=', "_"),
            self.value
        )?;
        let tail = [&self.warn, &self.crit, &self.min];
        let used = tail
            .iter()
            .rposition(|s| !s.is_empty())
            .map_or(0, |i| i + 1);
        for field in &tail[..used] {
            write!(f, ";{field}")?;
        }
        Ok(())
    }
}

/// Everything the check found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub perf: Vec<Perf>,
    /// What the status line says when every finding is OK.
    pub ok_summary: String,
}

impl Report {
    /// A report of one problem that kept the check from running (bad usage, unreadable
    /// configuration): UNKNOWN.
    pub fn unknown(text: impl Into<String>) -> Self {
        Self {
            findings: vec![Finding::new(State::Unknown, text)],
            ..Self::default()
        }
    }

    /// The worst state found; UNKNOWN when nothing was checked at all.
    pub fn state(&self) -> State {
        if self.findings.is_empty() {
            return State::Unknown;
        }
        worst(self.findings.iter().map(|f| f.state))
    }

    /// The plugin output: the status line with the problems, worst first (or the summary
    /// when there are none), the performance data, then one line per finding.
    pub fn render(&self) -> String {
        let state = self.state();
        let mut problems: Vec<&Finding> = self
            .findings
            .iter()
            .filter(|f| f.state != State::Ok)
            .collect();
        // Stable: same-state problems keep the order they were checked in.
        problems.sort_by_key(|f| std::cmp::Reverse(f.state));
        let summary = if self.findings.is_empty() {
            "nothing to check: no listener is enabled".to_owned()
        } else if problems.is_empty() {
            self.ok_summary.clone()
        } else {
            problems
                .iter()
                .map(|f| f.text.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        };
        let mut out = format!("GATEWAY {state} - {}", one_line(&summary));
        if !self.perf.is_empty() {
            out.push_str(" |");
            for perf in &self.perf {
                out.push(' ');
                out.push_str(&perf.to_string());
            }
        }
        out.push('\n');
        if self.findings.len() > 1 {
            for finding in &self.findings {
                out.push_str(&format!(
                    "[{}] {}\n",
                    finding.state,
                    one_line(&finding.text)
                ));
            }
        }
        out
    }
}

/// No line break and no `|` (which would start the performance data) inside a text.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() || c == '|' { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_state_wins_and_unknown_is_below_warning() {
        use State::*;
        assert_eq!(worst([]), Ok);
        assert_eq!(worst([Ok, Ok]), Ok);
        assert_eq!(worst([Ok, Unknown]), Unknown);
        assert_eq!(worst([Unknown, Warning, Ok]), Warning);
        assert_eq!(worst([Warning, Critical, Unknown]), Critical);
        assert_eq!(
            [Ok, Warning, Critical, Unknown].map(State::exit_code),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn the_status_line_names_the_problems_worst_first_then_every_finding() {
        let report = Report {
            findings: vec![
                Finding::new(State::Ok, "smtp: fine"),
                Finding::new(State::Warning, "smtps: certificate valid 9 days"),
                Finding::new(State::Critical, "pop3s: cannot connect: connection refused"),
            ],
            perf: vec![
                Perf::new("smtp_time", "0.010s").min("0"),
                Perf::new("smtps_cert_days", "9").thresholds("30:", "7:"),
            ],
            ok_summary: "unused".into(),
        };
        assert_eq!(report.state(), State::Critical);
        assert_eq!(
            report.render(),
            "GATEWAY CRITICAL - pop3s: cannot connect: connection refused; smtps: certificate valid 9 days \
             | 'smtp_time'=0.010s;;;0 'smtps_cert_days'=9;30:;7:\n\
             [OK] smtp: fine\n\
             [WARNING] smtps: certificate valid 9 days\n\
             [CRITICAL] pop3s: cannot connect: connection refused\n"
        );
    }

    #[test]
    fn all_ok_shows_the_summary_and_nothing_checked_is_unknown() {
        let report = Report {
            findings: vec![Finding::new(State::Ok, "smtp: fine")],
            perf: vec![Perf::new("smtp_time", "0.010s")],
            ok_summary: "1 listener answers".into(),
        };
        assert_eq!(
            report.render(),
            "GATEWAY OK - 1 listener answers | 'smtp_time'=0.010s\n"
        );
        let empty = Report::default();
        assert_eq!(empty.state(), State::Unknown);
        assert!(empty
            .render()
            .starts_with("GATEWAY UNKNOWN - nothing to check"));
        let usage = Report::unknown("bad usage: --warn-days needs a number\nmore | text");
        assert_eq!(
            usage.render(),
            "GATEWAY UNKNOWN - bad usage: --warn-days needs a number more   text\n"
        );
    }
}
