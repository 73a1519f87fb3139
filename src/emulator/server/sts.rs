//! STS over the Query protocol, on the EC2 listener: `AssumeRole` and
//! `GetCallerIdentity` as `aws-sdk-sts` (and so `aws-config`'s
//! `AssumeRoleProvider`) sends and reads them — a form-encoded POST with
//! `Action`, `Version=2011-06-15`, answered in the
//! `https://sts.amazonaws.com/doc/2011-06-15/` namespace; failures are STS's
//! `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>` with
//! 403 for `AccessDenied`, 400 otherwise. The rules are [`Cloud`]'s.

use std::time::SystemTime;

use super::super::cloud::{AssumeRoleRequest, Cloud, CloudRefusal};
use super::super::codes;
use super::query::Params;
use super::xml::Xml;

/// The namespace of every STS answer.
const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// The STS actions the emulator answers.
pub(crate) const ACTIONS: &[&str] = &["AssumeRole", "GetCallerIdentity"];

/// Whether a request is for STS: its signing scope names the service, or,
/// unsigned, its `Action` is one of STS's.
pub(crate) fn is_sts(service: Option<&str>, action: Option<&str>) -> bool {
    match service {
        Some(service) => service == "sts",
        None => action.is_some_and(|a| ACTIONS.contains(&a)),
    }
}

/// The HTTP status of an STS error code.
pub(crate) fn status(code: &str) -> u16 {
    match code {
        codes::ACCESS_DENIED | codes::EXPIRED_TOKEN => 403,
        _ => 400,
    }
}

/// Answers one STS request: `(status, body)`.
pub(crate) fn handle(cloud: &Cloud, access_key: Option<&str>, params: &Params, request_id: &str) -> (u16, String) {
    match answer(cloud, access_key, params) {
        Ok((action, inner)) => (200, response(action, &inner, request_id)),
        Err(refusal) => (status(refusal.code), error(&refusal, request_id)),
    }
}

fn answer(cloud: &Cloud, access_key: Option<&str>, params: &Params) -> Result<(&'static str, String), CloudRefusal> {
    let now = SystemTime::now();
    let caller = cloud.identity(access_key, now)?;
    let refusal = |code: &'static str, message: String| CloudRefusal { code, message };
    match params.get("Action").unwrap_or_default() {
        "GetCallerIdentity" => {
            let mut x = Xml::new();
            x.text("Arn", &caller.arn).text("UserId", &caller.user_id).text("Account", &caller.account_id);
            Ok(("GetCallerIdentity", x.into_string()))
        }
        "AssumeRole" => {
            let required = |key: &str| {
                params.get(key).filter(|v| !v.is_empty()).map(str::to_owned).ok_or_else(|| {
                    refusal(codes::MISSING_PARAMETER, format!("The request must contain the parameter {key}"))
                })
            };
            let duration_seconds = match params.get("DurationSeconds") {
                None => None,
                Some(text) => Some(text.trim().parse::<u64>().map_err(|_| {
                    refusal(codes::VALIDATION_ERROR, format!("DurationSeconds {text:?} is not an integer"))
                })?),
            };
            let request = AssumeRoleRequest {
                role_arn: required("RoleArn")?,
                session_name: required("RoleSessionName")?,
                duration_seconds,
                external_id: params.get("ExternalId").map(str::to_owned),
            };
            let credentials = cloud.assume_role(&caller, &request, now)?;
            let mut x = Xml::new();
            x.open("Credentials")
                .text("AccessKeyId", &credentials.access_key_id)
                .text("SecretAccessKey", &credentials.secret_access_key)
                .text("SessionToken", &credentials.session_token)
                .text("Expiration", &humantime::format_rfc3339_seconds(credentials.expiration).to_string())
                .close("Credentials")
                .open("AssumedRoleUser")
                .text("AssumedRoleId", &credentials.assumed_role_id)
                .text("Arn", &credentials.assumed_role_arn)
                .close("AssumedRoleUser");
            Ok(("AssumeRole", x.into_string()))
        }
        other => {
            Err(refusal(codes::INVALID_ACTION, format!("Could not find operation {other} for version 2011-06-15")))
        }
    }
}

fn response(action: &str, inner: &str, request_id: &str) -> String {
    let mut x = Xml::new();
    x.open("ResponseMetadata").text("RequestId", request_id).close("ResponseMetadata");
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"{NAMESPACE}\"><{action}Result>{inner}\
         </{action}Result>{}</{action}Response>",
        x.into_string()
    )
}

fn error(refusal: &CloudRefusal, request_id: &str) -> String {
    // Every refusal the emulator makes is the caller's doing.
    let mut x = Xml::new();
    x.open("Error").text("Type", "Sender").text("Code", refusal.code).text("Message", &refusal.message).close("Error");
    x.text("RequestId", request_id);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse xmlns=\"{NAMESPACE}\">{}</ErrorResponse>",
        x.into_string()
    )
}
