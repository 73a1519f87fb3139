//! SDK failures → [`Ec2Error`], classified by EC2 error *code* (never the
//! message), and the malformed-answer errors of [`super::convert`].

use std::error::Error as StdError;
use std::fmt;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::ec2::codes::{
    CONNECTION_ERROR, CREDENTIALS_UNAVAILABLE, DISPATCH_FAILURE, MALFORMED_RESPONSE, REQUEST_CONSTRUCTION_FAILED,
    RETURNED_FALSE, THROTTLING, TIMEOUT, UNKNOWN_ERROR, UNKNOWN_SDK_ERROR,
};
use crate::ec2::{Ec2Error, Operation};
use crate::model::ModelError;

/// EC2 answers `Return=false` when it did not do what was asked (ClassicLink
/// not possible for this VPC, say) without an error code: an error all the
/// same, or the executor would count it done.
pub(super) fn check_return(op: Operation, value: Option<bool>) -> Result<(), Ec2Error> {
    match value {
        Some(false) => {
            Err(Ec2Error::new(op, RETURNED_FALSE, "EC2 answered Return=false: the action was not performed"))
        }
        _ => Ok(()),
    }
}

/// Classifies any SDK failure of `op` into an [`Ec2Error`]:
///
/// - an EC2 error document → its code (`ProvideErrorMetadata::code`, never
///   the message), classified by [`super::ErrorKind::from_code`];
/// - an answer without a code → by HTTP status (5xx transient, 429 throttled,
///   a 2xx that could not be read fatal `MalformedResponse`, any other
///   fatal `HttpStatusNNN`);
/// - no answer (timeouts, refused or reset connections) → transient
///   `Timeout` / `ConnectionError`;
/// - credentials that cannot be loaded → fatal `CredentialsUnavailable`
///   (transient `Timeout` when the provider timed out);
/// - a request that cannot be built or sent for another reason → fatal.
pub(super) fn classify<E>(op: Operation, err: SdkError<E, HttpResponse>) -> Ec2Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&err).to_string();
    if let Some(creds) = find_source::<CredentialsError>(&err) {
        return match creds {
            CredentialsError::ProviderTimedOut(_) => Ec2Error::transport(op, TIMEOUT, detail),
            _ => Ec2Error::new(op, CREDENTIALS_UNAVAILABLE, detail),
        };
    }
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            from_answer(op, err.code(), err.message().or(Some(detail.as_str())), Some(status))
        }
        SdkError::ResponseError(response) => {
            let status = response.raw().status().as_u16();
            from_answer(op, None, Some(&detail), Some(status))
        }
        SdkError::TimeoutError(_) => Ec2Error::transport(op, TIMEOUT, detail),
        SdkError::DispatchFailure(dispatch) if dispatch.is_timeout() => Ec2Error::transport(op, TIMEOUT, detail),
        SdkError::DispatchFailure(dispatch) if dispatch.is_io() => Ec2Error::transport(op, CONNECTION_ERROR, detail),
        // `is_user` (a bad endpoint URL, say) and `is_other`: sending again
        // will fail the same way.
        SdkError::DispatchFailure(_) => Ec2Error::new(op, DISPATCH_FAILURE, detail),
        SdkError::ConstructionFailure(_) => Ec2Error::new(op, REQUEST_CONSTRUCTION_FAILED, detail),
        _ => Ec2Error::new(op, UNKNOWN_SDK_ERROR, detail),
    }
}

/// Classifies an answer EC2 (or something in front of it) gave: by code
/// when there is one, else by HTTP status.
fn from_answer(op: Operation, code: Option<&str>, message: Option<&str>, status: Option<u16>) -> Ec2Error {
    let message = message.unwrap_or_default();
    match (code.filter(|c| !c.is_empty()), status) {
        (Some(code), _) => Ec2Error::new(op, code, message),
        (None, Some(429)) => Ec2Error::new(op, THROTTLING, message),
        (None, Some(status)) if (500..600).contains(&status) => {
            Ec2Error::transport(op, format!("HttpStatus{status}"), message)
        }
        // A 2xx whose body we could not read, or a 4xx without an error
        // document: asking again will not help.
        (None, Some(status)) if (200..300).contains(&status) => Ec2Error::new(op, MALFORMED_RESPONSE, message),
        (None, Some(status)) => Ec2Error::new(op, format!("HttpStatus{status}"), message),
        (None, None) => Ec2Error::new(op, UNKNOWN_ERROR, message),
    }
}

pub(super) fn find_source<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// A response that parsed but cannot be a correct EC2 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Malformed {
    /// Where, e.g. `SecurityGroups[sg-1].IpPermissions[].IpProtocol`.
    pub(super) field: String,
    /// What is wrong with it.
    pub(super) problem: String,
}

impl Malformed {
    pub(super) fn new(field: impl Into<String>, problem: impl fmt::Display) -> Self {
        Self { field: field.into(), problem: problem.to_string() }
    }

    pub(super) fn missing(field: impl Into<String>) -> Self {
        Self::new(field, "missing")
    }

    /// Prefixes the location (e.g. with the group the field belongs to).
    pub(super) fn within(self, outer: &str) -> Self {
        Self { field: format!("{outer}.{}", self.field), problem: self.problem }
    }

