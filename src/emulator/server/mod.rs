//! # The EC2 Query-API server
//!
//! The HTTP face of the emulator engine (SPEC §9): it speaks EC2's Query
//! protocol so the unmodified `aws-sdk-ec2` client — and so the daemon's
//! [`AwsEc2`](crate::ec2::aws::AwsEc2) adapter, `demo` and the end-to-end
//! tests — talk to the in-memory [`Emulator`] over real HTTP.
//!
//! ```text
//!  aws-sdk-ec2 ──POST / (form: Action, Version, GroupId.1, Filter.1.Name, …)──► query ─► actions ─► Emulator
//!              ◄── 200 <{Action}Response xmlns=…2016-11-15/> / 4xx·5xx <Response><Errors>… ── xml ◄──┘
//! ```
//!
//! - Requests: form-encoded POST bodies or GET query strings, `Action` and
//!   `Version`, EC2's flattened indexed lists ([`query`]). SigV4 headers are
//!   accepted and ignored.
//! - Answers: XML in the `http://ec2.amazonaws.com/doc/2016-11-15/` namespace
//!   with a `requestId` ([`xml`]); failures are EC2 error documents with the
//!   status of [`codes::http_status`] (400, 503 for `RequestLimitExceeded`,
//!   500 for `InternalError`).
//! - Every request naming a known action goes through the engine's request
//!   pipeline — parameter refusals included — so throttling, injected faults
//!   and the per-action counters apply to it.
//! - A request with an `X-Amz-Target` header is SQS's JSON protocol: the
//!   event queue ([`sqs`], `docs/emulator.md`), on the same listener.
//! - The requests' `User-Agent` and SigV4 credential scope become the
//!   `userAgent`, `accessKeyId` and region of the events they publish.
//! - `GET /_emulator/calls` serves the counters as JSON, `POST
//!   /_emulator/reset-calls` zeroes them.

mod actions;
mod query;
mod sqs;
mod xml;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::ec2::{Ec2Error, Operation};

use super::events::Caller;
use super::state::Fail;
use super::{Emulator, codes, with_caller};

/// The header EC2 and the SDK use for the request id.
const REQUEST_ID_HEADER: &str = "x-amzn-requestid";

struct Server {
    emulator: Emulator,
    requests: AtomicU64,
}

impl Server {
    fn next_request_id(&self) -> String {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        format!("00000000-0000-4000-8000-{n:012x}")
    }
}

/// The emulator's HTTP routes: the EC2 Query API on every path other than
/// `/_emulator/*` (the SDK posts to the endpoint URL's path, `/`), and the
/// counters.
pub fn router(emulator: Emulator) -> Router {
    let server = Arc::new(Server { emulator, requests: AtomicU64::new(0) });
    Router::new()
        .route("/_emulator/calls", get(calls))
        .route("/_emulator/reset-calls", post(reset_calls))
        .fallback(query_api)
        .with_state(server)
}

/// Serves [`router`] on `listener` until `shutdown` completes, then lets
/// requests in flight finish.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve(
    emulator: Emulator,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let events = emulator.clone();
    let shutdown = async move {
        shutdown.await;
        // Long polls would hold the graceful shutdown for up to 20 s.
        if let Some(queue) = events.events() {
            queue.close();
        }
    };
    axum::serve(listener, router(emulator)).with_graceful_shutdown(shutdown).await
}

async fn calls(State(server): State<Arc<Server>>) -> Response {
    let json = server.emulator.counters().to_json();
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

async fn reset_calls(State(server): State<Arc<Server>>) -> StatusCode {
    server.emulator.reset_counters();
    StatusCode::NO_CONTENT
}

/// An EC2 error to answer: code and message.
#[derive(Debug)]
struct Refusal {
    code: String,
    message: String,
}

impl From<Fail> for Refusal {
    fn from(fail: Fail) -> Self {
        Self { code: fail.code.to_owned(), message: fail.message }
    }
}

impl From<Ec2Error> for Refusal {
    fn from(error: Ec2Error) -> Self {
        Self { code: error.code, message: error.message }
    }
}

async fn handle(emulator: &Emulator, query: Option<&str>, body: &[u8]) -> Result<(Operation, String), Refusal> {
    let params = query::Params::decode(query, body)?;
    let Some(action) = params.get("Action").filter(|a| !a.is_empty()) else {
        return Err(Fail::new(codes::MISSING_ACTION, "The request must contain the parameter Action").into());
    };
    let Some(operation) = Operation::from_name(action) else {
        let message = format!("The action {action} is not valid for this web service.");
        return Err(Fail::new(codes::INVALID_ACTION, message).into());
    };
    let inner = actions::run(emulator, operation, &params).await?;
    Ok((operation, inner))
}

fn xml_response(status: StatusCode, request_id: &str, body: String) -> Response {
    let mut response = (status, [(header::CONTENT_TYPE, "text/xml;charset=UTF-8")], body).into_response();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

async fn query_api(State(server): State<Arc<Server>>, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let request_id = server.next_request_id();
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        // A JSON-protocol request: the event queue's SQS API.
        let endpoint = sqs::endpoint_from_host(header(header::HOST));
        return sqs::ENDPOINT.scope(endpoint, sqs::handle(&server.emulator, target, &body, &request_id)).await;
    }
    let caller = Caller::from_headers(header(header::USER_AGENT), header(header::AUTHORIZATION), "127.0.0.1".into());
    match with_caller(caller, handle(&server.emulator, uri.query(), &body)).await {
        Ok((operation, inner)) => {
            tracing::debug!(action = operation.as_str(), request_id, "EC2 request answered");
            xml_response(StatusCode::OK, &request_id, xml::response(operation.as_str(), &request_id, &inner))
        }
        Err(refusal) => {
            let status = StatusCode::from_u16(codes::http_status(&refusal.code)).unwrap_or(StatusCode::BAD_REQUEST);
            tracing::debug!(code = %refusal.code, request_id, status = status.as_u16(), "EC2 request refused");
            xml_response(status, &request_id, xml::error(&refusal.code, &refusal.message, &request_id))
        }
    }
}
