//! Snapshots of what `validate` prints for a mapping file with many errors at
//! once (SPEC §3: every error, with its key path, in file order).

use std::path::Path;

use classiclink_mirror::config::{Config, ConfigLoadError, render_errors};

fn bad_config_errors() -> Vec<classiclink_mirror::config::ConfigError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/bad.toml");
    match Config::load(&path, None) {
        Err(ConfigLoadError::Invalid { errors, .. }) => errors,
        other => panic!("expected validation errors, got {other:?}"),
    }
}

#[test]
fn every_error_of_a_bad_config_is_rendered_in_file_order() {
    insta::assert_snapshot!(render_errors(&bad_config_errors()));
}

#[test]
fn every_error_of_a_bad_config_has_a_location_and_a_kind() {
    let located: Vec<String> = bad_config_errors()
        .iter()
        .map(|e| {
            let at = e.location().map_or_else(|| "-".to_owned(), |l| format!("{}:{}", l.line, l.column));
            format!("{at} {} {}", e.kind(), e.path)
        })
        .collect();
    insta::assert_yaml_snapshot!(located);
}

#[test]
fn an_environment_region_does_not_hide_errors_in_the_file() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/bad.toml"))
        .expect("fixture is readable");
    let errors = Config::from_toml_str(&text, Some("eu-west-1")).expect_err("fixture is invalid");
    assert_eq!(errors, bad_config_errors());
}
