//! The EC2 port: the only way observe and execute reach EC2.
//!
//! Domain types in and out, never SDK types. Two adapters sit behind it: the
//! in-process emulator engine (`crate::emulator`) and the `aws-sdk-ec2`
//! adapter, and one decorator, [`limited::Limited`] (rate limits, retries).
//!
//! Every required method of [`Ec2`] is exactly one EC2 request: a paginated
//! describe is asked for one page at a time (`*_page`, with the `NextToken`
//! of the page before). The whole describes observe and execute call
//! (`describe_security_groups`, …) are provided methods written once over
//! [`paginate`]: they call the page methods of whatever port they run on, so
//! on a [`limited::Limited`] port each page takes its own rate-limit token, is
//! counted and timed as a request, and is retried alone (resumed from its
//! token) when it fails. A whole describe returns every page or an error, so a
//! caller can tell a complete answer from a partial one.

use std::collections::BTreeMap;
use std::fmt;
use strum::VariantArray as _;

use async_trait::async_trait;

pub mod accounts;
pub mod aws;
pub mod codes;
pub mod limited;

use crate::model::{
    Direction, Grant, GroupId, Instance, InstanceId, InstanceState, Link, NetworkInterface, PrefixList,
    PrefixListEntry, PrefixListId, SecurityGroup, Vpc, VpcId,
};

pub use codes::{MALFORMED_RESPONSE, TIMEOUT, VPC_NOT_FOUND};

/// Every EC2 action the daemon or its tests use; bounded metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[derive(strum::IntoStaticStr, strum::VariantArray, strum::EnumString)]
pub enum Operation {
    /// `DescribeSecurityGroups`.
    DescribeSecurityGroups,
    /// `DescribeInstances`.
    DescribeInstances,
    /// `DescribeClassicLinkInstances`.
    DescribeClassicLinkInstances,
    /// `DescribeVpcClassicLink`.
    DescribeVpcClassicLink,
    /// `DescribeVpcs`.
    DescribeVpcs,
    /// `DescribeManagedPrefixLists`.
    DescribeManagedPrefixLists,
    /// `GetManagedPrefixListEntries`.
    GetManagedPrefixListEntries,
    /// `DescribeNetworkInterfaces`.
    DescribeNetworkInterfaces,
    /// `CreateManagedPrefixList`.
    CreateManagedPrefixList,
    /// `ModifyManagedPrefixList`.
    ModifyManagedPrefixList,
    /// `DeleteManagedPrefixList`.
    DeleteManagedPrefixList,
    /// `CreateSecurityGroup`.
    CreateSecurityGroup,
    /// `DeleteSecurityGroup`.
    DeleteSecurityGroup,
    /// `AuthorizeSecurityGroupIngress`.
    AuthorizeSecurityGroupIngress,
    /// `RevokeSecurityGroupIngress`.
    RevokeSecurityGroupIngress,
    /// `UpdateSecurityGroupRuleDescriptionsIngress`.
    UpdateSecurityGroupRuleDescriptionsIngress,
    /// `AuthorizeSecurityGroupEgress`.
    AuthorizeSecurityGroupEgress,
    /// `RevokeSecurityGroupEgress`.
    RevokeSecurityGroupEgress,
    /// `CreateTags`.
    CreateTags,
    /// `DeleteTags`.
    DeleteTags,
    /// `AttachClassicLinkVpc`.
    AttachClassicLinkVpc,
    /// `DetachClassicLinkVpc`.
    DetachClassicLinkVpc,
    /// `EnableVpcClassicLink`.
    EnableVpcClassicLink,
    /// `CreateVpc` (world building).
    CreateVpc,
    /// `RunInstances` (world building).
    RunInstances,
    /// `StopInstances` (world building).
    StopInstances,
    /// `StartInstances` (world building).
    StartInstances,
    /// `TerminateInstances` (world building).
    TerminateInstances,
}

