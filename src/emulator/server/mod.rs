//! # The EC2 Query-API server
//!
//! The HTTP face of the emulator engine (docs/emulator.md): it speaks EC2's Query
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
//! - A body over EC2's 2 MB request limit ([`codes::MAX_REQUEST_BYTES`]) is
//!   read to its end (up to [`MAX_DRAINED_BYTES`], so the client is not reset
//!   while still sending) and answered `RequestEntityTooLargeException` (413)
//!   in the same error document; it reaches no engine.
//! - A request with an `X-Amz-Target` header is SQS's JSON protocol: the
//!   event queue ([`sqs`], `docs/emulator.md`), on the same listener.
//! - The requests' `User-Agent` and SigV4 credential scope become the
//!   `userAgent`, `accessKeyId` and region of the events they publish.
//! - Accounts and regions ([`Cloud`], docs/emulator.md): the request's
//!   access key picks the account, its signing scope the region, and the
//!   pair its world; a scope whose service is `sts` (or an unsigned
//!   `AssumeRole`/`GetCallerIdentity`) is STS's Query API ([`sts`]).
//! - `GET /_emulator/calls` serves the counters as JSON, `POST
//!   /_emulator/reset-calls` zeroes them (the home world's, or
//!   `?account=…&region=…`'s). `POST /_emulator/roles/revoke?arn=…` and
//!   `/_emulator/roles/restore?arn=…` revoke and restore a role (404 for an
//!   unknown role); `POST /_emulator/regions/down?region=…` and
//!   `/_emulator/regions/up?region=…` take a region down and back up.

mod actions;
mod query;
mod sqs;
mod sts;
mod xml;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use tokio::net::TcpListener;

use crate::ec2::{Ec2Error, Operation};
use crate::model::GroupId;

use super::cloud::Cloud;
use super::events::Caller;
use super::state::Fail;
use super::{Emulator, codes, with_caller};

/// An oversized body is read (and dropped) to its end up to this many bytes,
/// so that the client, still sending, reads the error document instead of a
/// connection reset; past it the connection is closed after the answer.
pub const MAX_DRAINED_BYTES: usize = 64 * 1024 * 1024;

/// The header EC2 and the SDK use for the request id.
const REQUEST_ID_HEADER: &str = "x-amzn-requestid";

struct Server {
    cloud: Cloud,
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
    cloud_router(Cloud::new(emulator))
}

/// [`router`] for every world of `cloud`, with STS.
pub fn cloud_router(cloud: Cloud) -> Router {
    let server = Arc::new(Server { cloud, requests: AtomicU64::new(0) });
    Router::new()
        .route("/_emulator/calls", get(calls))
        .route("/_emulator/reset-calls", post(reset_calls))
        .route("/_emulator/roles/{verb}", post(roles))
        .route("/_emulator/regions/{verb}", post(regions))
        .fallback(query_api)
        // The Query API applies EC2's own limit, answered in EC2's error
        // document ([`read_body`]), instead of axum's plain-text 413.
        .layer(DefaultBodyLimit::disable())
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
    serve_cloud(Cloud::new(emulator), listener, shutdown).await
}

/// [`serve`] for every world of `cloud` ([`cloud_router`]).
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve_cloud(
    cloud: Cloud,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let events = cloud.home();
    let shutdown = async move {
        shutdown.await;
        // Long polls would hold the graceful shutdown for up to 20 s.
        if let Some(queue) = events.events() {
            queue.close();
        }
    };
    axum::serve(listener, cloud_router(cloud)).with_graceful_shutdown(shutdown).await
}

/// The value of `key` in a query string, decoded.
fn query_value(uri: &Uri, key: &str) -> Option<String> {
    let params = query::Params::decode(uri.query(), b"").ok()?;
    params.get(key).map(str::to_owned)
}

/// The world a control request names (`?account=…&region=…`), else the home world.
fn named_world(server: &Server, uri: &Uri) -> Emulator {
    match (query_value(uri, "account"), query_value(uri, "region")) {
        (None, None) => server.cloud.home(),
        (account, region) => server.cloud.world(
            &account.unwrap_or_else(|| server.cloud.default_account()),
            region.as_deref().unwrap_or(super::cloud::HOME_REGION),
        ),
    }
}