    pub(super) fn error(self, op: Operation) -> Ec2Error {
        Ec2Error::new(op, MALFORMED_RESPONSE, format!("malformed response: {}: {}", self.field, self.problem))
    }
}

pub(super) fn required<'a>(value: Option<&'a str>, field: &str) -> Result<&'a str, Malformed> {
    value.filter(|v| !v.is_empty()).ok_or_else(|| Malformed::missing(field))
}

pub(super) fn parse_id<T>(
    value: Option<&str>,
    field: &str,
    parse: fn(String) -> Result<T, ModelError>,
) -> Result<T, Malformed> {
    parse(required(value, field)?.to_owned()).map_err(|e| Malformed::new(field, e))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_sdk_ec2::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use super::*;
    use crate::ec2::ErrorKind;

    fn response(status: u16) -> HttpResponse {
        HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty())
    }

    fn service_error(code: Option<&str>, status: u16) -> SdkError<DescribeSecurityGroupsError, HttpResponse> {
        let mut meta = ErrorMetadata::builder().message("told by EC2");
        if let Some(code) = code {
            meta = meta.code(code);
        }
        SdkError::service_error(DescribeSecurityGroupsError::generic(meta.build()), response(status))
    }

    fn classified(err: SdkError<DescribeSecurityGroupsError, HttpResponse>) -> (String, ErrorKind) {
        let e = classify(Operation::DescribeSecurityGroups, err);
        assert_eq!(e.operation, Operation::DescribeSecurityGroups);
        (e.code, e.kind)
    }

    #[test]
    fn service_errors_classify_by_code_and_otherwise_by_status() {
        let cases = [
            (Some("InvalidGroup.NotFound"), 400, "InvalidGroup.NotFound", ErrorKind::NotFound),
            (Some("InvalidPermission.Duplicate"), 400, "InvalidPermission.Duplicate", ErrorKind::Duplicate),
            (Some("DependencyViolation"), 400, "DependencyViolation", ErrorKind::Dependency),
            (Some("RequestLimitExceeded"), 503, "RequestLimitExceeded", ErrorKind::Throttled),
            (Some("UnauthorizedOperation"), 403, "UnauthorizedOperation", ErrorKind::Fatal),
            (Some("InternalError"), 500, "InternalError", ErrorKind::Transient),
            (None, 503, "HttpStatus503", ErrorKind::Transient),
            (None, 500, "HttpStatus500", ErrorKind::Transient),
            (None, 429, "Throttling", ErrorKind::Throttled),
            (None, 403, "HttpStatus403", ErrorKind::Fatal),
        ];
        for (code, status, want_code, want_kind) in cases {
            assert_eq!(classified(service_error(code, status)), (want_code.to_owned(), want_kind), "{code:?} {status}");
        }
        let e = classify(Operation::DescribeSecurityGroups, service_error(Some("InvalidGroup.NotFound"), 400));
        assert_eq!(e.message, "told by EC2");
    }

    #[test]
    fn unreadable_answers_and_missing_answers_classify_by_what_happened() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let cases: Vec<(SdkError<DescribeSecurityGroupsError, HttpResponse>, &str, ErrorKind)> = vec![
            (SdkError::response_error("bad xml", response(200)), MALFORMED_RESPONSE, ErrorKind::Fatal),
            (SdkError::response_error("bad xml", response(502)), "HttpStatus502", ErrorKind::Transient),
            (SdkError::timeout_error("operation timed out"), "Timeout", ErrorKind::Transient),
            (SdkError::dispatch_failure(ConnectorError::io(io.into())), "ConnectionError", ErrorKind::Transient),
            (SdkError::dispatch_failure(ConnectorError::timeout("slow".into())), "Timeout", ErrorKind::Transient),
            (SdkError::dispatch_failure(ConnectorError::user("bad url".into())), "DispatchFailure", ErrorKind::Fatal),
            (
                SdkError::dispatch_failure(ConnectorError::other(
                    Box::new(CredentialsError::not_loaded("no credentials in the chain")),
                    None,
                )),
                "CredentialsUnavailable",
                ErrorKind::Fatal,
            ),
            (
                SdkError::dispatch_failure(ConnectorError::other(
                    Box::new(CredentialsError::provider_timed_out(Duration::from_secs(5))),
                    None,
                )),
                "Timeout",
                ErrorKind::Transient,
            ),
            (SdkError::construction_failure("missing field"), "RequestConstructionFailed", ErrorKind::Fatal),
        ];
        for (err, code, kind) in cases {
            let label = format!("{err:?}");
            assert_eq!(classified(err), (code.to_owned(), kind), "{label}");
        }
    }

    #[test]
    fn return_false_is_an_error_and_missing_return_is_not() {
        assert!(check_return(Operation::EnableVpcClassicLink, Some(true)).is_ok());
        assert!(check_return(Operation::EnableVpcClassicLink, None).is_ok());
        let e = check_return(Operation::EnableVpcClassicLink, Some(false)).unwrap_err();
        assert_eq!((e.code.as_str(), e.kind), ("ReturnedFalse", ErrorKind::Fatal));
    }
}
