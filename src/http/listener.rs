//! The HTTP listener, hardened for months unattended (`docs/operations.md`,
//! "The HTTP listener"): a header-read timeout that also closes idle
//! keep-alive connections, a cap on open connections that closes the oldest
//! idle one to make room, and accept errors (`EMFILE`) that back off instead
//! of spinning.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::time::Instant;

use super::routes::router;
use super::state::State;

/// Limits of the HTTP listener (`docs/operations.md`, "The HTTP listener").
#[derive(Clone, Debug)]
pub struct ListenerLimits {
    /// A connection must send a request's headers within this time of the
    /// server starting to wait for them. The wait starts when the connection
    /// opens and again after each answer, so this is also the idle
    /// (keep-alive) timeout: a connection that sends nothing is closed after it.
    pub header_read_timeout: Duration,
    /// Open connections at most. A connection beyond it closes the oldest
    /// connection with no request under way to make room, or is closed
    /// itself when every open connection is busy.
    pub max_connections: usize,
    /// The pause after an accept error such as `EMFILE` (too many open
    /// files) before accepting again, so that the loop neither spins nor stops.
    pub accept_error_backoff: Duration,
}

/// [`ListenerLimits::header_read_timeout`] by default.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// [`ListenerLimits::max_connections`] by default.
pub const MAX_CONNECTIONS: usize = 128;

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            accept_error_backoff: Duration::from_millis(100),
        }
    }
}

/// One open connection: how many of its requests are under way, and how to
/// close it.
struct Slot {
    busy: Arc<std::sync::atomic::AtomicUsize>,
    close: tokio_util::sync::CancellationToken,
}

/// The open connections, oldest first (ids grow).
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: BTreeMap<u64, Slot>,
}

impl Connections {
    /// Closes the oldest connection with no request under way; false if
    /// every connection is busy.
    fn close_oldest_idle(&mut self) -> bool {
        use std::sync::atomic::Ordering;
        let idle = self.open.iter().find(|(_, slot)| slot.busy.load(Ordering::SeqCst) == 0).map(|(id, _)| *id);
        match idle.and_then(|id| self.open.remove(&id)) {
            Some(slot) => {
                slot.close.cancel();
                true
            }
            None => false,
        }
    }
}

/// Counts a request under way on its connection while alive.
struct Busy(Arc<std::sync::atomic::AtomicUsize>);

impl Busy {
    fn enter(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(Arc::clone(count))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A warning logged at most once per [`Self::EVERY`], with the number of
/// occurrences it stood for: a flood of accept errors or of connections
/// must not become a flood of log lines.
#[derive(Default)]
struct RareWarning {
    last: Option<Instant>,
    suppressed: u64,
}

impl RareWarning {
    const EVERY: Duration = Duration::from_secs(10);

    /// `Some(n)` when this occurrence should be logged, `n` being how many
    /// were not since the last one logged; `None` when it should not.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.saturating_duration_since(last) < Self::EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Accept errors about one connection that went away before it was
/// accepted: nothing to wait for.
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then finishes
/// the requests in flight, with the default [`ListenerLimits`].
///
/// # Errors
/// None today: accept errors are logged and waited out (the signature keeps
/// room for a fatal one).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: State,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_limits(listener, router(state), ListenerLimits::default(), shutdown).await
}

/// Serves `app` over HTTP/1.1 on `listener` within `limits` until `shutdown`
/// resolves; then stops accepting, lets each connection finish its request
/// under way (idle ones close at once) and returns.
///
/// hyper enforces the header-read (and so idle) timeout; the connection cap
/// is written here because neither hyper, hyper-util nor tower limits
/// *connections* (tower's limits count requests, and an idle connection
/// makes none), and a plain cap that stops accepting would leave `/healthz`
/// queued behind idle sockets until they time out.
///
/// # Errors
/// None today: accept errors are logged and waited out.
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let connections = Arc::new(Mutex::new(Connections::default()));
    let mut tasks = tokio::task::JoinSet::new();
    let draining = tokio_util::sync::CancellationToken::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let max_connections = limits.max_connections.max(1);
    let mut accept_warning = RareWarning::default();
    let mut full_warning = RareWarning::default();
    tokio::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connection tasks as they end.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // EMFILE, ENFILE, ENOBUFS...: the connection waits in the
                // backlog. Free a descriptor if an idle connection holds one
                // and try again as soon as it is closed; otherwise wait a
                // little instead of spinning on the error.
                let freed = connections.lock().close_oldest_idle();
                if let Some(suppressed) = accept_warning.due() {
                    tracing::warn!(error = %error, suppressed,
                        "the HTTP listener cannot accept a connection; retrying shortly");
                }
                let pause = if freed { Duration::from_millis(1) } else { limits.accept_error_backoff };
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let (id, busy, close) = {
            let mut open = connections.lock();
            if open.open.len() >= max_connections && !open.close_oldest_idle() {
                if let Some(suppressed) = full_warning.due() {
                    tracing::warn!(
                        max_connections,
                        suppressed,
                        "every HTTP connection is busy: a new connection was closed"
                    );
                }
                continue;
            }
            let id = open.next_id;
            open.next_id += 1;
            let slot = Slot { busy: Arc::default(), close: tokio_util::sync::CancellationToken::new() };
            let handles = (id, Arc::clone(&slot.busy), slot.close.clone());
            open.open.insert(id, slot);
            handles
        };
        let service = {
            let tower = TowerToHyperService::new(app.clone());
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let busy = Busy::enter(&busy);
                let answer = hyper::service::Service::call(&tower, request);
                async move {
                    let response = answer.await;
                    drop(busy);
                    response
                }
            })
        };
        let http1 = http1.clone();
        let connections = Arc::clone(&connections);
        let draining = draining.clone();
        tasks.spawn(async move {
            let connection = http1.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let drain = tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(error = %error, "an HTTP connection ended with an error");
                    }
                    false
                }
                // Closed to make room: dropping the connection closes the socket.
                () = close.cancelled() => false,
                () = draining.cancelled() => true,
            };
            if drain {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
            connections.lock().open.remove(&id);
        });
    }
    drop(listener);
    draining.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_with_a_request_under_way_is_not_closed_to_make_room() {
        let mut open = Connections::default();
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let close = tokio_util::sync::CancellationToken::new();
        open.open.insert(0, Slot { busy: Arc::clone(&busy), close: close.clone() });
        let guard = Busy::enter(&busy);
        assert!(!open.close_oldest_idle(), "the only connection is busy");
        assert!(!close.is_cancelled());
        drop(guard);
        assert!(open.close_oldest_idle());
        assert!(close.is_cancelled());
        assert!(open.open.is_empty());
    }
}
