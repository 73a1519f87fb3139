//! The EC2 error codes the emulator answers with, spelled exactly as EC2
//! spells them, so the HTTP server, the tests and the daemon's error
//! classification ([`crate::ec2::ErrorKind::from_code`]) agree on one string.

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

/// The HTTP status EC2 sends with an error code: 503 for throttling and
/// unavailability, 500 for other server faults, 412 for `DryRunOperation`,
/// 413 for a request too large, 400 for everything else.
#[must_use]
pub fn http_status(code: &str) -> u16 {
    match code {
        REQUEST_LIMIT_EXCEEDED | UNAVAILABLE | "ServiceUnavailable" => 503,
        INTERNAL_ERROR | "InternalFailure" => 500,
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
