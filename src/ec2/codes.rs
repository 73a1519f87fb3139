//! EC2's error codes, spelled exactly as EC2 spells them, in one place: the
//! emulator answers with them, the AWS adapter and the executor match them
//! ([`crate::ec2::ErrorKind::from_code`] classifies them), and the tests
//! expect them. Codes are compared, never messages; a code is a constant
//! here, never a literal elsewhere.
//!
//! The last block holds the codes this program makes up for failures EC2
//! never answered (a timeout, a refused connection, an answer that makes no
//! sense). Each says its kind: the transport failures (`Timeout`,
//! `ConnectionError`) are built transient with
//! [`crate::ec2::Ec2Error::transport`]; the rest go through
//! [`crate::ec2::ErrorKind::from_code`], which makes them fatal.

/// Authorizing a grant the group already has.
pub const PERMISSION_DUPLICATE: &str = "InvalidPermission.Duplicate";
/// Revoking, or updating the description of, a grant the group does not have.
pub const PERMISSION_NOT_FOUND: &str = "InvalidPermission.NotFound";
/// A CIDR that does not parse in a permission.
pub const PERMISSION_MALFORMED: &str = "InvalidPermission.Malformed";
/// Creating a group whose name is taken in that VPC (or among Classic groups).
pub const GROUP_DUPLICATE: &str = "InvalidGroup.Duplicate";
/// A group id that does not exist (or is not visible yet, or is in another network).
pub const GROUP_NOT_FOUND: &str = "InvalidGroup.NotFound";
/// Creating a group named `default`, or deleting the Classic `default` group.
pub const GROUP_RESERVED: &str = "InvalidGroup.Reserved";
/// Deleting a Classic group that instances or other groups still use.
pub const GROUP_IN_USE: &str = "InvalidGroup.InUse";
/// Deleting the `default` group of a VPC.
pub const CANNOT_DELETE: &str = "CannotDelete";
/// Deleting a VPC group that a link, an instance or another group's rule uses.
pub const DEPENDENCY_VIOLATION: &str = "DependencyViolation";
/// An instance id that does not exist (or is not visible yet).
pub const INSTANCE_NOT_FOUND: &str = "InvalidInstanceID.NotFound";
/// Linking an instance that is not a running Classic instance, or linking to
/// a VPC that does not have ClassicLink enabled.
pub const INSTANCE_NOT_LINKABLE: &str = "InvalidInstanceID.NotLinkable";
/// Linking an instance that is already linked.
pub const INSTANCE_ALREADY_LINKED: &str = "InstanceAlreadyLinked";
/// Starting or stopping an instance in a state that does not allow it.
pub const INCORRECT_INSTANCE_STATE: &str = "IncorrectInstanceState";
/// A VPC id that does not exist.
pub const VPC_NOT_FOUND: &str = "InvalidVpcID.NotFound";
/// Enabling ClassicLink on a VPC whose CIDR conflicts with EC2-Classic's 10.0.0.0/8.
pub const VPC_CIDR_CONFLICT: &str = "VpcCidrConflict";
/// More grants than the rules-per-group quota allows.
pub const RULES_LIMIT: &str = "RulesPerSecurityGroupLimitExceeded";
/// More than five groups in one ClassicLink link (or on one VPC instance).
pub const GROUPS_PER_INSTANCE_LIMIT: &str = "SecurityGroupsPerInstanceLimitExceeded";
/// No private address left for a launch (the subnet, here the VPC, is full).
pub const INSUFFICIENT_FREE_ADDRESSES: &str = "InsufficientFreeAddressesInSubnet";
/// A managed prefix list id that does not exist (EC2 spells this one `ID`).
pub const PREFIX_LIST_NOT_FOUND: &str = "InvalidPrefixListID.NotFound";
/// A prefix list id of the wrong shape in a request parameter.
pub const PREFIX_LIST_ID_MALFORMED: &str = "InvalidPrefixListId.Malformed";
/// `ModifyManagedPrefixList` with a `CurrentVersion` that is not the list's
/// version: someone else changed it since it was read.
pub const PREFIX_LIST_VERSION_MISMATCH: &str = "PrefixListVersionMismatch";
/// `ModifyManagedPrefixList` that would leave more entries than `MaxEntries`.
pub const PREFIX_LIST_MAX_ENTRIES: &str = "PrefixListMaxEntriesExceeded";
/// `ModifyManagedPrefixList` removing an entry the list does not have, or
/// adding one it already has.
pub const PREFIX_LIST_MODIFICATION: &str = "InvalidPrefixListModification";
/// A `ClientToken` reused with different parameters.
pub const IDEMPOTENT_PARAMETER_MISMATCH: &str = "IdempotentParameterMismatch";
/// More than 50 tags on one resource.
pub const TAG_LIMIT: &str = "TagLimitExceeded";
/// A parameter value EC2 rejects (ports, protocols, names, descriptions, MaxResults, ...).
pub const INVALID_PARAMETER_VALUE: &str = "InvalidParameterValue";
/// Two parameters that cannot be used together (MaxResults with explicit instance ids).
pub const INVALID_PARAMETER_COMBINATION: &str = "InvalidParameterCombination";
/// A required parameter is missing or empty.
pub const MISSING_PARAMETER: &str = "MissingParameter";
/// A `NextToken` this emulator did not issue for this action.
pub const INVALID_PAGINATION_TOKEN: &str = "InvalidPaginationToken";
/// The request-rate token bucket of the action's category is empty.
pub const REQUEST_LIMIT_EXCEEDED: &str = "RequestLimitExceeded";
/// Injected server fault (HTTP 500).
pub const INTERNAL_ERROR: &str = "InternalError";
/// Injected server fault (HTTP 503).
pub const UNAVAILABLE: &str = "Unavailable";

