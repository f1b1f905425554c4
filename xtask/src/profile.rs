//! `cargo xtask bench NAME... --profile`: every gateway process a runner starts runs under
//! `perf record` (through the runner's `BENCH_GATEWAY_WRAPPER`); afterwards each recording is
//! turned into folded stacks and a flame graph (the `inferno` crate; `perf script` runs as a
//! process) beside the runner's report, and the report gains the top functions by self and
//! inclusive share.
//!
//! Files, in `<target>/bench-reports/`: `profile-NAME-PID.perf` (the recording, for `perf
//! report`), `.folded` and `.svg`; PID is the process `perf record` ran as. A run removes the
//! previous run's `profile-NAME-*` files first, so the directory holds one run's profiles.

use crate::util::{display, on_path};
use anyhow::{bail, Context, Result};
use inferno::collapse::Collapse;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian package that provides `/usr/bin/perf`.
pub const PERF_PACKAGE: &str = "linux-perf";

/// The variable the bench runners read: a command line their gateway child runs under
/// (`bench::gateway_proc::CHILD_WRAPPER_VAR`).
pub const WRAPPER_VAR: &str = "BENCH_GATEWAY_WRAPPER";

/// Samples per second and thread: odd, so sampling does not run in step with the gateway's
/// timers. With DWARF stacks each sample carries a copy of the stack (below), so this is
/// lower than perf's default: a busy thread records about 16 MB a second.
const FREQUENCY: u32 = 499;

/// How perf records call stacks. Frame-pointer stacks (`-g`) were useless here: the builds
/// omit frame pointers (the dev profile's optimised dependencies, release), so nearly every
/// sample had one or two frames. DWARF unwinding from a copy of the stack works with the
/// `.eh_frame` every Rust binary has and needs no special build. 32 KiB of stack per sample
/// (perf's default is 8) reaches down through the connection tasks' poll chains; a dev
/// build's largest async frames still cut some stacks short, which the graph shows as stacks
/// ending in the connection's `run`.
const CALL_GRAPH: &str = "dwarf,32768";

/// Rows in each of the report's two tables.
const TOP: usize = 15;

/// One runner's profiling: where its recordings go and the wrapper that makes them.
pub struct Session {
    dir: PathBuf,
    bench: String,
    wrapper: PathBuf,
}

/// One gateway process's profile.
pub struct Profile {
    pub svg: PathBuf,
    pub folded: PathBuf,
    /// Samples (events) perf recorded.
    pub samples: u64,
    /// The folded stacks' text.
    pub stacks: String,
}

impl Session {
    /// Checks that perf can record here (installing it when missing), removes the previous
    /// run's profiles of `bench` from `dir` and writes the wrapper script into it.
    pub fn prepare(dir: &Path, bench: &str) -> Result<Self> {
        if !on_path("perf") {
            crate::deps::ensure_packages(&[PERF_PACKAGE])?;
        }
        check_perf_record()?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for stale in profile_files(dir, bench)? {
            std::fs::remove_file(&stale)
                .with_context(|| format!("removing {}", stale.display()))?;
        }
        let wrapper = dir.join(format!("profile-{bench}-wrapper.sh"));
        // The runners split the variable on white space.
        if wrapper.to_string_lossy().contains(char::is_whitespace) {
            bail!(
                "--profile: the target directory {} has white space in its path, which \
                 {WRAPPER_VAR} cannot carry",
                dir.display()
            );
        }
        let script = wrapper_script(&dir.join(format!("profile-{bench}-")));
        std::fs::write(&wrapper, script)
            .with_context(|| format!("writing {}", wrapper.display()))?;
        make_executable(&wrapper)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            bench: bench.to_owned(),
            wrapper,
        })
    }

    /// Makes `cmd` (a runner) start its gateway processes under perf.
    pub fn wrap(&self, cmd: &mut Command) {
        cmd.env(WRAPPER_VAR, &self.wrapper);
    }

    /// Folds every recording of the run into stacks and a flame graph; fails when the run
    /// left none (the runner did not use the wrapper) or one holds no samples.
    pub fn finish(self) -> Result<Vec<Profile>> {
        let _ = std::fs::remove_file(&self.wrapper);
        let recordings: Vec<PathBuf> = profile_files(&self.dir, &self.bench)?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "perf"))
            .collect();
        if recordings.is_empty() {
            bail!(
                "--profile: the {} runner started no gateway process under perf (no \
                 profile-{}-*.perf in {})",
                self.bench,
                self.bench,
                self.dir.display()
            );
        }
        let mut profiles = Vec::new();
        for recording in recordings {
            let script = perf_script(&recording)?;
            let name = recording
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let profile = fold_and_render(&script, &self.dir, &name)?;
            if profile.samples == 0 {
                bail!("--profile: {} holds no samples", recording.display());
            }
            eprintln!(
                "profile: {} ({} samples; stacks in {})",
                profile.svg.display(),
                profile.samples,
                profile.folded.display()
            );
            profiles.push(profile);
        }
        Ok(profiles)
    }
}