impl Operation {
    /// EC2's action name.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        self.into()
    }

    /// Parses EC2's action name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        name.parse().ok()
    }

    /// True for the calls that build test and demo worlds (create a VPC,
    /// run, stop, start, terminate instances): the daemon never sends them.
    #[must_use]
    pub fn is_world_building(&self) -> bool {
        matches!(
            self,
            Self::CreateVpc
                | Self::RunInstances
                | Self::StopInstances
                | Self::StartInstances
                | Self::TerminateInstances
        )
    }

    /// Every action the daemon itself may send (world building aside).
    pub fn daemon_operations() -> impl Iterator<Item = Self> {
        Self::VARIANTS.iter().copied().filter(|op| !op.is_world_building())
    }

    /// The writes the daemon may send: its mutating actions.
    pub fn daemon_writes() -> impl Iterator<Item = Self> {
        Self::daemon_operations().filter(|op| op.category() == Category::Mutating)
    }

    /// Which of EC2's request-rate buckets the action draws from.
    #[must_use]
    pub fn category(&self) -> Category {
        match self {
            Self::DescribeSecurityGroups
            | Self::DescribeInstances
            | Self::DescribeClassicLinkInstances
            | Self::DescribeVpcClassicLink
            | Self::DescribeVpcs
            | Self::DescribeManagedPrefixLists
            | Self::GetManagedPrefixListEntries
            | Self::DescribeNetworkInterfaces => Category::Describe,
            _ => Category::Mutating,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// EC2's request-rate categories (non-mutating vs. mutating actions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[derive(strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Category {
    /// `Describe*`: EC2 bucket 100, refill 20/s.
    Describe,
    /// Writes: EC2 bucket 50, refill 5/s.
    Mutating,
}

impl Category {
    /// Stable label.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

/// What a failed EC2 call means for the caller; derived from the error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[derive(strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum ErrorKind {
    /// `RequestLimitExceeded` and friends: back off and slow down.
    Throttled,
    /// A resource does not exist (may be eventual consistency right after a create).
    NotFound,
    /// Already exists / already done.
    Duplicate,
    /// `DependencyViolation`: something still uses the resource.
    Dependency,
    /// The request is wrong; retrying the same request will not help.
    Invalid,
    /// 5xx, timeouts, connection errors: retry.
    Transient,
    /// Credentials, authorisation, anything else: fail the action.
    Fatal,
}

impl ErrorKind {
    /// Classifies an EC2 error code (never the message).
    #[must_use]
    pub fn from_code(code: &str) -> Self {
        use codes::*;
        match code {
            REQUEST_LIMIT_EXCEEDED | THROTTLING | THROTTLING_EXCEPTION | REQUEST_THROTTLED => Self::Throttled,
            INTERNAL_ERROR | INTERNAL_FAILURE | SERVICE_UNAVAILABLE | UNAVAILABLE | INSUFFICIENT_INSTANCE_CAPACITY => {
                Self::Transient
            }
            DEPENDENCY_VIOLATION => Self::Dependency,
            PERMISSION_DUPLICATE | GROUP_DUPLICATE | INSTANCE_ALREADY_LINKED => Self::Duplicate,
            AUTH_FAILURE | UNAUTHORIZED_OPERATION | OPT_IN_REQUIRED | BLOCKED | ACCESS_DENIED | EXPIRED_TOKEN => {
                Self::Fatal
            }
            c if c.ends_with(".NotFound") => Self::NotFound,
            c if c.starts_with("Invalid")
                || c.starts_with("Missing")
                || c.ends_with("LimitExceeded")
                || c == INCORRECT_STATE
                || c == UNKNOWN_PARAMETER =>
            {
                Self::Invalid
            }
            _ => Self::Fatal,
        }
    }

    /// Stable metric label.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

/// A failed EC2 call: the EC2 error code, its meaning, and the message for
/// humans (never matched on).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {code}: {message}")]
pub struct Ec2Error {
    /// The action that failed.
    pub operation: Operation,
    /// EC2 error code, e.g. `InvalidGroup.NotFound`; synthetic codes for
    /// transport failures (`Timeout`, `ConnectionError`).
    pub code: String,
    /// Classification of `code`.
    pub kind: ErrorKind,
    /// Human-readable message.
    pub message: String,
}

impl Ec2Error {
    /// An error classified from its code.
    #[must_use]
    pub fn new(operation: Operation, code: impl Into<String>, message: impl Into<String>) -> Self {
        let code = code.into();
        let kind = ErrorKind::from_code(&code);
        Self { operation, code, kind, message: message.into() }
    }

    /// A transport-level failure (no EC2 answer): always transient.
    #[must_use]
    pub fn transport(operation: Operation, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { operation, code: code.into(), kind: ErrorKind::Transient, message: message.into() }
    }

    /// Stable metric label.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        self.kind.as_str()
    }
}

/// Server-side filters for `DescribeSecurityGroups`. Different fields AND
/// together; values within one field OR together; an empty field does not
/// filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupFilter {
    /// `group-id`.
    pub group_ids: Vec<GroupId>,
    /// `group-name`.
    pub group_names: Vec<String>,
    /// `vpc-id`.
    pub vpc_ids: Vec<VpcId>,
    /// `tag-key`.
    pub tag_keys: Vec<String>,
    /// `tag:<key>` = any of the values.
    pub tags: BTreeMap<String, Vec<String>>,
}