/// A security group id of the wrong shape in a request parameter.
pub const GROUP_ID_MALFORMED: &str = "InvalidGroupId.Malformed";
/// An instance id of the wrong shape in a request parameter.
pub const INSTANCE_ID_MALFORMED: &str = "InvalidInstanceID.Malformed";
/// A VPC id of the wrong shape in a request parameter.
pub const VPC_ID_MALFORMED: &str = "InvalidVpcID.Malformed";
/// A resource id of no known kind (`CreateTags`, `DeleteTags`).
pub const INVALID_ID: &str = "InvalidID";
/// A subnet id: the emulator has no subnets, so every subnet is unknown.
pub const SUBNET_NOT_FOUND: &str = "InvalidSubnetID.NotFound";
/// More instances in one `RunInstances` than the emulator launches at once.
pub const INSTANCE_LIMIT: &str = "InstanceLimitExceeded";
/// A request the emulator understands but does not model (instance tags, rule ids, ...).
pub const UNSUPPORTED: &str = "Unsupported";
/// An `Action` the Query API does not know.
pub const INVALID_ACTION: &str = "InvalidAction";
/// A request without an `Action`.
pub const MISSING_ACTION: &str = "MissingAction";
/// A request whose percent-encoding or character encoding is broken.
pub const MALFORMED_QUERY_STRING: &str = "MalformedQueryString";
/// `DryRun=true`: the request would have been attempted (HTTP 412).
pub const DRY_RUN_OPERATION: &str = "DryRunOperation";
/// A request body over [`MAX_REQUEST_BYTES`] (HTTP 413): the code AWS lists
/// among the errors common to every service's API ("Common Errors").
pub const REQUEST_ENTITY_TOO_LARGE: &str = "RequestEntityTooLargeException";

/// EC2's limit on the size of one Query API request: 2 MB.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// `DetachClassicLinkVpc` of an instance that is not linked to that VPC.
pub const INSTANCE_NOT_LINKED: &str = "InvalidInstanceID.NotLinked";
/// Throttling, as other AWS front ends spell it.
pub const THROTTLING: &str = "Throttling";
/// Throttling, as the JSON protocols spell it.
pub const THROTTLING_EXCEPTION: &str = "ThrottlingException";
/// Throttling of one API's own limit.
pub const REQUEST_THROTTLED: &str = "RequestThrottled";
/// A server fault (HTTP 500), as other AWS front ends spell it.
pub const INTERNAL_FAILURE: &str = "InternalFailure";
/// The service is unavailable (HTTP 503).
pub const SERVICE_UNAVAILABLE: &str = "ServiceUnavailable";
/// EC2 has no capacity for the request right now.
pub const INSUFFICIENT_INSTANCE_CAPACITY: &str = "InsufficientInstanceCapacity";
/// Credentials EC2 does not accept.
pub const AUTH_FAILURE: &str = "AuthFailure";
/// The caller's policy does not allow the action.
pub const UNAUTHORIZED_OPERATION: &str = "UnauthorizedOperation";
/// STS: the caller may not assume the role (it does not exist, is revoked,
/// does not trust the caller, or wants another external id).
pub const ACCESS_DENIED: &str = "AccessDenied";
/// A session's temporary credentials have expired.
pub const EXPIRED_TOKEN: &str = "ExpiredToken";
/// STS: a parameter fails its constraints (a session name, a duration).
pub const VALIDATION_ERROR: &str = "ValidationError";
/// The account is not subscribed to the service.
pub const OPT_IN_REQUIRED: &str = "OptInRequired";
/// The account is blocked.
pub const BLOCKED: &str = "Blocked";
/// A state that does not allow the action (EC2's general spelling).
pub const INCORRECT_STATE: &str = "IncorrectState";
/// A parameter EC2 does not know.
pub const UNKNOWN_PARAMETER: &str = "UnknownParameter";

