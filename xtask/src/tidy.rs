//! Checks on the workspace itself, run as ordinary tests (`cargo test -p xtask`).

/// The import graph of a crate's top-level modules, read from its source text: the layering
/// check below keeps the gateway's acyclic, so each module can be read, tested and moved
/// with only the modules beneath it.
///
/// A node is a folder or `.rs` file directly under `src` (not `lib.rs` or `main.rs`); an
/// edge A -> B is a mention of `crate::B` in A's code that is not test-only. Test-only
/// means comment lines (doc comments too), files named `tests.rs` or `*_tests.rs` or under
/// a `tests` folder, and items behind `#[cfg(test)]`: blocks, and module files they declare
/// (`#[cfg(test)] mod name;`). The source is expected as rustfmt writes it: a block behind
/// the attribute ends at the first `}` line at the item's own indentation.
#[cfg(test)]
mod module_graph {
    use std::collections::{BTreeMap, BTreeSet};

    /// Edges of the graph: (from, to) and the files of `from` that mention `crate::to`.
    pub type Edges = BTreeMap<(String, String), BTreeSet<String>>;

    /// The graph of `files`: (path under `src` with `/` separators, text) pairs. Pure, so a
    /// test can build one from a few lines of synthetic source.
    pub fn edges(files: &[(String, String)]) -> Edges {
        let modules: BTreeSet<&str> = files.iter().filter_map(|(path, _)| top(path)).collect();
        let mut test_only = Vec::new();
        let mut code = Vec::new();
        for (path, text) in files {
            let (lines, test_modules) = non_test_code(text);
            test_only.extend(test_modules.iter().map(|name| child(path, name)));
            code.push((path, lines));
        }
        let mut edges = Edges::new();
        for (path, lines) in code {
            let Some(from) = top(path) else { continue };
            let declared_test_only = test_only
                .iter()
                .any(|dir| path == &format!("{dir}.rs") || path.starts_with(&format!("{dir}/")));
            if is_test_file(path) || declared_test_only {
                continue;
            }
            for to in mentioned(&lines) {
                if to != from && modules.contains(to.as_str()) {
                    edges
                        .entry((from.to_owned(), to))
                        .or_default()
                        .insert(path.clone());
                }
            }
        }
        edges
    }

    /// The top-level module a file belongs to; `None` for the crate roots.
    fn top(path: &str) -> Option<&str> {
        let first = path.split('/').next()?;
        let name = first.strip_suffix(".rs").unwrap_or(first);
        (name != "lib" && name != "main").then_some(name)
    }

    fn is_test_file(path: &str) -> bool {
        let mut parts: Vec<&str> = path.split('/').collect();
        let file = parts.pop().unwrap_or_default();
        file == "tests.rs" || file.ends_with("_tests.rs") || parts.contains(&"tests")
    }

