//! The dependency arrow of `docs/architecture.md`, checked on the source:
//! only the AWS adapter (`src/ec2/aws/`) imports the AWS SDK, and the pure
//! planner (`src/plan/`) reads no clock, does no I/O and draws no random
//! numbers.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// `(file, line number, line)` for every line of `src/**.rs` under `within`
/// (relative to `src/`) containing one of `needles`, outside `except`.
fn lines_using(within: &str, needles: &[&str], except: &str) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join(within), &mut files);
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
