//! The documentation's claims about the repository, checked.
//!
//! The documents are `README.md`, `docs/*.md`, `benches/README.md` and
//! `charts/ltigate/README.md`. They name tests in two ways, and each named
//! test must exist and must not be ignored (Rust: `fn NAME` under a test
//! attribute and no `#[ignore]`; Python: `def NAME` with no skip marker):
//!
//! - a table row with one or more backticked test files (`tests/X.rs`,
//!   `src/….rs`, `tests/chart/X.py`) names, in backticks in its last cell,
//!   test functions each found in one of those files;
//! - `cargo test --test X NAME` names the test `NAME` of `tests/X.rs`.
//!
//! Besides: every backticked repository path (`tests/…`, `src/…`, …) exists,
//! every relative link resolves (to a file of the repository and, with a
//! `#fragment` into Markdown, to one of its headings), every key of
//! `config/ltigate.toml` is in `docs/configuration.md`, and no file of the
//! repository points at a directory beside it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The checked documents, relative to the repository root.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| {
            p.strip_prefix(root())
                .expect("under the root")
                .to_path_buf()
        })
        .collect();
    docs.sort();
    let mut all: Vec<PathBuf> = ["README.md", "benches/README.md", "charts/ltigate/README.md"]
        .iter()
        .map(PathBuf::from)
        .collect();
    all.append(&mut docs);
    all
}

fn read(rel: &Path) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{}: {e}", rel.display()))
}

/// The lines of a Markdown text outside fenced code blocks, numbered from 1.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// The backticked spans of a line.
fn ticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.contains('_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// A file that can hold tests.
fn is_test_file(s: &str) -> bool {
    (s.starts_with("tests/") || s.starts_with("src/"))
        && (s.ends_with(".rs") || s.ends_with(".py"))
        && !s.contains(['<', '*', ' '])
}

/// A test the documents name: where, which function, in which files.
#[derive(Debug)]
struct Named {
    at: String,
    name: String,
    files: Vec<String>,
}

fn named_tests(doc: &Path, text: &str) -> Vec<Named> {
    let mut out = Vec::new();
    // Table rows naming files and, in their last cell, tests.
    for (n, line) in prose_lines(text) {
        let row = line.trim();
        if !row.starts_with('|') {
            continue;
        }
        let files: Vec<String> = ticked(row)
            .into_iter()
            .filter(|t| is_test_file(t))
            .map(str::to_string)
            .collect();
        if files.is_empty() {
            continue;
        }
        let cells: Vec<&str> = row
            .trim_matches('|')
            .split('|')
            .filter(|c| !c.trim().is_empty())
            .collect();
        let last = cells.last().copied().unwrap_or("");
        for name in ticked(last).into_iter().filter(|t| is_identifier(t)) {
            out.push(Named {
                at: format!("{}:{n}", doc.display()),
                name: name.to_string(),
                files: files.clone(),
            });
        }
    }
    // `cargo test --test X NAME`, in prose or in code blocks.
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("cargo test") {
            rest = &rest[at + "cargo test".len()..];
            let words: Vec<&str> = rest
                .split(|c: char| c.is_whitespace() || c == '`')
                .filter(|w| !w.is_empty())
                .take(3)
                .collect();
            if let [flag, file, name] = words[..] {
                if flag == "--test" && is_identifier(name) && is_file_stem(file) {
                    let main = format!("tests/{file}/main.rs");
                    let file = if root().join(&main).is_file() {
                        main
                    } else {
                        format!("tests/{file}.rs")
                    };
                    out.push(Named {
                        at: format!("{}:{}", doc.display(), i + 1),
                        name: name.to_string(),
                        files: vec![file],
                    });
                }
            }
        }
    }
    out
}

