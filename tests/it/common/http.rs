//! The daemon's HTTP endpoints as the end-to-end tests read them: a free
//! port to listen on, `GET` that never fails, `/status` as JSON, one value
//! of `/metrics`, and whether the last pass settled (see
//! `docs/operations.md` for the endpoints).

use serde_json::Value;

/// A free port on 127.0.0.1 (for a daemon's `daemon.listen`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET url`: the status code and body; `(0, "")` when nothing answers.
pub async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// `{base}/status` as JSON; `None` when it cannot be had.
pub async fn status(base: &str) -> Option<Value> {
    let (code, body) = get(&format!("{base}/status")).await;
    if code != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

/// `{base}/metrics` (empty when nothing answers).
pub async fn metrics(base: &str) -> String {
    get(&format!("{base}/metrics")).await.1
}

/// The value of the sample `name` (with its labels, as printed) in a
/// `/metrics` text; 0 when absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Whether a `/status` document's last pass succeeded with nothing to do.
pub fn settled(status: &Value) -> bool {
    let cycle = &status["last_cycle"];
    cycle["outcome"] == "success"
        && cycle["actions"].as_object().is_some_and(|a| a.values().all(|n| n.as_u64() == Some(0)))
}

/// Whether the daemon at `base` answers `/status` with a settled last pass.
pub async fn converged(base: &str) -> bool {
    status(base).await.is_some_and(|s| settled(&s))
}