// ----- codes of failures EC2 never answered ---------------------------------

/// A response that parsed but does not make sense (a missing id, an unknown
/// protocol, a page token that repeats): fatal, because asking again gets the
/// same answer, and never papered over, because a half-understood describe
/// must not look like a complete one.
pub const MALFORMED_RESPONSE: &str = "MalformedResponse";
/// A request that got no answer in time (connect or operation timeout):
/// transient, and the costlier retry.
pub const TIMEOUT: &str = "Timeout";
/// A connection refused or reset before an answer: transient.
pub const CONNECTION_ERROR: &str = "ConnectionError";
/// No credentials could be loaded: fatal.
pub const CREDENTIALS_UNAVAILABLE: &str = "CredentialsUnavailable";
/// The request could not be sent for a reason sending again will not fix
/// (a bad endpoint URL, say): fatal.
pub const DISPATCH_FAILURE: &str = "DispatchFailure";
/// The request could not be built: fatal.
pub const REQUEST_CONSTRUCTION_FAILED: &str = "RequestConstructionFailed";
/// An SDK failure of no known kind: fatal.
pub const UNKNOWN_SDK_ERROR: &str = "UnknownSdkError";
/// An answer without a code and without an HTTP status: fatal.
pub const UNKNOWN_ERROR: &str = "UnknownError";
/// EC2 answered `Return=false` without an error code: the action was not
/// performed.
pub const RETURNED_FALSE: &str = "ReturnedFalse";

/// The HTTP status EC2 sends with an error code: 503 for
/// `RequestLimitExceeded`, `Unavailable` and `ServiceUnavailable`, 500 for
/// `InternalError` and `InternalFailure`, 412 for `DryRunOperation`,
/// 413 for a request too large, 400 for everything else.
#[must_use]
pub fn http_status(code: &str) -> u16 {
    match code {
        REQUEST_LIMIT_EXCEEDED | UNAVAILABLE | SERVICE_UNAVAILABLE => 503,
        INTERNAL_ERROR | INTERNAL_FAILURE => 500,
        DRY_RUN_OPERATION => 412,
        REQUEST_ENTITY_TOO_LARGE => 413,
        _ => 400,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ec2::ErrorKind;

    #[test]
    fn codes_classify_as_the_daemon_expects() {
        assert_eq!(ErrorKind::from_code(PERMISSION_DUPLICATE), ErrorKind::Duplicate);
        assert_eq!(ErrorKind::from_code(PERMISSION_NOT_FOUND), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_code(GROUP_DUPLICATE), ErrorKind::Duplicate);
        assert_eq!(ErrorKind::from_code(GROUP_NOT_FOUND), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_code(INSTANCE_NOT_FOUND), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_code(INSTANCE_ALREADY_LINKED), ErrorKind::Duplicate);
        assert_eq!(ErrorKind::from_code(DEPENDENCY_VIOLATION), ErrorKind::Dependency);
        assert_eq!(ErrorKind::from_code(RULES_LIMIT), ErrorKind::Invalid);
        assert_eq!(ErrorKind::from_code(GROUPS_PER_INSTANCE_LIMIT), ErrorKind::Invalid);
        assert_eq!(ErrorKind::from_code(REQUEST_LIMIT_EXCEEDED), ErrorKind::Throttled);
        assert_eq!(ErrorKind::from_code(INTERNAL_ERROR), ErrorKind::Transient);
        assert_eq!(ErrorKind::from_code(UNAVAILABLE), ErrorKind::Transient);
    }

    #[test]
    fn throttling_and_faults_map_to_server_statuses() {
        assert_eq!(http_status(REQUEST_LIMIT_EXCEEDED), 503);
        assert_eq!(http_status(INTERNAL_ERROR), 500);
        assert_eq!(http_status(GROUP_NOT_FOUND), 400);
        assert_eq!(http_status(DRY_RUN_OPERATION), 412);
        assert_eq!(http_status(INVALID_ACTION), 400);
        assert_eq!(http_status(REQUEST_ENTITY_TOO_LARGE), 413);
    }
}