async fn calls(State(server): State<Arc<Server>>, uri: Uri) -> Response {
    let json = named_world(&server, &uri).counters().to_json();
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

async fn reset_calls(State(server): State<Arc<Server>>, uri: Uri) -> StatusCode {
    named_world(&server, &uri).reset_counters();
    StatusCode::NO_CONTENT
}

async fn roles(
    State(server): State<Arc<Server>>,
    axum::extract::Path(verb): axum::extract::Path<String>,
    uri: Uri,
) -> StatusCode {
    let Some(arn) = query_value(&uri, "arn") else { return StatusCode::BAD_REQUEST };
    let revoked = match verb.as_str() {
        "revoke" => true,
        "restore" => false,
        _ => return StatusCode::NOT_FOUND,
    };
    if server.cloud.set_role_revoked(&arn, revoked) {
        tracing::info!(role = %arn, revoked, "emulator role revoked or restored");
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn regions(
    State(server): State<Arc<Server>>,
    axum::extract::Path(verb): axum::extract::Path<String>,
    uri: Uri,
) -> StatusCode {
    let Some(region) = query_value(&uri, "region") else { return StatusCode::BAD_REQUEST };
    let down = match verb.as_str() {
        "down" => true,
        "up" => false,
        _ => return StatusCode::NOT_FOUND,
    };
    server.cloud.set_region_down(&region, down);
    tracing::info!(region, down, "emulator region taken down or brought back");
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

/// An authorize naming a group of another account (`UserId` + `GroupId`)
/// that account does not have as a VPC group in the request's region is
/// refused as EC2 refuses it: `InvalidGroup.NotFound`. (Such a reference is
/// allowed between peered VPCs of one region; peering is not modelled, so
/// any VPC group of that account and region is accepted.)
fn foreign_reference_refusal(
    cloud: &Cloud,
    world: &Emulator,
    region: Option<&str>,
    params: &query::Params,
) -> Option<Refusal> {
    let action = params.get("Action")?;
    if action != "AuthorizeSecurityGroupIngress" && action != "AuthorizeSecurityGroupEgress" {
        return None;
    }
    let own = world.account_id();
    let region = region.unwrap_or(super::cloud::HOME_REGION);
    // EC2-Classic groups reference other accounts' Classic groups (the
    // Classic ELB's `amazon-elb/amazon-elb-sg`) without any peering.
    let holder = params.get("GroupId").and_then(|id| GroupId::try_new(id).ok());
    if holder.and_then(|id| world.peek_group(&id)).is_none_or(|g| g.vpc_id.is_none()) {
        return None;
    }
    let permissions = actions::ip_permissions(params).ok()?;
    permissions.iter().flat_map(|p| &p.user_id_group_pairs).find_map(|pair| {
        let (Some(user), Some(group)) = (pair.user_id.as_deref(), pair.group_id.as_deref()) else { return None };
        if user == own {
            return None;
        }
        let found = GroupId::try_new(group).is_ok_and(|id| cloud.has_vpc_group(user, region, &id));
        (!found).then(|| Refusal {
            code: codes::GROUP_NOT_FOUND.to_owned(),
            message: format!("The security group '{group}' does not exist"),
        })
    })
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

/// The service of a SigV4 `Authorization` header's credential scope
/// (`Credential=AKID/20240101/us-east-1/ec2/aws4_request`).
fn signing_service(authorization: Option<&str>) -> Option<String> {
    let credential = authorization?.split("Credential=").nth(1)?.split([',', ' ']).next()?;
    credential.split('/').nth(3).filter(|s| !s.is_empty()).map(str::to_owned)
}

fn xml_response(status: StatusCode, request_id: &str, body: String) -> Response {
    let mut response = (status, [(header::CONTENT_TYPE, "text/xml;charset=UTF-8")], body).into_response();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// The request body, or the refusal of one over [`codes::MAX_REQUEST_BYTES`]
/// (read on to [`MAX_DRAINED_BYTES`] first) or cut off by the client.
async fn read_body(body: Body) -> Result<Bytes, Refusal> {
    let mut stream = body.into_data_stream();
    let mut kept: Vec<u8> = Vec::new();
    let mut total: usize = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Refusal {
            code: codes::MALFORMED_QUERY_STRING.to_owned(),
            message: format!("The request body could not be read: {e}"),
        })?;
        total = total.saturating_add(chunk.len());
        if total <= codes::MAX_REQUEST_BYTES {
            kept.extend_from_slice(&chunk);
        } else if total > MAX_DRAINED_BYTES {
            break;
        }
    }
    if total > codes::MAX_REQUEST_BYTES {
        return Err(Refusal {
            code: codes::REQUEST_ENTITY_TOO_LARGE.to_owned(),
            message: format!("The request body exceeds the maximum request size of {} bytes", codes::MAX_REQUEST_BYTES),
        });
    }
    Ok(Bytes::from(kept))
}

async fn query_api(State(server): State<Arc<Server>>, headers: HeaderMap, uri: Uri, body: Body) -> Response {
    let request_id = server.next_request_id();
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let answer = match read_body(body).await {
        Ok(body) => {
            if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
                // A JSON-protocol request: the event queue's SQS API.
                let endpoint = sqs::endpoint_from_host(header(header::HOST));
                let home = server.cloud.home();
                return sqs::ENDPOINT.scope(endpoint, sqs::handle(&home, target, &body, &request_id)).await;
            }
            let caller =
                Caller::from_headers(header(header::USER_AGENT), header(header::AUTHORIZATION), "127.0.0.1".into());
            let service = signing_service(header(header::AUTHORIZATION));
            let params = query::Params::decode(uri.query(), &body);
            if let Ok(params) = &params
                && sts::is_sts(service.as_deref(), params.get("Action"))
            {
                let (status, body) = sts::handle(&server.cloud, caller.access_key_id.as_deref(), params, &request_id);
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                tracing::debug!(request_id, status = status.as_u16(), "STS request answered");
                return xml_response(status, &request_id, body);
            }
            match server.cloud.ec2_world(caller.access_key_id.as_deref(), caller.region.as_deref()) {
                Ok(world) => match params
                    .as_ref()
                    .ok()
                    .and_then(|p| foreign_reference_refusal(&server.cloud, &world, caller.region.as_deref(), p))
                {
                    Some(refusal) => Err(refusal),
                    None => with_caller(caller, handle(&world, uri.query(), &body)).await,
                },
                Err(refusal) => Err(Refusal { code: refusal.code.to_owned(), message: refusal.message }),
            }
        }
        Err(refusal) => Err(refusal),
    };
    match answer {
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