/// Server-side filters for `DescribeInstances` (same AND/OR rules).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceFilter {
    /// `instance-id`.
    pub instance_ids: Vec<InstanceId>,
    /// `instance.group-id` (membership in any of the groups).
    pub group_ids: Vec<GroupId>,
    /// `instance-state-name`.
    pub states: Vec<InstanceState>,
}

/// Server-side filters for `DescribeClassicLinkInstances` (same AND/OR rules).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkFilter {
    /// `instance-id`.
    pub instance_ids: Vec<InstanceId>,
    /// `group-id`: links that include any of these VPC groups.
    pub group_ids: Vec<GroupId>,
    /// `vpc-id`.
    pub vpc_ids: Vec<VpcId>,
}

/// Server-side filters for `DescribeManagedPrefixLists` (same AND/OR rules).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixListFilter {
    /// `prefix-list-id`.
    pub prefix_list_ids: Vec<PrefixListId>,
    /// `prefix-list-name`.
    pub names: Vec<String>,
    /// `owner-id`.
    pub owner_ids: Vec<String>,
    /// `tag-key`.
    pub tag_keys: Vec<String>,
    /// `tag:<key>` = any of the values.
    pub tags: BTreeMap<String, Vec<String>>,
}

/// Server-side filters for `DescribeNetworkInterfaces` (same AND/OR rules).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceFilter {
    /// `group-id`: interfaces in any of these groups.
    pub group_ids: Vec<GroupId>,
    /// `vpc-id`.
    pub vpc_ids: Vec<VpcId>,
    /// `attachment.instance-id`.
    pub instance_ids: Vec<InstanceId>,
}

/// `CreateManagedPrefixList` with its tags (`TagSpecifications`, so a list
/// the daemon creates is never without its ownership tag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatePrefixList {
    /// `PrefixListName`.
    pub name: String,
    /// `AddressFamily`: `IPv4` or `IPv6`.
    pub address_family: String,
    /// `MaxEntries` (1–1000).
    pub max_entries: u32,
    /// `Entry.N` (at most 100 in one request).
    pub entries: Vec<PrefixListEntry>,
    /// Tags applied at creation.
    pub tags: BTreeMap<String, String>,
    /// `ClientToken`: the same token creates one list however often it is sent.
    pub client_token: Option<String>,
}

/// `ModifyManagedPrefixList` of the entries, under EC2's version check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModifyPrefixList {
    /// The list.
    pub id: PrefixListId,
    /// `CurrentVersion`: the version the change was computed from; EC2
    /// refuses the change (`PrefixListVersionMismatch`) when the list has
    /// moved on since.
    pub current_version: u64,
    /// `AddEntry.N` (at most 100).
    pub add: Vec<PrefixListEntry>,
    /// `RemoveEntry.N`: CIDRs (at most 100).
    pub remove: Vec<ipnet::IpNet>,
}

/// `CreateSecurityGroup` with its tags (created atomically via
/// `TagSpecifications`, so ownership is never missing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateGroup {
    /// VPC to create the group in.
    pub vpc_id: VpcId,
    /// Group name.
    pub name: String,
    /// Group description (VPC character set, ≤ 255).
    pub description: String,
    /// Tags applied at creation.
    pub tags: BTreeMap<String, String>,
}

/// One page of a paginated describe: domain items and the `NextToken` of
/// the page after it (`None` on the last page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Where the next page starts; `None` (or an empty token) ends the walk.
    pub next_token: Option<String>,
}

impl<T> Page<T> {
    /// The only page of an answer.
    #[must_use]
    pub fn last(items: Vec<T>) -> Self {
        Self { items, next_token: None }
    }
}