fn is_file_stem(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Why `name` is not a runnable test in the source `text` of `file`, if it
/// is not.
fn not_a_test(file: &str, text: &str, name: &str) -> Option<String> {
    match test_status(file, text, name) {
        Status::Runs => None,
        Status::Missing => Some(format!("has no `{name}`")),
        Status::Not(why) => Some(why),
    }
}

enum Status {
    Runs,
    Missing,
    Not(String),
}

fn test_status(file: &str, text: &str, name: &str) -> Status {
    let lines: Vec<&str> = text.lines().collect();
    let python = file.ends_with(".py");
    let defines = |l: &str| {
        let l = l.trim_start();
        if python {
            l.strip_prefix("async ")
                .unwrap_or(l)
                .strip_prefix("def ")
                .is_some_and(|r| r.strip_prefix(name).is_some_and(|r| r.starts_with('(')))
        } else {
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let l = l.strip_prefix("async ").unwrap_or(l);
            l.strip_prefix("fn ").is_some_and(|r| {
                r.strip_prefix(name)
                    .is_some_and(|r| r.starts_with('(') || r.starts_with('<'))
            })
        }
    };
    let Some(at) = lines.iter().position(|l| defines(l)) else {
        return Status::Missing;
    };
    // The attributes (or decorators) and comments right above it.
    let above: Vec<&str> = lines[..at]
        .iter()
        .rev()
        .map(|l| l.trim())
        .take_while(|l| {
            if python {
                l.starts_with('@') || l.starts_with('#')
            } else {
                l.starts_with("#[") || l.starts_with("//") || l.ends_with(")]")
            }
        })
        .filter(|l| !(l.starts_with("//") || (python && l.starts_with('#'))))
        .collect();
    if python {
        if let Some(skip) = above.iter().find(|l| l.contains("skip")) {
            return Status::Not(format!("is skipped ({skip})"));
        }
        if !name.starts_with("test") {
            return Status::Not(
                "is not a pytest test (its name does not start with `test`)".into(),
            );
        }
    } else {
        if let Some(ignore) = above.iter().find(|l| l.contains("ignore")) {
            return Status::Not(format!("is ignored ({ignore})"));
        }
        // A case of a macro that makes one test per backend is listed by
        // name in the macro's invocation.
        let listed = lines.iter().any(|l| l.trim().trim_end_matches(',') == name);
        if !listed && !above.iter().any(|l| l.contains("test")) {
            return Status::Not("has no test attribute and is in no list of test cases".into());
        }
    }
    Status::Runs
}

/// Finds where `named` is defined; `Err` says what is wrong.
fn check_named(named: &Named) -> Result<(), String> {
    let mut reasons = Vec::new();
    for file in &named.files {
        let Ok(text) = std::fs::read_to_string(root().join(file)) else {
            reasons.push(format!("{file} does not exist"));
            continue;
        };
        match test_status(file, &text, &named.name) {
            Status::Runs => return Ok(()),
            Status::Missing => reasons.push(format!("{file} has no `{}`", named.name)),
            Status::Not(why) => {
                return Err(format!("{}: `{}` in {file} {why}", named.at, named.name))
            }
        }
    }
    Err(format!(
        "{}: `{}` is not a test in {:?}: {}",
        named.at,
        named.name,
        named.files,
        reasons.join("; ")
    ))
}

#[test]
fn every_test_the_documents_name_exists_and_is_not_ignored() {
    let mut problems = Vec::new();
    let mut per_doc: HashMap<PathBuf, usize> = HashMap::new();
    for doc in documents() {
        for named in named_tests(&doc, &read(&doc)) {
            *per_doc.entry(doc.clone()).or_default() += 1;
            if let Err(e) = check_named(&named) {
                problems.push(e);
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The parser still finds the security page's table of tests.
    let security = per_doc
        .get(Path::new("docs/security.md"))
        .copied()
        .unwrap_or(0);
    assert!(
        security >= 50,
        "only {security} tests named in docs/security.md"
    );
}

#[test]
fn a_renamed_or_ignored_test_is_caught() {
    let doc = Path::new("docs/example.md");
    let text = "| what | file | test |\n|---|---|---|\n\
                | x | `tests/docs.rs` | `every_test_the_documents_name_exists_and_is_not_ignored`, `no_such_test_anywhere` |\n\
                \n```sh\ncargo test --test docs a_renamed_or_ignored_test_is_caught\n```\n";
    let named = named_tests(doc, text);
    let names: Vec<&str> = named.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "every_test_the_documents_name_exists_and_is_not_ignored",
            "no_such_test_anywhere",
            "a_renamed_or_ignored_test_is_caught"
        ]
    );
    assert!(check_named(&named[0]).is_ok());
    assert!(check_named(&named[1]).is_err());
    assert!(check_named(&named[2]).is_ok());

    let source = "#[test]\n#[ignore = \"slow\"]\nfn slow_one() {}\n\n#[tokio::test]\nasync fn fast_one() {}\n\nfn helper() {}\n\n\
                  cases!(\n    a_case,\n);\npub async fn a_case() {}\n";
    assert!(not_a_test("tests/x.rs", source, "slow_one").is_some_and(|w| w.contains("ignored")));
    assert_eq!(not_a_test("tests/x.rs", source, "fast_one"), None);
    assert!(not_a_test("tests/x.rs", source, "helper").is_some());
    assert_eq!(not_a_test("tests/x.rs", source, "a_case"), None);
    assert!(not_a_test("tests/x.rs", source, "no_such_fn").is_some());
    let python = "@pytest.mark.skip(reason=\"x\")\ndef test_skipped():\n    pass\n\n\ndef test_run():\n    pass\n";
    assert!(not_a_test("tests/chart/t.py", python, "test_skipped").is_some());
    assert_eq!(not_a_test("tests/chart/t.py", python, "test_run"), None);
}

/// Backticked paths into the repository's directories exist.
#[test]
fn every_repository_path_the_documents_name_exists() {
    const DIRS: [&str; 10] = [
        "tests/",
        "src/",
        "benches/",
        "scripts/",
        "config/",
        "charts/",
        "fuzz/",
        "examples/",
        "docs/",
        ".ci/",
    ];
    let mut problems = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        for (n, line) in read(&doc).lines().enumerate() {
            for path in ticked(line) {
                let path = path.trim_end_matches(['.', ',', ':']);
                if !DIRS.iter().any(|d| path.starts_with(d))
                    || path.contains(['<', '*', ' ', '…', '{', '$'])
                {
                    continue;
                }
                checked += 1;
                // `examples/X` names the example `examples/X.rs`.
                if !root().join(path).exists() && !root().join(format!("{path}.rs")).exists() {
                    problems.push(format!(
                        "{}:{}: `{path}` does not exist",
                        doc.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 50, "only {checked} paths checked");
}

/// The anchors of a Markdown text's headings, as GitHub makes them.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.bytes().take_while(|&b| b == b'#').count();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let slug: String = line[hashes..]
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let count = seen.entry(slug.clone()).or_default();
        out.insert(if *count == 0 {
            slug.clone()
        } else {
            format!("{slug}-{count}")
        });
        *count += 1;
    }
    out
}

/// The targets of the Markdown links of a text, with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose_lines(text) {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                out.push((n, rest[..end].to_string()));
                rest = &rest[end..];
            }
        }
    }
    out
}

