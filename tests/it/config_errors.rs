//! Snapshots of what `validate` prints for a mapping file with many errors at
//! once (every error, with its key path, in file order;
//! docs/configuration.md), values beyond their bounds, and thousands of
//! duplicate entries.

use std::path::Path;

use classiclink_mirror::config::{Config, ConfigError, ConfigLoadError, render_errors};

fn fixture_errors(name: &str) -> Vec<ConfigError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config").join(name);
    match Config::load(&path, None) {
        Err(ConfigLoadError::Invalid { errors, .. }) => errors,
        other => panic!("expected validation errors, got {other:?}"),
    }
}

fn bad_config_errors() -> Vec<ConfigError> {
    fixture_errors("bad.toml")
}

/// `line:column kind path` of each error.
fn located(errors: &[ConfigError]) -> Vec<String> {
    errors
        .iter()
        .map(|e| {
            let at = e.location().map_or_else(|| "-".to_owned(), |l| format!("{}:{}", l.line, l.column));
            format!("{at} {} {}", e.kind(), e.path)
        })
        .collect()
}

#[test]
fn every_error_of_a_bad_config_is_rendered_in_file_order() {
    insta::assert_snapshot!(render_errors(&bad_config_errors()));
}

#[test]
fn every_error_of_a_bad_config_has_a_location_and_a_kind() {
    let located = located(&bad_config_errors());
    insta::assert_yaml_snapshot!(located);
}

#[test]
fn every_value_beyond_its_bounds_and_every_control_character_is_an_error_naming_the_key_and_range() {
    insta::assert_snapshot!(render_errors(&fixture_errors("bounds.toml")));
}

#[test]
fn every_error_of_the_bounds_fixture_has_a_location_and_a_kind() {
    let located = located(&fixture_errors("bounds.toml"));
    insta::assert_yaml_snapshot!(located);
}

#[test]
fn a_file_that_is_not_utf8_is_an_error_naming_the_file_and_the_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.toml");
    std::fs::write(&path, b"[aws]\nregion = \"us-east-1\"\n# caf\xe9\n").unwrap();
    let error = Config::load(&path, None).unwrap_err();
    assert_eq!(error.kind(), "read");
    assert_eq!(
        error.to_string(),
        format!(
            "cannot read configuration file {}: the file is not UTF-8 text: invalid byte at line 3, column 6",
            path.display()
        )
    );
}

/// `count` `[[mirror]]` entries, each made by `entry(i)`.
fn many_mirrors(count: usize, entry: impl Fn(usize) -> String) -> String {
    let mut text = String::from("[aws]\nregion = \"us-east-1\"\n");
    for i in 0..count {
        text.push_str(&entry(i));
    }
    text
}

#[test]
fn twenty_thousand_duplicate_mirrors_are_each_reported_once_against_the_first() {
    // Validating 20,000 duplicate entries took 23 s: each error's line and
    // column were found by scanning the text before it. The errors must be
    // every duplicate, each pointing at the first entry, in file order.
    const N: usize = 20_000;
    let text = many_mirrors(N, |_| "[[mirror]]\nsource_group = \"sg-0a1b2c3d\"\nvpc = \"vpc-9f2e1d0c\"\n".to_owned());
    let errors = Config::from_toml_str(&text, None).unwrap_err();
    assert_eq!(errors.len(), N - 1);
    for (i, error) in errors.iter().enumerate() {
        let entry = i + 1;
        assert_eq!(error.path, format!("mirror[{entry}].source_group"));
        assert_eq!(error.message, "\"sg-0a1b2c3d\" is already mapped by mirror[0]");
        assert_eq!(error.kind(), "duplicate");
        let location = error.location().expect("located");
        assert_eq!((location.line, location.column), (2 + 3 * entry + 2, 16), "{error}");
    }

    // The same mirror name in one VPC, from distinct sources.
    let text = many_mirrors(N, |i| {
        format!("[[mirror]]\nsource_group = \"sg-{i:08x}\"\nvpc = \"vpc-9f2e1d0c\"\nname = \"Web\"\n")
    });
    let errors = Config::from_toml_str(&text, None).unwrap_err();
    assert_eq!(errors.len(), N - 1);
    assert!(errors.iter().all(|e| e.kind() == "duplicate" && e.path.ends_with(".name")));
    assert_eq!(
        errors.last().map(ToString::to_string).as_deref(),
        Some("mirror[19999].name: mirror name \"Web\" is already used in vpc-9f2e1d0c by mirror[0]")
    );
}

#[test]
fn an_environment_region_does_not_hide_errors_in_the_file() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/bad.toml"))
        .expect("fixture is readable");
    let errors = Config::from_toml_str(&text, Some("eu-west-1")).expect_err("fixture is invalid");
    assert_eq!(errors, bad_config_errors());
}

#[test]
fn every_error_of_the_accounts_keys_names_its_account_or_mirror() {
    insta::assert_snapshot!(render_errors(&fixture_errors("accounts.toml")));
}