/// Walks every page of one describe: `fetch(None)` first, then
/// `fetch(Some(token))` with each page's `NextToken` until a page has none.
/// The one pager of the crate: every whole describe of [`Ec2`] is this loop
/// over its page method, so each page is a request of its own to the port
/// underneath (and, through [`limited::Limited`], metered and retried alone).
///
/// # Errors
/// The error of the first page that fails, as is: the items before it are dropped, because a
/// partial describe must not look complete. A token equal to the one just
/// sent would loop forever and fails as [`MALFORMED_RESPONSE`].
pub async fn paginate<T, F, Fut>(operation: Operation, mut fetch: F) -> Result<Vec<T>, Ec2Error>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, Ec2Error>>,
{
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = fetch(token.clone()).await?;
        items.extend(page.items);
        match page.next_token.filter(|t| !t.is_empty()) {
            None => return Ok(items),
            Some(next) if token.as_deref() == Some(next.as_str()) => {
                return Err(Ec2Error::new(
                    operation,
                    MALFORMED_RESPONSE,
                    format!("malformed response: NextToken {next:?} repeats the token of the request"),
                ));
            }
            Some(next) => token = Some(next),
        }
    }
}

/// The EC2 port. Every required method is one EC2 request; the whole
/// describes are provided over [`paginate`] and must not be overridden (an
/// override would hide its pages from a decorator such as
/// [`limited::Limited`]).
#[async_trait]
pub trait Ec2: Send + Sync {
    /// One page of `DescribeSecurityGroups` with filters.
    async fn security_groups_page(
        &self,
        filter: &GroupFilter,
        next_token: Option<String>,
    ) -> Result<Page<SecurityGroup>, Ec2Error>;
    /// One page of `DescribeInstances` with filters.
    async fn instances_page(
        &self,
        filter: &InstanceFilter,
        next_token: Option<String>,
    ) -> Result<Page<Instance>, Ec2Error>;
    /// One page of `DescribeClassicLinkInstances` with filters.
    async fn classic_link_instances_page(
        &self,
        filter: &LinkFilter,
        next_token: Option<String>,
    ) -> Result<Page<Link>, Ec2Error>;
    /// One page of `DescribeVpcs` filtered by `vpc-id` (never empty: the
    /// provided [`Ec2::describe_vpcs`] asks for none without a request).
    /// Unknown ids are left out rather than failing the request.
    async fn vpcs_page(&self, vpc_ids: &[VpcId], next_token: Option<String>) -> Result<Page<VpcId>, Ec2Error>;
    /// One `DescribeVpcClassicLink` request (it has no pages), as EC2 answers
    /// it: exactly `vpc_ids`, where one unknown id fails the request with
    /// [`VPC_NOT_FOUND`]; an empty list asks for every VPC of the region.
    async fn vpc_classic_link_request(&self, vpc_ids: &[VpcId]) -> Result<Vec<Vpc>, Ec2Error>;

    /// `DescribeSecurityGroups` with filters, every page.
    async fn describe_security_groups(&self, filter: &GroupFilter) -> Result<Vec<SecurityGroup>, Ec2Error> {
        paginate(Operation::DescribeSecurityGroups, |token| self.security_groups_page(filter, token)).await
    }
    /// `DescribeInstances` with filters, every page.
    async fn describe_instances(&self, filter: &InstanceFilter) -> Result<Vec<Instance>, Ec2Error> {
        paginate(Operation::DescribeInstances, |token| self.instances_page(filter, token)).await
    }
    /// `DescribeClassicLinkInstances` with filters, every page.
    async fn describe_classic_link_instances(&self, filter: &LinkFilter) -> Result<Vec<Link>, Ec2Error> {
        paginate(Operation::DescribeClassicLinkInstances, |token| self.classic_link_instances_page(filter, token)).await
    }
    /// `DescribeVpcClassicLink` for these VPCs. Missing VPCs are left out of
    /// the answer rather than failing it: EC2 fails the whole request when
    /// one id is unknown and says which only in the message, which we never
    /// parse, so on [`VPC_NOT_FOUND`] a second request reads every VPC of the
    /// region and the requested ones are kept. No ids: no request.
    async fn describe_vpc_classic_link(&self, vpc_ids: &[VpcId]) -> Result<Vec<Vpc>, Ec2Error> {
        if vpc_ids.is_empty() {
            // No ids would mean "every VPC" to EC2; the port means "none".
            return Ok(Vec::new());
        }
        match self.vpc_classic_link_request(vpc_ids).await {
            Err(e) if e.code == VPC_NOT_FOUND => {
                let all = self.vpc_classic_link_request(&[]).await?;
                Ok(all.into_iter().filter(|v| vpc_ids.contains(&v.id)).collect())
            }
            other => other,
        }
    }
    /// `DescribeVpcs` filtered by `vpc-id`, every page: which of these VPCs
    /// exist. Unknown ids are left out rather than failing the call. Unlike
    /// `describe_vpc_classic_link`, this works where ClassicLink is gone.
    async fn describe_vpcs(&self, vpc_ids: &[VpcId]) -> Result<Vec<VpcId>, Ec2Error> {
        if vpc_ids.is_empty() {
            return Ok(Vec::new());
        }
        paginate(Operation::DescribeVpcs, |token| self.vpcs_page(vpc_ids, token)).await
    }
    /// One page of `DescribeManagedPrefixLists` with filters.
    async fn prefix_lists_page(
        &self,
        filter: &PrefixListFilter,
        next_token: Option<String>,
    ) -> Result<Page<PrefixList>, Ec2Error>;
    /// One page of `GetManagedPrefixListEntries` of the list's current version.
    async fn prefix_list_entries_page(
        &self,
        id: &PrefixListId,
        next_token: Option<String>,
    ) -> Result<Page<PrefixListEntry>, Ec2Error>;
    /// One page of `DescribeNetworkInterfaces` with filters.
    async fn network_interfaces_page(
        &self,
        filter: &InterfaceFilter,
        next_token: Option<String>,
    ) -> Result<Page<NetworkInterface>, Ec2Error>;

