//! The emulator engine served in-process over HTTP on 127.0.0.1:0, for the
//! tests that speak EC2's (and SQS's) wire protocol to it without starting
//! the binary.

use classiclink_mirror::emulator::{Emulator, server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// An [`Emulator`] served on 127.0.0.1:0 for one test; stops when dropped.
pub struct ServedEmulator {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The engine behind the server, for setting up and checking state
    /// without a request.
    pub emulator: Emulator,
    stop: Option<oneshot::Sender<()>>,
}

impl ServedEmulator {
    /// Serves `emulator` on a free port of 127.0.0.1.
    pub async fn start(emulator: Emulator) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let world = emulator.clone();
        tokio::spawn(async move {
            server::serve(world, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("the emulator serves");
        });
        Self { url, emulator, stop: Some(stop) }
    }
}

impl Drop for ServedEmulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
