//! Checks on the workspace itself, run as ordinary tests (`cargo test -p xtask`).

#[cfg(test)]
mod tests {
    use crate::util::cargo;

    /// `cargo tree`'s view of the `gateway` crate's features when cargo builds `packages`
    /// together (none: the workspace's default members, i.e. a plain `cargo build`).
    fn gateway_features(packages: &[&str]) -> String {
        let mut cmd = cargo();
        cmd.args([
            "tree",
            "--locked",
            "--edges",
            "normal,build,features",
            "--invert",
            "gateway",
            "--prefix",
            "none",
        ]);
        for package in packages {
            cmd.args(["--package", package]);
        }
        let out = cmd.output().expect("run cargo tree");
        assert!(
            out.status.success(),
            "cargo tree: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("cargo tree prints UTF-8")
    }

    /// `test-support` can skip fsync; the binary a plain release build produces must not
    /// have it. The simulator's build is the control: it does enable the feature.
    #[test]
    fn plain_build_at_the_root_has_no_test_support() {
        const FEATURE: &str = "gateway feature \"test-support\"";
        let default = gateway_features(&[]);
        assert!(default.contains("gateway v"), "{default}");
        assert!(!default.contains(FEATURE), "{default}");
        let sim = gateway_features(&["sim"]);
        assert!(sim.contains(FEATURE), "{sim}");
    }

    /// `Gateway::store_for_tests` reaches past the service; only integration tests may
    /// call it (it is public because they build without `test-support`).
    #[test]
    fn only_integration_tests_reach_past_the_service() {
        let root = crate::util::workspace_root();
        let mut offenders = Vec::new();
        for dir in [
            "gateway/src",
            "sim/src",
            "bench",
            "conformance/src",
            "xtask/src",
        ] {
            let mut stack = vec![root.join(dir)];
            while let Some(path) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&path) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if path.extension().is_some_and(|e| e == "rs")
                        && !path.ends_with("xtask/src/tidy.rs")
                    {
                        let text = std::fs::read_to_string(&path).unwrap_or_default();
                        if text.contains(".store_for_tests(") {
                            offenders.push(path.display().to_string());
                        }
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "store_for_tests called in {offenders:?}"
        );
    }
}