    /// `DescribeManagedPrefixLists` with filters, every page.
    async fn describe_prefix_lists(&self, filter: &PrefixListFilter) -> Result<Vec<PrefixList>, Ec2Error> {
        paginate(Operation::DescribeManagedPrefixLists, |token| self.prefix_lists_page(filter, token)).await
    }
    /// `DescribeManagedPrefixLists` of the lists `ids` (a `prefix-list-id`
    /// filter: an id the account cannot see is left out, not an error), in
    /// the account holding the source group `source`: the lists its rules
    /// reference, as its own account sees them. A port of one account asks
    /// itself; [`accounts::SourceAccounts`] asks the source's account.
    async fn describe_source_prefix_lists(
        &self,
        source: &GroupId,
        ids: &[PrefixListId],
    ) -> Result<Vec<PrefixList>, Ec2Error> {
        let _ = source;
        let filter = PrefixListFilter { prefix_list_ids: ids.to_vec(), ..PrefixListFilter::default() };
        self.describe_prefix_lists(&filter).await
    }
    /// `GetManagedPrefixListEntries`, every page.
    async fn prefix_list_entries(&self, id: &PrefixListId) -> Result<Vec<PrefixListEntry>, Ec2Error> {
        paginate(Operation::GetManagedPrefixListEntries, |token| self.prefix_list_entries_page(id, token)).await
    }
    /// `DescribeNetworkInterfaces` with filters, every page.
    async fn describe_network_interfaces(&self, filter: &InterfaceFilter) -> Result<Vec<NetworkInterface>, Ec2Error> {
        paginate(Operation::DescribeNetworkInterfaces, |token| self.network_interfaces_page(filter, token)).await
    }

