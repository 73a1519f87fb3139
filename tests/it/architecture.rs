//! The dependency arrow of `docs/architecture.md`, checked on the source:
//! only the AWS adapter (`src/ec2/aws/`) imports the AWS SDK, and the pure
//! planner (`src/plan/`) reads no clock, does no I/O and draws no random
//! numbers. And the repository cites only documents it holds.

use std::path::{Path, PathBuf};

/// `(file, line number, line)` for every line of `src/**.rs` under `within`
/// (relative to `src/`) containing one of `needles`, outside `except`.
fn lines_using(within: &str, needles: &[&str], except: &str) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src.join(within), &mut files);
    files.retain(|file| file.extension().is_some_and(|e| e == "rs"));
    assert!(!files.is_empty(), "no Rust file under src/{within}");
    let mut hits = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src").to_string_lossy().replace('\\', "/");
        if !except.is_empty() && relative.starts_with(except) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if needles.iter().any(|needle| code.contains(needle)) {
                hits.push(format!("src/{relative}:{}: {}", number + 1, line.trim()));
            }
        }
    }
    hits
}

#[test]
fn only_the_aws_adapter_imports_the_aws_sdk() {
    let hits = lines_using("", &["aws_sdk_", "aws_config", "aws_smithy", "aws_credential_types"], "ec2/aws/");
    assert!(hits.is_empty(), "the AWS SDK used outside src/ec2/aws/:\n{}", hits.join("\n"));
}

#[test]
fn the_planner_reads_no_clock_and_does_no_io() {
    let needles = ["SystemTime::now", "Instant::now", "std::fs", "tokio::", "rand::", "std::net", "std::env"];
    let hits = lines_using("plan", &needles, "");
    assert!(hits.is_empty(), "the planner must stay pure:\n{}", hits.join("\n"));
}

/// Every text file of the repository that a reader meets: sources, tests,
/// docs, scripts and the shipped files.
fn repository_texts() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "docs", "examples", "benches", "scripts", "config", "systemd"] {
        walk(&root.join(dir), &mut files);
    }
    for file in ["README.md", "Dockerfile", "Cargo.toml"] {
        files.push(root.join(file));
    }
    files
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            walk(&path, found);
        } else {
            found.push(path);
        }
    }
}

#[test]
fn no_file_cites_a_specification_the_repository_does_not_hold() {
    // The product's contract is its docs/, README and --help; the brief it
    // was first built from is not part of the repository. Written in two
    // halves so this file does not match itself.
    let needles = [["SP", "EC §"].concat(), ["SP", "EC.md"].concat()];
    let mut hits = Vec::new();
    for file in repository_texts() {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        for (number, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle.as_str())) {
                hits.push(format!("{}:{}: {}", file.display(), number + 1, line.trim()));
            }
        }
    }
    assert!(hits.is_empty(), "cite docs/ instead:\n{}", hits.join("\n"));
}