/// `path` without `.` and `..` components; `None` if it leaves the root.
fn normalise(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(p) => out.push(p),
            _ => return None,
        }
    }
    Some(out)
}

#[test]
fn every_relative_link_resolves() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = read(&doc);
        for (n, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let at = format!("{}:{n}: ({target})", doc.display());
            let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() {
                doc.clone()
            } else {
                let dir = doc.parent().unwrap_or(Path::new(""));
                match normalise(&dir.join(path)) {
                    Some(p) => p,
                    None => {
                        problems.push(format!("{at} leaves the repository"));
                        continue;
                    }
                }
            };
            if !root().join(&file).exists() {
                problems.push(format!("{at}: {} does not exist", file.display()));
                continue;
            }
            if !fragment.is_empty()
                && file.extension().is_some_and(|x| x == "md")
                && !anchors(&read(&file)).contains(fragment)
            {
                problems.push(format!(
                    "{at}: no heading #{fragment} in {}",
                    file.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 20, "only {checked} links checked");
}

#[test]
fn anchors_are_made_as_github_makes_them() {
    let text = "# Title\n## Install: standalone\n## `X-LTI-Course-Roles`, courses in tabs\n\
                ```\n# not a heading\n```\n## Brightspace (D2L): External Learning Tools\n## Title\n";
    let got: Vec<String> = anchors(text).into_iter().collect();
    assert_eq!(
        got,
        [
            "brightspace-d2l-external-learning-tools",
            "install-standalone",
            "title",
            "title-1",
            "x-lti-course-roles-courses-in-tabs"
        ]
    );
}

/// Every key of the shipped configuration file, as the reference names it:
/// `section.key`, `consumers[].key`, `platforms[].key`, `courses.<id>.key`.
fn shipped_keys() -> BTreeSet<String> {
    let text = read(Path::new("config/ltigate.toml"));
    let mut section = String::new();
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        let bare = line.strip_prefix("# ").unwrap_or(line);
        if let Some(name) = bare.strip_prefix('[').and_then(|s| s.split(']').next()) {
            let name = name.trim_start_matches('[');
            section = if name == "consumers" || name == "platforms" {
                format!("{name}[]")
            } else if name.starts_with("courses.") {
                "courses.<id>".into()
            } else {
                name.to_string()
            };
            continue;
        }
        if let Some((key, _)) = bare.split_once(" = ") {
            if !section.is_empty() && is_file_stem(key) {
                keys.insert(format!("{section}.{key}"));
            }
        }
    }
    keys
}

#[test]
fn the_configuration_reference_has_every_key_of_the_shipped_file() {
    let keys = shipped_keys();
    assert!(keys.len() >= 50, "only {} keys read: {keys:?}", keys.len());
    for key in [
        "server.send_timeout",
        "store.timeout",
        "consumers[].secret",
        "courses.<id>.landing_path",
    ] {
        assert!(
            keys.contains(key),
            "{key} not read from config/ltigate.toml"
        );
    }
    let reference = read(Path::new("docs/configuration.md"));
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !reference.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/configuration.md: {missing:?}"
    );
}

/// The repository's files: tracked and new ones, as git lists them.
fn repository_files() -> Vec<PathBuf> {
    let out = std::process::Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root())
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git ls-files: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
        .collect()
}

#[test]
fn no_file_points_outside_the_repository() {
    let beside = ["..", "shared"].join("/");
    let mut offenders = Vec::new();
    let files = repository_files();
    assert!(files.iter().any(|f| f == Path::new("tests/docs.rs")));
    for file in &files {
        let Ok(bytes) = std::fs::read(root().join(file)) else {
            continue; // deleted in the working tree
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue; // not text
        };
        for (n, line) in text.lines().enumerate() {
            if line.contains(&beside) {
                offenders.push(format!("{}:{}: {line}", file.display(), n + 1));
            }
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}