/// The wrapper: runs its arguments (the gateway child's command line) under perf record,
/// recording into `<out_prefix>PID.perf`.
fn wrapper_script(out_prefix: &Path) -> String {
    // `exec`: perf takes the shell's pid, so `$$` names its recording, and the runner's child
    // is perf itself, which finishes writing before the runner's wait returns.
    format!(
        "#!/bin/sh\n# Written by `cargo xtask bench --profile`.\nexec perf record -q -F \
         {FREQUENCY} --call-graph {CALL_GRAPH} -o {}\"$$.perf\" -- \"$@\"\n",
        shell_quote(&out_prefix.to_string_lossy())
    )
}

/// `profile-BENCH-*` files in `dir` (recordings, stacks, graphs), sorted.
fn profile_files(dir: &Path, bench: &str) -> Result<Vec<PathBuf>> {
    let prefix = format!("profile-{bench}-");
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        // A digit after the prefix: `smtp` must not take `smtp-store`'s files.
        if file_name.is_some_and(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        }) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Runs `perf record` on `true` to learn whether recording works here, failing with the
/// reason and how to allow it when not.
fn check_perf_record() -> Result<()> {
    let probe = std::env::temp_dir().join(format!("xtask-perf-probe-{}.data", std::process::id()));
    let mut cmd = Command::new("perf");
    cmd.args(["record", "-q", "-F", &FREQUENCY.to_string()])
        .args(["--call-graph", CALL_GRAPH, "-o"])
        .arg(&probe)
        .args(["--", "true"]);
    let output = cmd.output();
    let _ = std::fs::remove_file(&probe);
    let output = output.with_context(|| format!("could not start `{}`", display(&cmd)))?;
    if output.status.success() {
        return Ok(());
    }
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let how = match paranoid {
        Some(level) if level > 2 => format!(
            "kernel.perf_event_paranoid is {level}; sampling your own processes needs 2 or \
             lower: `sudo sysctl kernel.perf_event_paranoid=2` (or run as root)"
        ),
        Some(level) => format!(
            "kernel.perf_event_paranoid is {level}, which allows it, so something else refuses: \
             in a container the perf_event_open system call must be allowed (seccomp profile, \
             CAP_PERFMON or CAP_SYS_ADMIN)"
        ),
        None => "perf_event_open is not available (no /proc/sys/kernel/perf_event_paranoid): \
                 the kernel lacks perf events"
            .to_owned(),
    };
    bail!(
        "--profile: `{}` failed ({}), so the gateway cannot be profiled here: {}\n{how}",
        display(&cmd),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

/// `perf script` of one recording: the text inferno folds.
fn perf_script(recording: &Path) -> Result<String> {
    let mut cmd = Command::new("perf");
    // Without a specific field list perf adds fields (period, event) the folder reads.
    cmd.args(["script", "--no-inline", "-i"]).arg(recording);
    let output = cmd
        .output()
        .with_context(|| format!("could not start `{}`", display(&cmd)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display(&cmd),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).context("perf script printed something other than UTF-8")
}

/// Folds `perf script` text into `DIR/NAME.folded` and draws `DIR/NAME.svg`.
pub fn fold_and_render(script: &str, dir: &Path, name: &str) -> Result<Profile> {
    let mut options = inferno::collapse::perf::Options::default();
    // Kernel frames (system calls, fsync) stay in, marked so they read apart from ours.
    options.annotate_kernel = true;
    let mut folded = Vec::new();
    inferno::collapse::perf::Folder::from(options)
        .collapse(script.as_bytes(), &mut folded)
        .context("folding perf script output")?;
    let stacks = String::from_utf8(folded).context("folded stacks are not UTF-8")?;
    let folded = dir.join(format!("{name}.folded"));
    std::fs::write(&folded, &stacks).with_context(|| format!("writing {}", folded.display()))?;

    let mut graph = inferno::flamegraph::Options::default();
    graph.title = format!("{name} (gateway under cargo xtask bench --profile)");
    // Same colour for the same function in every graph, so two runs compare by eye.
    graph.hash = true;
    let mut svg_bytes = Vec::new();
    // Event lines start at the margin, their stack frames are indented.
    let samples = script
        .lines()
        .filter(|l| l.starts_with(|c: char| !c.is_whitespace()))
        .count() as u64;
    // An empty profile makes inferno write an error image; `finish` reports it instead.
    if stack_lines(&stacks).next().is_some() {
        inferno::flamegraph::from_lines(&mut graph, stacks.lines(), &mut svg_bytes)
            .context("drawing the flame graph")?;
    }
    let svg = dir.join(format!("{name}.svg"));
    std::fs::write(&svg, svg_bytes).with_context(|| format!("writing {}", svg.display()))?;
    Ok(Profile {
        svg,
        folded,
        samples,
        stacks,
    })
}

/// Folded stack lines as (frames, weight); lines that are not one are skipped. The weight is
/// each sample's period (nanoseconds of CPU for perf's `cpu-clock`, cycles for `cycles`), so
/// samples of a varying period count for what they stand for.
fn stack_lines(folded: &str) -> impl Iterator<Item = (&str, u64)> {
    folded.lines().filter_map(|line| {
        let (frames, count) = line.rsplit_once(' ')?;
        Some((frames, count.parse().ok()?))
    })
}

/// A function's share of the samples, as weights (see [`stack_lines`]).
#[derive(Debug, PartialEq)]
pub struct Share {
    pub function: String,
    /// Samples in the function itself.
    pub self_samples: u64,
    /// Samples with the function anywhere on the stack (once per stack, however deep).
    pub inclusive_samples: u64,
}

/// Self and inclusive weight of every function in folded stacks, and the total weight. The
/// first frame (the thread's name) is not a function and is left out.
pub fn shares(folded: &str) -> (Vec<Share>, u64) {
    let mut by_function: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut total = 0;
    for (frames, count) in stack_lines(folded) {
        total += count;
        let frames: Vec<&str> = frames.split(';').skip(1).collect();
        if let Some(leaf) = frames.last() {
            by_function.entry(leaf).or_default().0 += count;
        }
        let mut seen: Vec<&str> = Vec::with_capacity(frames.len());
        for frame in frames {
            // The root of a stack perf could not unwind to its end: no function.
            if frame != "[unknown]" && !seen.contains(&frame) {
                seen.push(frame);
                by_function.entry(frame).or_default().1 += count;
            }
        }
    }
    let mut shares: Vec<Share> = by_function
        .into_iter()
        .map(|(function, (self_samples, inclusive_samples))| Share {
            function: function.to_owned(),
            self_samples,
            inclusive_samples,
        })
        .collect();
    shares.sort_by(|a, b| a.function.cmp(&b.function));
    (shares, total)
}

/// The report's section: one line per flame graph, then the top functions of all of the
/// run's gateway processes together, by self and by inclusive share.
pub fn markdown(bench: &str, profiles: &[Profile]) -> String {
    let mut all = String::new();
    for p in profiles {
        all.push_str(&p.stacks);
    }
    let (mut shares, total) = shares(&all);
    let samples: u64 = profiles.iter().map(|p| p.samples).sum();
    let mut out = format!(
        "\n## Profile (`cargo xtask bench {bench} --profile`)\n\n\
         Every gateway process of the run under `perf record -F {FREQUENCY} --call-graph \
         {CALL_GRAPH}`; perf's overhead slows the gateway, so this run's figures above are \
         not comparable with an unprofiled run's. Flame graphs (open in a browser) and folded \
         stacks:\n\n"
    );
    for p in profiles {
        let _ = writeln!(
            out,
            "- `{}` ({} samples; stacks in `{}`)",
            p.svg.display(),
            p.samples,
            p.folded.display()
        );
    }
    let pct = |n: u64| 100.0 * n as f64 / total.max(1) as f64;
    let mut table = |title: &str, key: fn(&Share) -> u64, shares: &mut Vec<Share>| {
        shares.sort_by(|a, b| key(b).cmp(&key(a)).then(a.function.cmp(&b.function)));
        let _ = write!(
            out,
            "\n### Top {TOP} functions by {title} share ({samples} samples)\n\n\
             | self | inclusive | function |\n|---:|---:|---|\n"
        );
        for s in shares.iter().take(TOP) {
            let _ = writeln!(
                out,
                "| {:.1}% | {:.1}% | `{}` |",
                pct(s.self_samples),
                pct(s.inclusive_samples),
                s.function.replace('|', "\\|").replace('`', "'")
            );
        }
    };
    table("self", |s| s.self_samples, &mut shares);
    table("inclusive", |s| s.inclusive_samples, &mut shares);
    out
}

/// Whether some profile has a frame containing `needle` (`gateway::smtp`) in its graph.
pub fn names_function(profiles: &[Profile], needle: &str) -> Result<bool> {
    for p in profiles {
        let svg = std::fs::read_to_string(&p.svg)
            .with_context(|| format!("reading {}", p.svg.display()))?;
        if svg.contains(needle) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `text` in single quotes for /bin/sh.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `perf script` output of a few samples of a profiled smtp quick run, trimmed.
    const SAMPLE: &str = include_str!("../fixtures/perf-script-sample.txt");

    #[test]
    fn folds_a_perf_script_sample_into_a_flame_graph() {
        let dir = tempdir();
        let profile = fold_and_render(SAMPLE, &dir, "profile-smtp-1234").unwrap();
        assert_eq!(profile.svg, dir.join("profile-smtp-1234.svg"));
        let svg = std::fs::read_to_string(&profile.svg).unwrap();
        assert!(svg.starts_with("<?xml"), "{svg:.200}");
        assert!(svg.contains("gateway::smtp"), "no gateway::smtp frame");
        let folded = std::fs::read_to_string(&profile.folded).unwrap();
        assert_eq!(folded, profile.stacks);
        // Root first (the thread), leaf last, weighted by the sample's period; a stack perf
        // could not unwind to its root starts at `[unknown]`; kernel frames are marked.
        assert!(folded.lines().any(|l| {
            l
            == "tokio-rt-worker;[unknown];gateway::smtp::server::Connection<S,C>::run::{{closure}};\
                gateway::smtp::session::Session::commit_result;\
                gateway::smtp::conversation::Conversation<R>::send;\
                gateway::smtp::reply::Reply::write;\
                core::char::methods::<impl char>::encode_utf8;\
                core::char::methods::encode_utf8_raw 1001001"
        }));
        assert!(folded.contains(";exc_page_fault_[k];"), "{folded}");
        assert_eq!(folded.lines().count(), 4);
        assert_eq!(profile.samples, SAMPLE_COUNT);
        assert!(names_function(&[profile], "gateway::smtp").unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Samples (events) in the fixture.
    const SAMPLE_COUNT: u64 = 4;

    #[test]
    fn counts_self_and_inclusive_samples() {
        let folded =
            "thread;main;a;b 3\nthread;main;a 2\nthread;main;c;a;a 1\nbad line\nthread;[unknown];b 4\n";
        let (shares, total) = shares(folded);
        assert_eq!(total, 10);
        let get = |f: &str| shares.iter().find(|s| s.function == f).unwrap();
        assert_eq!(
            (get("main").self_samples, get("main").inclusive_samples),
            (0, 6)
        );
        // Recursion counts once per stack.
        assert_eq!((get("a").self_samples, get("a").inclusive_samples), (3, 6));
        assert_eq!((get("b").self_samples, get("b").inclusive_samples), (7, 7));
        assert!(shares
            .iter()
            .all(|s| s.function != "thread" && s.function != "[unknown]"));
    }

    #[test]
    fn the_report_ranks_functions() {
        let dir = tempdir();
        let profile = fold_and_render(SAMPLE, &dir, "profile-smtp-1234").unwrap();
        let text = markdown("smtp", &[profile]);
        assert!(
            text.contains("### Top 15 functions by self share"),
            "{text}"
        );
        assert!(
            text.contains("### Top 15 functions by inclusive share"),
            "{text}"
        );
        assert!(text.contains("profile-smtp-1234.svg"), "{text}");
        // Three of the fixture's four samples ran in the SMTP connection task: first by
        // inclusive share, never by self share.
        let inclusive = &text[text.find("by inclusive share").unwrap()..];
        let first_row = inclusive
            .lines()
            .find(|l| l.starts_with("| ") && l.contains('%'));
        assert_eq!(
            first_row,
            Some("| 0.0% | 75.0% | `gateway::smtp::server::Connection<S,C>::run::{{closure}}` |")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn finds_only_the_benchs_own_profiles() {
        let dir = tempdir();
        for name in [
            "profile-smtp-12.svg",
            "profile-smtp-12.perf",
            "profile-smtp-store-13.perf",
            "profile-smtp-wrapper.sh",
            "smtp.md",
        ] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        let found = profile_files(&dir, "smtp").unwrap();
        assert_eq!(
            found,
            [
                dir.join("profile-smtp-12.perf"),
                dir.join("profile-smtp-12.svg")
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_wrapper_execs_perf_record_on_its_arguments() {
        let script = wrapper_script(Path::new("/t/bench-reports/profile-smtp-"));
        assert_eq!(
            script.lines().last(),
            Some(
                "exec perf record -q -F 499 --call-graph dwarf,32768 \
                 -o '/t/bench-reports/profile-smtp-'\"$$.perf\" -- \"$@\""
            )
        );
        assert!(script.starts_with("#!/bin/sh\n"));
    }

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("/a/b"), "'/a/b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    /// A fresh directory of this test's own (xtask has no tempfile dependency).
    fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xtask-profile-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