    /// Where `mod name;` in the file at `path` looks for its module (without `.rs`).
    fn child(path: &str, name: &str) -> String {
        let dir = if path == "lib.rs" || path == "main.rs" {
            ""
        } else if let Some(dir) = path.strip_suffix("/mod.rs") {
            dir
        } else {
            path.strip_suffix(".rs").unwrap_or(path)
        };
        if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        }
    }

    /// The lines of `text` that are neither comments nor behind `#[cfg(test)]`, and the
    /// names of the module files declared behind it.
    fn non_test_code(text: &str) -> (Vec<&str>, Vec<String>) {
        let mut code = Vec::new();
        let mut test_modules = Vec::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//") {
                continue;
            }
            if trimmed != "#[cfg(test)]" {
                code.push(line);
                continue;
            }
            // Skip the item the attribute applies to (after any further attributes): one
            // line ending in `;` or `}`, or a head ending in `{` up to its closing `}` line.
            let indent = &line[..line.len() - trimmed.len()];
            for item in lines.by_ref() {
                let item = item.trim();
                if item.starts_with("#[") {
                    continue;
                }
                if item.ends_with(';') {
                    let words: Vec<&str> = item.trim_end_matches(';').split_whitespace().collect();
                    if let [.., "mod", name] = words[..] {
                        test_modules.push(name.to_owned());
                    }
                    break;
                }
                if item.ends_with('}') {
                    break;
                }
                if item.ends_with('{') {
                    let close = format!("{indent}}}");
                    for inner in lines.by_ref() {
                        let inner = inner.trim_end();
                        if inner == close || inner.strip_suffix(';') == Some(close.as_str()) {
                            break;
                        }
                    }
                    break;
                }
            }
        }
        (code, test_modules)
    }

    /// The names `lines` reach as `crate::name` or `crate::{name, ...}`.
    fn mentioned(lines: &[&str]) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let text = lines.join("\n");
        let ident = |s: &str| -> String {
            s.trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        for (at, _) in text.match_indices("crate::") {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &text[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // Top-level names of the group, up to its closing brace.
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            names.insert(ident(&group[start..i]));
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            names.insert(ident(&group[start..i]));
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
            } else {
                names.insert(ident(rest));
            }
        }
        names.remove("");
        names
    }

    /// The strongly connected components with more than one module: each is a cycle, or
    /// several cycles through shared modules. Tarjan's algorithm.
    pub fn cycles(edges: &Edges) -> Vec<Vec<String>> {
        let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (from, to) in edges.keys() {
            next.entry(from).or_default().push(to);
            next.entry(to).or_default();
        }
        struct Search<'a> {
            next: &'a BTreeMap<&'a str, Vec<&'a str>>,
            index: BTreeMap<&'a str, usize>,
            low: BTreeMap<&'a str, usize>,
            stack: Vec<&'a str>,
            components: Vec<Vec<String>>,
        }
        impl<'a> Search<'a> {
            fn visit(&mut self, v: &'a str) {
                let i = self.index.len();
                self.index.insert(v, i);
                self.low.insert(v, i);
                self.stack.push(v);
                let next = self.next;
                for &w in &next[v] {
                    if !self.index.contains_key(w) {
                        self.visit(w);
                        self.low.insert(v, self.low[v].min(self.low[w]));
                    } else if self.stack.contains(&w) {
                        self.low.insert(v, self.low[v].min(self.index[w]));
                    }
                }
                if self.low[v] == self.index[v] {
                    let at = self.stack.iter().rposition(|&w| w == v).unwrap_or(0);
                    let mut component: Vec<String> =
                        self.stack.drain(at..).map(str::to_owned).collect();
                    component.sort();
                    if component.len() > 1 {
                        self.components.push(component);
                    }
                }
            }
        }
        let mut search = Search {
            next: &next,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            components: Vec::new(),
        };
        for &v in next.keys() {
            if !search.index.contains_key(v) {
                search.visit(v);
            }
        }
        search.components.sort();
        search.components
    }

    /// Each cycle with the edges inside it and the files that make each edge.
    pub fn describe(edges: &Edges, cycles: &[Vec<String>]) -> String {
        let mut text = String::new();
        for cycle in cycles {
            text.push_str(&format!("cycle: {}\n", cycle.join(", ")));
            for ((from, to), files) in edges {
                if cycle.contains(from) && cycle.contains(to) {
                    let files: Vec<&str> = files.iter().map(String::as_str).collect();
                    text.push_str(&format!("  {from} -> {to}: {}\n", files.join(", ")));
                }
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::module_graph;
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

    /// `Gateway::store_for_tests` reaches past the service, and `Writes::redb_for_tests`
    /// past the storage boundary; only tests may call them (they are public because
    /// integration tests build without `test-support`).
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
                        // Unit tests may reach the raw transaction; they follow the code.
                        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                        if text.contains(".store_for_tests(") || code.contains(".redb_for_tests(") {
                            offenders.push(path.display().to_string());
                        }
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "store_for_tests or redb_for_tests called in {offenders:?}"
        );
    }

    /// Every `.rs` file under `dir`, as (path relative to `dir` with `/`, text).
    fn rust_files(dir: &std::path::Path) -> Vec<(String, String)> {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(path) = stack.pop() {
            for entry in std::fs::read_dir(&path)
                .expect("read the source folder")
                .flatten()
            {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let relative = path.strip_prefix(dir).expect("under the folder");
                    let relative: Vec<_> = relative
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    let text = std::fs::read_to_string(&path).expect("read a source file");
                    files.push((relative.join("/"), text));
                }
            }
        }
        files
    }

    /// The gateway's top-level modules form layers: leaves such as `crypto`, `mailbox`,
    /// `net` and `tls` at the bottom, `service` above them, protocols, API, console, CLI
    /// and server at the top. A cycle means two modules can only be understood, tested and
    /// changed together; break it by moving the shared piece down or the assembling piece
    /// up, not by duplicating it.
    #[test]
    fn the_gateways_top_level_modules_import_each_other_without_cycles() {
        let files = rust_files(&crate::util::workspace_root().join("gateway/src"));
        let edges = module_graph::edges(&files);
        // A wrong path or a parser that sees nothing would pass the check below vacuously.
        assert!(
            edges.contains_key(&("service".to_owned(), "store".to_owned())),
            "the graph misses service -> store: {edges:?}"
        );
        let cycles = module_graph::cycles(&edges);
        assert!(
            cycles.is_empty(),
            "import cycles between the gateway's top-level modules:\n{}",
            module_graph::describe(&edges, &cycles)
        );
    }

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(path, text)| (path.to_string(), text.to_string()))
            .collect()
    }

    #[test]
    fn cycles_are_found_and_named_with_the_files_that_make_each_edge() {
        let tree = files(&[
            ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n"),
            ("a/mod.rs", "mod inner;\nuse crate::b::Thing;\n"),
            ("a/inner.rs", "fn f() { crate::d::g(); }\n"),
            ("b.rs", "use crate::{c::One, d};\n"),
            ("c.rs", "pub fn h() { crate::a::f() }\n"),
            ("d.rs", "use crate::a;\n"),
        ]);
        let edges = module_graph::edges(&tree);
        let cycles = module_graph::cycles(&edges);
        assert_eq!(cycles, [["a", "b", "c", "d"]]);
        let text = module_graph::describe(&edges, &cycles);
        for line in [
            "cycle: a, b, c, d",
            "  a -> b: a/mod.rs",
            "  a -> d: a/inner.rs",
            "  b -> c: b.rs",
            "  b -> d: b.rs",
            "  c -> a: c.rs",
            "  d -> a: d.rs",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        // Two separate cycles are two components.
        let tree = files(&[
            ("a.rs", "use crate::b;"),
            ("b.rs", "use crate::a;"),
            ("c.rs", "use crate::d;"),
            ("d.rs", "use crate::c; use crate::a;"),
        ]);
        let cycles = module_graph::cycles(&module_graph::edges(&tree));
        assert_eq!(cycles, [["a", "b"], ["c", "d"]]);
    }

    #[test]
    fn comments_and_test_only_code_make_no_edge() {
        let tree = files(&[
            (
                "a/mod.rs",
                "//! Uses [`crate::b`].\n\
                 /// See crate::b.\n\
                 // crate::b::f()\n\
                 #[cfg(test)]\n\
                 fn one_line() { crate::b::f() }\n\
                 use crate::c;\n\
                 #[cfg(test)]\n\
                 mod helpers;\n\
                 #[cfg(test)]\n\
                 #[allow(unused)]\n\
                 fn fixture() {\n    crate::b::f();\n}\n\
                 #[cfg(test)]\n\
                 mod tests {\n    use crate::b;\n    fn t() {\n        b::f();\n    }\n}\n",
            ),
            ("a/helpers.rs", "use crate::b;\n"),
            ("a/tests.rs", "use crate::b;\n"),
            ("a/session_tests.rs", "use crate::b;\n"),
            ("a/tests/case.rs", "use crate::b;\n"),
            ("b.rs", "use crate::a;\nuse mycrate::c;\n"),
            ("c.rs", ""),
        ]);
        let edges = module_graph::edges(&tree);
        let pairs: Vec<_> = edges.keys().cloned().collect();
        assert_eq!(
            pairs,
            [
                ("a".to_owned(), "c".to_owned()),
                ("b".to_owned(), "a".to_owned())
            ]
        );
        assert!(module_graph::cycles(&edges).is_empty());
    }
}
