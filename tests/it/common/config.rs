//! Daemon configuration files for the end-to-end tests: `[aws]` pointing at
//! a local endpoint, a one-second interval, and the state file in the
//! test's own directory (never /var/lib).

use std::path::{Path, PathBuf};

use super::http::free_port;

/// The config text: `[aws]` at `url` in us-east-1, `[daemon]` with a
/// 1 s interval, `listen` and `state_dir`, then `extra` (which may continue
/// `[daemon]` before its own sections).
pub fn daemon_toml(url: &str, listen: &str, state_dir: &Path, extra: &str) -> String {
    let state_dir = state_dir.display();
    format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\n[daemon]\ninterval = \"1s\"\nlisten = \"{listen}\"\n\
         state_dir = \"{state_dir}\"\n{extra}"
    )
}

/// Writes [`daemon_toml`] to `dir/mirror.toml`, its state file in `dir`;
/// returns the path.
pub fn write_config(dir: &Path, url: &str, listen: &str, extra: &str) -> PathBuf {
    let path = dir.join("mirror.toml");
    std::fs::write(&path, daemon_toml(url, listen, dir, extra)).unwrap();
    path
}

/// [`write_config`] listening on a free port; returns the path and the
/// daemon's base URL (`http://127.0.0.1:PORT`).
pub fn write_listening_config(dir: &Path, url: &str, extra: &str) -> (PathBuf, String) {
    let port = free_port();
    let path = write_config(dir, url, &format!("127.0.0.1:{port}"), extra);
    (path, format!("http://127.0.0.1:{port}"))
}