    /// `CreateManagedPrefixList` with `TagSpecifications`; returns the list.
    async fn create_prefix_list(&self, request: &CreatePrefixList) -> Result<PrefixList, Ec2Error>;
    /// `ModifyManagedPrefixList` of the entries; returns the list (its new version).
    async fn modify_prefix_list(&self, request: &ModifyPrefixList) -> Result<PrefixList, Ec2Error>;
    /// `DeleteManagedPrefixList`. EC2 deletes asynchronously: a list some
    /// rule still references is not deleted but left `delete-failed`.
    async fn delete_prefix_list(&self, id: &PrefixListId) -> Result<(), Ec2Error>;
    /// `CreateSecurityGroup` with `TagSpecifications`; returns the new id.
    async fn create_security_group(&self, request: &CreateGroup) -> Result<GroupId, Ec2Error>;
    /// `DeleteSecurityGroup`.
    async fn delete_security_group(&self, group_id: &GroupId) -> Result<(), Ec2Error>;
    /// `AuthorizeSecurityGroupIngress` with these grants in one request.
    async fn authorize_ingress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error>;
    /// `RevokeSecurityGroupIngress` with these grants in one request.
    async fn revoke_ingress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error>;
    /// `UpdateSecurityGroupRuleDescriptionsIngress`: set the description of
    /// each existing grant to the one given.
    async fn update_ingress_descriptions(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error>;
    /// `AuthorizeSecurityGroupEgress` (VPC groups only): all grants in one request.
    async fn authorize_egress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error>;
    /// `RevokeSecurityGroupEgress` (VPC groups only): all grants in one request.
    async fn revoke_egress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error>;

    /// Authorize in one direction: [`Ec2::authorize_ingress`] or [`Ec2::authorize_egress`].
    async fn authorize(&self, direction: Direction, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        match direction {
            Direction::Ingress => self.authorize_ingress(group_id, grants).await,
            Direction::Egress => self.authorize_egress(group_id, grants).await,
        }
    }

    /// Revoke in one direction: [`Ec2::revoke_ingress`] or [`Ec2::revoke_egress`].
    async fn revoke(&self, direction: Direction, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        match direction {
            Direction::Ingress => self.revoke_ingress(group_id, grants).await,
            Direction::Egress => self.revoke_egress(group_id, grants).await,
        }
    }
    /// `CreateTags` on a security group.
    async fn create_tags(&self, group_id: &GroupId, tags: &BTreeMap<String, String>) -> Result<(), Ec2Error>;
    /// `DeleteTags` (by key) on a security group.
    async fn delete_tags(&self, group_id: &GroupId, keys: &[String]) -> Result<(), Ec2Error>;
    /// `AttachClassicLinkVpc`.
    async fn attach_classic_link_vpc(
        &self,
        instance_id: &InstanceId,
        vpc_id: &VpcId,
        groups: &[GroupId],
    ) -> Result<(), Ec2Error>;
    /// `DetachClassicLinkVpc`.
    async fn detach_classic_link_vpc(&self, instance_id: &InstanceId, vpc_id: &VpcId) -> Result<(), Ec2Error>;
    /// `EnableVpcClassicLink`.
    async fn enable_vpc_classic_link(&self, vpc_id: &VpcId) -> Result<(), Ec2Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_classify_by_code() {
        assert_eq!(ErrorKind::from_code("RequestLimitExceeded"), ErrorKind::Throttled);
        assert_eq!(ErrorKind::from_code("InvalidGroup.NotFound"), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_code("InvalidInstanceID.NotFound"), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_code("InvalidPermission.NotFound"), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_code("InvalidPermission.Duplicate"), ErrorKind::Duplicate);
        assert_eq!(ErrorKind::from_code("InvalidGroup.Duplicate"), ErrorKind::Duplicate);
        assert_eq!(ErrorKind::from_code("DependencyViolation"), ErrorKind::Dependency);
        assert_eq!(ErrorKind::from_code("InvalidParameterValue"), ErrorKind::Invalid);
        assert_eq!(ErrorKind::from_code("RulesPerSecurityGroupLimitExceeded"), ErrorKind::Invalid);
        assert_eq!(ErrorKind::from_code("InvalidInstanceID.NotLinkable"), ErrorKind::Invalid);
        assert_eq!(ErrorKind::from_code("InternalError"), ErrorKind::Transient);
        assert_eq!(ErrorKind::from_code("UnauthorizedOperation"), ErrorKind::Fatal);
    }

    #[tokio::test]
    async fn the_pager_follows_next_tokens_and_stops_on_a_token_that_repeats() {
        let pages = |token: Option<String>| async move {
            Ok(match token.as_deref() {
                None => Page { items: vec![1, 2], next_token: Some("a".into()) },
                Some("a") => Page { items: vec![3], next_token: Some(String::new()) },
                Some(_) => Page::last(vec![]),
            })
        };
        assert_eq!(paginate(Operation::DescribeVpcs, pages).await.unwrap(), [1, 2, 3], "an empty token ends it");
        // An endpoint answering the token it was sent would loop forever.
        let stuck =
            |_: Option<String>| async { Ok::<_, Ec2Error>(Page { items: vec![1], next_token: Some("x".into()) }) };
        let error = paginate(Operation::DescribeVpcs, stuck).await.unwrap_err();
        assert_eq!((error.code.as_str(), error.kind), (MALFORMED_RESPONSE, ErrorKind::Fatal));
        // A failed page fails the describe: no partial answer.
        let failing = |token: Option<String>| async move {
            match token {
                None => Ok(Page { items: vec![1], next_token: Some("b".into()) }),
                Some(_) => Err(Ec2Error::new(Operation::DescribeVpcs, "InternalError", "down")),
            }
        };
        assert_eq!(paginate(Operation::DescribeVpcs, failing).await.unwrap_err().code, "InternalError");
    }

    #[test]
    fn operation_names_round_trip_and_categorise() {
        for op in Operation::VARIANTS.iter().copied() {
            assert_eq!(Operation::from_name(op.as_str()), Some(op));
        }
        assert_eq!(Operation::DescribeVpcs.category(), Category::Describe);
        assert_eq!(Operation::AttachClassicLinkVpc.category(), Category::Mutating);
    }
}
