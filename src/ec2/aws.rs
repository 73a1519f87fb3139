//! The `aws-sdk-ec2` adapter of the [`Ec2`] port: how observe and execute
//! reach real EC2 (or any EC2-compatible endpoint, such as our emulator).
//!
//! This is the only module that imports `aws_sdk_ec2`, `aws_config` or
//! `aws_smithy_*`. It turns domain values into SDK requests and SDK shapes
//! back into domain values, one request per port call (a describe page is a
//! request with its `NextToken`; the pager above walks the pages), and
//! classifies every failure by EC2 error *code* into an [`Ec2Error`]. It adds
//! no policy: throttling, backoff and retries belong to
//! [`super::limited::Limited`], semantic retries to the executor.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{Credentials, Region};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types as sdk;

use super::{CreateGroup, Ec2, Ec2Error, GroupFilter, InstanceFilter, LinkFilter, Operation, Page, TIMEOUT};
use crate::config::AwsConfig;
use crate::model::{
    Grant, GroupId, Instance, InstanceId, InstanceState, Link, ModelError, Peer, Ports, PrefixListId, Protocol,
    SecurityGroup, Vpc, VpcId, canonical_ipv4, canonical_ipv6,
};

pub use super::MALFORMED_RESPONSE;

/// EC2's largest page for the describes we paginate.
pub const MAX_PAGE_SIZE: i32 = 1000;
/// EC2's smallest accepted `MaxResults`.
pub const MIN_PAGE_SIZE: i32 = 5;

/// Static credentials, for endpoints that accept any (the emulator, moto).
/// Production uses the standard credential chain instead.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key (never printed).
    pub secret_access_key: String,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .finish()
    }
}

/// Tuning of the adapter; [`AwsOptions::default`] is what the daemon uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsOptions {
    /// `MaxResults` of paginated describes, clamped to EC2's 5–1000.
    pub page_size: i32,
    /// Time allowed to open a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Time allowed for one request, from sending to the parsed response.
    pub operation_timeout: Duration,
    /// Use these instead of the standard credential chain.
    pub credentials: Option<StaticCredentials>,
}

impl Default for AwsOptions {
    fn default() -> Self {
        Self {
            page_size: MAX_PAGE_SIZE,
            connect_timeout: Duration::from_secs(5),
            // A 1,000-item describe page takes EC2 a few seconds at worst; a
            // request still unanswered after 30 s is better failed (transient)
            // and retried by `Limited` than left to stall the pass.
            operation_timeout: Duration::from_secs(30),
            credentials: None,
        }
    }
}

/// The EC2 port over `aws-sdk-ec2`.
#[derive(Clone, Debug)]
pub struct AwsEc2 {
    client: Client,
    page_size: i32,
}

impl AwsEc2 {
    /// A client for `[aws]` with the default [`AwsOptions`]: the configured
    /// region, endpoint and profile, and the standard credential chain
    /// (environment, profile, web identity, container, instance role).
    /// Nothing is contacted until the first call, so this cannot fail;
    /// missing credentials surface as an [`Ec2Error`] on the first request.
    pub async fn from_config(aws: &AwsConfig) -> Self {
        Self::from_config_with(aws, AwsOptions::default()).await
    }

    /// [`AwsEc2::from_config`] with explicit tuning.
    pub async fn from_config_with(aws: &AwsConfig, options: AwsOptions) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(aws.region.clone()))
            // One layer owns retries: `ec2::limited::Limited` retries
            // throttling and 5xx with capped, jittered backoff and slows its
            // token buckets down (AIMD). SDK retries underneath would multiply
            // the attempts (3 × 3), hide throttling from the AIMD pacer, and
            // spend EC2's request budget behind our rate limiter's back.
            .retry_config(RetryConfig::disabled())
            // Without retries the attempt timeout is the operation timeout;
            // both are set so a future retry setting cannot silently stretch
            // a call beyond `operation_timeout`.
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(options.connect_timeout)
                    .operation_attempt_timeout(options.operation_timeout)
                    .operation_timeout(options.operation_timeout)
                    .build(),
            );
        if let Some(url) = &aws.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        if let Some(profile) = &aws.profile {
            loader = loader.profile_name(profile.clone());
        }
        if let Some(creds) = &options.credentials {
            loader = loader.credentials_provider(Credentials::new(
                creds.access_key_id.clone(),
                creds.secret_access_key.clone(),
                None,
                None,
                "classiclink-mirror-static",
            ));
        }
        let sdk_config = loader.load().await;
        Self { client: Client::new(&sdk_config), page_size: options.page_size.clamp(MIN_PAGE_SIZE, MAX_PAGE_SIZE) }
    }

    /// `CreateVpc` (world building for tests and demos).
    ///
    /// # Errors
    /// The classified EC2 error, or [`MALFORMED_RESPONSE`] without a VPC id.
    pub async fn create_vpc(&self, cidr_block: &str) -> Result<VpcId, Ec2Error> {
        let op = Operation::CreateVpc;
        let out = self.client.create_vpc().cidr_block(cidr_block).send().await.map_err(|e| classify(op, e))?;
        let id = out.vpc().and_then(|v| v.vpc_id());
        parse_id(id, "Vpc.VpcId", VpcId::try_new).map_err(|m| m.error(op))
    }

    /// `RunInstances` of `count` instances of `image_id` in `groups`, without
    /// a subnet (Classic on an endpoint with Classic semantics). World
    /// building for tests and demos.
    ///
    /// # Errors
    /// The classified EC2 error, or [`MALFORMED_RESPONSE`] without ids.
    pub async fn run_instances(
        &self,
        image_id: &str,
        groups: &[GroupId],
        count: i32,
    ) -> Result<Vec<InstanceId>, Ec2Error> {
        let op = Operation::RunInstances;
        let out = self
            .client
            .run_instances()
            .image_id(image_id)
            .min_count(count)
            .max_count(count)
            .set_security_group_ids(Some(groups.iter().map(|g| g.as_str().to_owned()).collect()))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        out.instances()
            .iter()
            .map(|i| parse_id(i.instance_id(), "Instances[].InstanceId", InstanceId::try_new))
            .collect::<Result<_, _>>()
            .map_err(|m| m.error(op))
    }

    /// `StopInstances` (world building).
    ///
    /// # Errors
    /// The classified EC2 error.
    pub async fn stop_instances(&self, ids: &[InstanceId]) -> Result<(), Ec2Error> {
        let op = Operation::StopInstances;
        self.client
            .stop_instances()
            .set_instance_ids(Some(id_strings(ids)))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        Ok(())
    }

    /// `StartInstances` (world building).
    ///
    /// # Errors
    /// The classified EC2 error.
    pub async fn start_instances(&self, ids: &[InstanceId]) -> Result<(), Ec2Error> {
        let op = Operation::StartInstances;
        self.client
            .start_instances()
            .set_instance_ids(Some(id_strings(ids)))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        Ok(())
    }

    /// `TerminateInstances` (world building).
    ///
    /// # Errors
    /// The classified EC2 error.
    pub async fn terminate_instances(&self, ids: &[InstanceId]) -> Result<(), Ec2Error> {
        let op = Operation::TerminateInstances;
        self.client
            .terminate_instances()
            .set_instance_ids(Some(id_strings(ids)))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        Ok(())
    }
}

fn id_strings<T: fmt::Display>(ids: &[T]) -> Vec<String> {
    ids.iter().map(ToString::to_string).collect()
}

/// EC2 answers `Return=false` when it did not do what was asked (ClassicLink
/// not possible for this VPC, say) without an error code: an error all the
/// same, or the executor would count it done.
fn check_return(op: Operation, value: Option<bool>) -> Result<(), Ec2Error> {
    match value {
        Some(false) => {
            Err(Ec2Error::new(op, "ReturnedFalse", "EC2 answered Return=false: the action was not performed"))
        }
        _ => Ok(()),
    }
}

#[async_trait]
impl Ec2 for AwsEc2 {
    async fn security_groups_page(
        &self,
        filter: &GroupFilter,
        next_token: Option<String>,
    ) -> Result<Page<SecurityGroup>, Ec2Error> {
        let op = Operation::DescribeSecurityGroups;
        let out = self
            .client
            .describe_security_groups()
            .set_filters(Some(group_filters(filter)).filter(|f| !f.is_empty()))
            .max_results(self.page_size)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        let items = out
            .security_groups()
            .iter()
            .map(security_group_from_sdk)
            .collect::<Result<_, _>>()
            .map_err(|m| m.error(op))?;
        Ok(Page { items, next_token: out.next_token().map(str::to_owned) })
    }

    async fn instances_page(
        &self,
        filter: &InstanceFilter,
        next_token: Option<String>,
    ) -> Result<Page<Instance>, Ec2Error> {
        let op = Operation::DescribeInstances;
        let out = self
            .client
            .describe_instances()
            .set_filters(Some(instance_filters(filter)).filter(|f| !f.is_empty()))
            .max_results(self.page_size)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        let items = out
            .reservations()
            .iter()
            .flat_map(|reservation| reservation.instances())
            .map(instance_from_sdk)
            .collect::<Result<_, _>>()
            .map_err(|m| m.error(op))?;
        Ok(Page { items, next_token: out.next_token().map(str::to_owned) })
    }

    async fn classic_link_instances_page(
        &self,
        filter: &LinkFilter,
        next_token: Option<String>,
    ) -> Result<Page<Link>, Ec2Error> {
        let op = Operation::DescribeClassicLinkInstances;
        let out = self
            .client
            .describe_classic_link_instances()
            .set_filters(Some(link_filters(filter)).filter(|f| !f.is_empty()))
            .max_results(self.page_size)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        let items = out.instances().iter().map(link_from_sdk).collect::<Result<_, _>>().map_err(|m| m.error(op))?;
        Ok(Page { items, next_token: out.next_token().map(str::to_owned) })
    }

    async fn vpcs_page(&self, vpc_ids: &[VpcId], next_token: Option<String>) -> Result<Page<VpcId>, Ec2Error> {
        // A `vpc-id` filter, not `VpcIds`: unknown ids are simply absent.
        let op = Operation::DescribeVpcs;
        let out = self
            .client
            .describe_vpcs()
            .set_filters(filter("vpc-id", id_strings(vpc_ids)).map(|f| vec![f]))
            .max_results(self.page_size)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        let items = out
            .vpcs()
            .iter()
            .map(|vpc| parse_id(vpc.vpc_id(), "Vpcs[].VpcId", VpcId::try_new))
            .collect::<Result<_, _>>()
            .map_err(|m| m.error(op))?;
        Ok(Page { items, next_token: out.next_token().map(str::to_owned) })
    }

    async fn vpc_classic_link_request(&self, vpc_ids: &[VpcId]) -> Result<Vec<Vpc>, Ec2Error> {
        let op = Operation::DescribeVpcClassicLink;
        let ids = (!vpc_ids.is_empty()).then(|| id_strings(vpc_ids));
        let out = self.client.describe_vpc_classic_link().set_vpc_ids(ids).send().await.map_err(|e| classify(op, e))?;
        out.vpcs().iter().map(vpc_from_sdk).collect::<Result<_, _>>().map_err(|m| m.error(op))
    }

    async fn create_security_group(&self, request: &CreateGroup) -> Result<GroupId, Ec2Error> {
        let op = Operation::CreateSecurityGroup;
        let mut call = self
            .client
            .create_security_group()
            .vpc_id(request.vpc_id.as_str())
            .group_name(&request.name)
            .description(&request.description);
        if !request.tags.is_empty() {
            // Tags in the create call itself: a mirror can never exist
            // without its ownership tag (SPEC §4.2).
            call = call.tag_specifications(
                sdk::TagSpecification::builder()
                    .resource_type(sdk::ResourceType::SecurityGroup)
                    .set_tags(Some(tags_to_sdk(&request.tags)))
                    .build(),
            );
        }
        let out = call.send().await.map_err(|e| classify(op, e))?;
        parse_id(out.group_id(), "GroupId", GroupId::try_new).map_err(|m| m.error(op))
    }

    async fn delete_security_group(&self, group_id: &GroupId) -> Result<(), Ec2Error> {
        let op = Operation::DeleteSecurityGroup;
        self.client.delete_security_group().group_id(group_id.as_str()).send().await.map_err(|e| classify(op, e))?;
        Ok(())
    }

    async fn authorize_ingress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        if grants.is_empty() {
            return Ok(());
        }
        let op = Operation::AuthorizeSecurityGroupIngress;
        let out = self
            .client
            .authorize_security_group_ingress()
            .group_id(group_id.as_str())
            .set_ip_permissions(Some(permissions_from_grants(grants, Descriptions::Include)))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        check_return(op, out.r#return())
    }

    async fn revoke_ingress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        if grants.is_empty() {
            return Ok(());
        }
        let op = Operation::RevokeSecurityGroupIngress;
        let out = self
            .client
            .revoke_security_group_ingress()
            .group_id(group_id.as_str())
            // The description is not part of a rule's identity (SPEC §4.3).
            .set_ip_permissions(Some(permissions_from_grants(grants, Descriptions::Omit)))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        // In EC2-Classic and default VPCs, EC2 answers rules it did not find
        // with `UnknownIpPermissions` instead of `InvalidPermission.NotFound`.
        // Either way they are absent, which is what a revoke wants.
        if !out.unknown_ip_permissions().is_empty() {
            tracing::debug!(group_id = %group_id, unknown = out.unknown_ip_permissions().len(),
                "revoke named rules the group does not have");
            return Ok(());
        }
        check_return(op, out.r#return())
    }

    async fn update_ingress_descriptions(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        if grants.is_empty() {
            return Ok(());
        }
        let op = Operation::UpdateSecurityGroupRuleDescriptionsIngress;
        // A grant without a description is sent without one, which is how
        // EC2 is told to remove the description.
        let out = self
            .client
            .update_security_group_rule_descriptions_ingress()
            .group_id(group_id.as_str())
            .set_ip_permissions(Some(permissions_from_grants(grants, Descriptions::Include)))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        check_return(op, out.r#return())
    }

    async fn create_tags(&self, group_id: &GroupId, tags: &BTreeMap<String, String>) -> Result<(), Ec2Error> {
        if tags.is_empty() {
            return Ok(());
        }
        let op = Operation::CreateTags;
        self.client
            .create_tags()
            .resources(group_id.as_str())
            .set_tags(Some(tags_to_sdk(tags)))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        Ok(())
    }

    async fn delete_tags(&self, group_id: &GroupId, keys: &[String]) -> Result<(), Ec2Error> {
        // `DeleteTags` without tags deletes *every* tag of the resource,
        // ownership tag included: never send it empty.
        if keys.is_empty() {
            return Ok(());
        }
        let op = Operation::DeleteTags;
        self.client
            .delete_tags()
            .resources(group_id.as_str())
            // Key only: delete whatever the value is.
            .set_tags(Some(keys.iter().map(|k| sdk::Tag::builder().key(k).build()).collect()))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        Ok(())
    }

    async fn attach_classic_link_vpc(
        &self,
        instance_id: &InstanceId,
        vpc_id: &VpcId,
        groups: &[GroupId],
    ) -> Result<(), Ec2Error> {
        let op = Operation::AttachClassicLinkVpc;
        let out = self
            .client
            .attach_classic_link_vpc()
            .instance_id(instance_id.as_str())
            .vpc_id(vpc_id.as_str())
            .set_groups(Some(id_strings(groups)))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        check_return(op, out.r#return())
    }

    async fn detach_classic_link_vpc(&self, instance_id: &InstanceId, vpc_id: &VpcId) -> Result<(), Ec2Error> {
        let op = Operation::DetachClassicLinkVpc;
        let out = self
            .client
            .detach_classic_link_vpc()
            .instance_id(instance_id.as_str())
            .vpc_id(vpc_id.as_str())
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        check_return(op, out.r#return())
    }

    async fn enable_vpc_classic_link(&self, vpc_id: &VpcId) -> Result<(), Ec2Error> {
        let op = Operation::EnableVpcClassicLink;
        let out =
            self.client.enable_vpc_classic_link().vpc_id(vpc_id.as_str()).send().await.map_err(|e| classify(op, e))?;
        check_return(op, out.r#return())
    }
}

// --- errors -------------------------------------------------------------

/// Classifies any SDK failure of `op` into an [`Ec2Error`]:
///
/// - an EC2 error document → its code (`ProvideErrorMetadata::code`, never
///   the message), classified by [`super::ErrorKind::from_code`];
/// - an answer without a code → by HTTP status (5xx transient, 429 throttled);
/// - no answer (timeouts, refused or reset connections) → transient
///   `Timeout` / `ConnectionError`;
/// - credentials that cannot be loaded → fatal `CredentialsUnavailable`
///   (transient `Timeout` when the provider timed out);
/// - a request that cannot be built or sent for another reason → fatal.
fn classify<E>(op: Operation, err: SdkError<E, HttpResponse>) -> Ec2Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&err).to_string();
    if let Some(creds) = find_source::<CredentialsError>(&err) {
        return match creds {
            CredentialsError::ProviderTimedOut(_) => Ec2Error::transport(op, TIMEOUT, detail),
            _ => Ec2Error::new(op, "CredentialsUnavailable", detail),
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
        SdkError::DispatchFailure(dispatch) if dispatch.is_io() => Ec2Error::transport(op, "ConnectionError", detail),
        // `is_user` (a bad endpoint URL, say) and `is_other`: sending again
        // will fail the same way.
        SdkError::DispatchFailure(_) => Ec2Error::new(op, "DispatchFailure", detail),
        SdkError::ConstructionFailure(_) => Ec2Error::new(op, "RequestConstructionFailed", detail),
        _ => Ec2Error::new(op, "UnknownSdkError", detail),
    }
}

/// Classifies an answer EC2 (or something in front of it) gave: by code
/// when there is one, else by HTTP status.
fn from_answer(op: Operation, code: Option<&str>, message: Option<&str>, status: Option<u16>) -> Ec2Error {
    let message = message.unwrap_or_default();
    match (code.filter(|c| !c.is_empty()), status) {
        (Some(code), _) => Ec2Error::new(op, code, message),
        (None, Some(429)) => Ec2Error::new(op, "Throttling", message),
        (None, Some(status)) if (500..600).contains(&status) => {
            Ec2Error::transport(op, format!("HttpStatus{status}"), message)
        }
        // A 2xx whose body we could not read, or a 4xx without an error
        // document: asking again will not help.
        (None, Some(status)) if (200..300).contains(&status) => Ec2Error::new(op, MALFORMED_RESPONSE, message),
        (None, Some(status)) => Ec2Error::new(op, format!("HttpStatus{status}"), message),
        (None, None) => Ec2Error::new(op, "UnknownError", message),
    }
}

fn find_source<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
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
struct Malformed {
    /// Where, e.g. `SecurityGroups[sg-1].IpPermissions[].IpProtocol`.
    field: String,
    /// What is wrong with it.
    problem: String,
}

impl Malformed {
    fn new(field: impl Into<String>, problem: impl fmt::Display) -> Self {
        Self { field: field.into(), problem: problem.to_string() }
    }

    fn missing(field: impl Into<String>) -> Self {
        Self::new(field, "missing")
    }

    /// Prefixes the location (e.g. with the group the field belongs to).
    fn within(self, outer: &str) -> Self {
        Self { field: format!("{outer}.{}", self.field), problem: self.problem }
    }

    fn error(self, op: Operation) -> Ec2Error {
        Ec2Error::new(op, MALFORMED_RESPONSE, format!("malformed response: {}: {}", self.field, self.problem))
    }
}

fn required<'a>(value: Option<&'a str>, field: &str) -> Result<&'a str, Malformed> {
    value.filter(|v| !v.is_empty()).ok_or_else(|| Malformed::missing(field))
}

fn parse_id<T>(value: Option<&str>, field: &str, parse: fn(String) -> Result<T, ModelError>) -> Result<T, Malformed> {
    parse(required(value, field)?.to_owned()).map_err(|e| Malformed::new(field, e))
}

// --- SDK shapes → domain ----------------------------------------------------

fn tags_from_sdk(tags: &[sdk::Tag]) -> Result<BTreeMap<String, String>, Malformed> {
    tags.iter()
        .map(|t| Ok((required(t.key(), "Tags[].Key")?.to_owned(), t.value().unwrap_or_default().to_owned())))
        .collect()
}

fn tags_to_sdk(tags: &BTreeMap<String, String>) -> Vec<sdk::Tag> {
    tags.iter().map(|(k, v)| sdk::Tag::builder().key(k).value(v).build()).collect()
}

fn optional_vpc(value: Option<&str>, field: &str) -> Result<Option<VpcId>, Malformed> {
    // EC2-Classic groups and instances have no `VpcId` (or an empty one).
    value.filter(|v| !v.is_empty()).map(|v| VpcId::try_new(v).map_err(|e| Malformed::new(field, e))).transpose()
}

fn security_group_from_sdk(group: &sdk::SecurityGroup) -> Result<SecurityGroup, Malformed> {
    let id = parse_id(group.group_id(), "SecurityGroups[].GroupId", GroupId::try_new)?;
    let at = format!("SecurityGroups[{id}]");
    let inner = || -> Result<SecurityGroup, Malformed> {
        // Same-account references lose their owner only when we know the
        // account; EC2 always says, so an answer without it is malformed.
        let owner_id = required(group.owner_id(), "OwnerId")?.to_owned();
        let mut ingress = Vec::new();
        for permission in group.ip_permissions() {
            ingress.extend(grants_from_permission(permission, &owner_id)?);
        }
        Ok(SecurityGroup {
            id: id.clone(),
            name: required(group.group_name(), "GroupName")?.to_owned(),
            description: group.description().unwrap_or_default().to_owned(),
            vpc_id: optional_vpc(group.vpc_id(), "VpcId")?,
            owner_id,
            tags: tags_from_sdk(group.tags())?,
            ingress,
        })
    };
    inner().map_err(|m| m.within(&at))
}

/// One EC2 `IpPermission` → one grant per IPv4 range, IPv6 range, prefix
/// list and group pair. `own_account` is the owner of the group holding the
/// rule: references to groups of that account lose their owner.
fn grants_from_permission(permission: &sdk::IpPermission, own_account: &str) -> Result<Vec<Grant>, Malformed> {
    let protocol = required(permission.ip_protocol(), "IpPermissions[].IpProtocol")?;
    let grant = |peer: Peer, description: Option<&str>| {
        Grant::from_ec2(
            protocol,
            permission.from_port(),
            permission.to_port(),
            peer,
            description.map(str::to_owned),
            Some(own_account),
        )
        .map_err(|e| {
            let field = match e {
                ModelError::BadPorts { .. } => "IpPermissions[].FromPort/ToPort",
                _ => "IpPermissions[].IpProtocol",
            };
            Malformed::new(field, e)
        })
    };
    let mut grants = Vec::new();
    for range in permission.ip_ranges() {
        let field = "IpPermissions[].IpRanges[].CidrIp";
        let net = canonical_ipv4(required(range.cidr_ip(), field)?).map_err(|e| Malformed::new(field, e))?;
        grants.push(grant(Peer::Ipv4(net), range.description())?);
    }
    for range in permission.ipv6_ranges() {
        let field = "IpPermissions[].Ipv6Ranges[].CidrIpv6";
        let net = canonical_ipv6(required(range.cidr_ipv6(), field)?).map_err(|e| Malformed::new(field, e))?;
        grants.push(grant(Peer::Ipv6(net), range.description())?);
    }
    for list in permission.prefix_list_ids() {
        let id =
            parse_id(list.prefix_list_id(), "IpPermissions[].PrefixListIds[].PrefixListId", PrefixListId::try_new)?;
        grants.push(grant(Peer::PrefixList(id), list.description())?);
    }
    for pair in permission.user_id_group_pairs() {
        let group = parse_id(pair.group_id(), "IpPermissions[].UserIdGroupPairs[].GroupId", GroupId::try_new)?;
        let owner = pair.user_id().map(str::to_owned);
        grants.push(grant(Peer::Group { group, owner }, pair.description())?);
    }
    Ok(grants)
}

fn instance_from_sdk(instance: &sdk::Instance) -> Result<Instance, Malformed> {
    let id = parse_id(instance.instance_id(), "Reservations[].Instances[].InstanceId", InstanceId::try_new)?;
    let inner = || -> Result<Instance, Malformed> {
        let state_name = instance.state().and_then(|s| s.name()).map(sdk::InstanceStateName::as_str);
        let state_name = required(state_name, "State.Name")?;
        let state = InstanceState::from_ec2(state_name)
            .ok_or_else(|| Malformed::new("State.Name", format!("{state_name:?} is not an instance state")))?;
        let groups = instance
            .security_groups()
            .iter()
            .map(|g| parse_id(g.group_id(), "SecurityGroups[].GroupId", GroupId::try_new))
            .collect::<Result<_, _>>()?;
        Ok(Instance { id: id.clone(), state, vpc_id: optional_vpc(instance.vpc_id(), "VpcId")?, groups })
    };
    inner().map_err(|m| m.within(&format!("Reservations[].Instances[{id}]")))
}

fn link_from_sdk(link: &sdk::ClassicLinkInstance) -> Result<Link, Malformed> {
    let instance_id = parse_id(link.instance_id(), "Instances[].InstanceId", InstanceId::try_new)?;
    let inner = || -> Result<Link, Malformed> {
        Ok(Link {
            instance_id: instance_id.clone(),
            vpc_id: parse_id(link.vpc_id(), "VpcId", VpcId::try_new)?,
            groups: link
                .groups()
                .iter()
                .map(|g| parse_id(g.group_id(), "Groups[].GroupId", GroupId::try_new))
                .collect::<Result<_, _>>()?,
        })
    };
    inner().map_err(|m| m.within(&format!("Instances[{instance_id}]")))
}

fn vpc_from_sdk(vpc: &sdk::VpcClassicLink) -> Result<Vpc, Malformed> {
    Ok(Vpc {
        id: parse_id(vpc.vpc_id(), "Vpcs[].VpcId", VpcId::try_new)?,
        classic_link_enabled: vpc.classic_link_enabled().unwrap_or(false),
    })
}

// --- domain → SDK shapes ----------------------------------------------------

/// Whether rule descriptions go into the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Descriptions {
    /// Authorize and description updates: the description is the point.
    Include,
    /// Revoke: EC2 matches rules without it; sending it could only mismatch.
    Omit,
}

/// The peers of one (protocol, ports) permission, in input order.
#[derive(Default)]
struct PermissionPeers {
    ipv4: Vec<sdk::IpRange>,
    ipv6: Vec<sdk::Ipv6Range>,
    prefix_lists: Vec<sdk::PrefixListId>,
    groups: Vec<sdk::UserIdGroupPair>,
}

/// Grants → `IpPermissions`, one per (protocol, ports), so one request
/// carries every grant of a batch (SPEC §4.3). Ordered by (protocol,
/// ports); peers keep their input order.
fn permissions_from_grants(grants: &[Grant], descriptions: Descriptions) -> Vec<sdk::IpPermission> {
    let mut by_rule: BTreeMap<(Protocol, Ports), PermissionPeers> = BTreeMap::new();
    for grant in grants {
        let description = match descriptions {
            Descriptions::Include => grant.description.clone(),
            Descriptions::Omit => None,
        };
        let peers = by_rule.entry((grant.key.protocol, grant.key.ports)).or_default();
        match &grant.key.peer {
            Peer::Ipv4(net) => {
                peers.ipv4.push(sdk::IpRange::builder().cidr_ip(net.to_string()).set_description(description).build())
            }
            Peer::Ipv6(net) => peers
                .ipv6
                .push(sdk::Ipv6Range::builder().cidr_ipv6(net.to_string()).set_description(description).build()),
            Peer::PrefixList(id) => peers
                .prefix_lists
                .push(sdk::PrefixListId::builder().prefix_list_id(id.as_str()).set_description(description).build()),
            Peer::Group { group, owner } => peers.groups.push(
                sdk::UserIdGroupPair::builder()
                    .group_id(group.as_str())
                    .set_user_id(owner.clone())
                    .set_description(description)
                    .build(),
            ),
        }
    }
    by_rule
        .into_iter()
        .map(|((protocol, ports), peers)| {
            let (from_port, to_port) = ports.as_ec2();
            sdk::IpPermission::builder()
                .ip_protocol(protocol.as_ec2())
                .set_from_port(from_port)
                .set_to_port(to_port)
                .set_ip_ranges(Some(peers.ipv4).filter(|v| !v.is_empty()))
                .set_ipv6_ranges(Some(peers.ipv6).filter(|v| !v.is_empty()))
                .set_prefix_list_ids(Some(peers.prefix_lists).filter(|v| !v.is_empty()))
                .set_user_id_group_pairs(Some(peers.groups).filter(|v| !v.is_empty()))
                .build()
        })
        .collect()
}

fn filter(name: impl Into<String>, values: Vec<String>) -> Option<sdk::Filter> {
    // An empty field does not filter (the port's contract); EC2 would
    // reject a filter without values.
    (!values.is_empty()).then(|| sdk::Filter::builder().name(name).set_values(Some(values)).build())
}

fn group_filters(f: &GroupFilter) -> Vec<sdk::Filter> {
    [
        filter("group-id", id_strings(&f.group_ids)),
        filter("group-name", f.group_names.clone()),
        filter("vpc-id", id_strings(&f.vpc_ids)),
        filter("tag-key", f.tag_keys.clone()),
    ]
    .into_iter()
    .chain(f.tags.iter().map(|(key, values)| filter(format!("tag:{key}"), values.clone())))
    .flatten()
    .collect()
}

fn instance_filters(f: &InstanceFilter) -> Vec<sdk::Filter> {
    [
        filter("instance-id", id_strings(&f.instance_ids)),
        filter("instance.group-id", id_strings(&f.group_ids)),
        filter("instance-state-name", f.states.iter().map(|s| s.as_ec2().to_owned()).collect()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn link_filters(f: &LinkFilter) -> Vec<sdk::Filter> {
    [
        filter("instance-id", id_strings(&f.instance_ids)),
        filter("group-id", id_strings(&f.group_ids)),
        filter("vpc-id", id_strings(&f.vpc_ids)),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use aws_sdk_ec2::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use super::*;
    use crate::ec2::ErrorKind;

    const OWN: &str = "111122223333";
    const OTHER: &str = "210987654321";

    fn sg(id: &str) -> GroupId {
        GroupId::try_new(id).unwrap()
    }

    fn grant(protocol: Protocol, ports: Ports, peer: Peer, description: Option<&str>) -> Grant {
        Grant::new(protocol, ports, peer, description.map(str::to_owned))
    }

    fn v4(cidr: &str) -> Peer {
        Peer::Ipv4(canonical_ipv4(cidr).unwrap())
    }

    fn v6(cidr: &str) -> Peer {
        Peer::Ipv6(canonical_ipv6(cidr).unwrap())
    }

    fn group_peer(id: &str, owner: Option<&str>) -> Peer {
        Peer::Group { group: sg(id), owner: owner.map(str::to_owned) }
    }

    fn tcp(port: u16) -> Ports {
        Ports::Range { from: port, to: port }
    }

    fn all_grants(permissions: &[sdk::IpPermission]) -> BTreeSet<Grant> {
        permissions.iter().flat_map(|p| grants_from_permission(p, OWN).unwrap()).collect()
    }

    #[test]
    fn one_ip_permission_becomes_one_grant_per_peer_in_canonical_form() {
        let permission = sdk::IpPermission::builder()
            .ip_protocol("6")
            .from_port(443)
            .to_port(443)
            .ip_ranges(sdk::IpRange::builder().cidr_ip("10.1.2.3/8").description("office").build())
            .ip_ranges(sdk::IpRange::builder().cidr_ip("203.0.113.7").build())
            .ipv6_ranges(sdk::Ipv6Range::builder().cidr_ipv6("2001:DB8::1/32").description("").build())
            .prefix_list_ids(sdk::PrefixListId::builder().prefix_list_id("pl-0a1").build())
            .user_id_group_pairs(sdk::UserIdGroupPair::builder().group_id("sg-0a2").user_id(OWN).build())
            .user_id_group_pairs(
                sdk::UserIdGroupPair::builder().group_id("sg-843f59ed").user_id("amazon-elb").description("lb").build(),
            )
            .build();
        let grants = grants_from_permission(&permission, OWN).unwrap();
        let https = |peer, d| grant(Protocol::Tcp, tcp(443), peer, d);
        assert_eq!(
            grants,
            vec![
                https(v4("10.0.0.0/8"), Some("office")),
                https(v4("203.0.113.7/32"), None),
                https(v6("2001:db8::/32"), None),
                https(Peer::PrefixList(PrefixListId::try_new("pl-0a1").unwrap()), None),
                https(group_peer("sg-0a2", None), None),
                https(group_peer("sg-843f59ed", Some("amazon-elb")), Some("lb")),
            ]
        );
    }

    #[test]
    fn grants_round_trip_through_ip_permissions() {
        let grants: BTreeSet<Grant> = [
            grant(Protocol::Tcp, tcp(443), v4("0.0.0.0/0"), Some("web")),
            grant(Protocol::Tcp, tcp(443), v6("::/0"), None),
            grant(Protocol::Tcp, Ports::Range { from: 0, to: 65535 }, v4("10.0.0.0/8"), None),
            grant(Protocol::Udp, Ports::Range { from: 1000, to: 2000 }, group_peer("sg-1", None), Some("self")),
            grant(Protocol::Icmp, Ports::Icmp { icmp_type: 8, code: -1 }, v4("198.51.100.0/24"), None),
            grant(Protocol::Icmp, Ports::Icmp { icmp_type: -1, code: -1 }, v4("198.51.100.0/24"), None),
            grant(Protocol::Icmpv6, Ports::Icmp { icmp_type: 128, code: 0 }, v6("2001:db8::/32"), None),
            grant(Protocol::All, Ports::None, group_peer("sg-2", Some(OTHER)), None),
            grant(Protocol::Number(50), Ports::None, v4("192.0.2.0/24"), Some("esp")),
            grant(Protocol::Tcp, tcp(22), Peer::PrefixList(PrefixListId::try_new("pl-1").unwrap()), Some("vpn")),
        ]
        .into();
        let input: Vec<Grant> = grants.iter().cloned().collect();
        let permissions = permissions_from_grants(&input, Descriptions::Include);
        assert_eq!(all_grants(&permissions), grants);
    }

    #[test]
    fn grants_of_one_protocol_and_port_range_share_one_ip_permission() {
        let grants = [
            grant(Protocol::Tcp, tcp(443), v4("10.0.0.0/8"), None),
            grant(Protocol::Tcp, tcp(80), v4("10.0.0.0/8"), None),
            grant(Protocol::Tcp, tcp(443), group_peer("sg-1", None), None),
            grant(Protocol::Tcp, tcp(443), v4("192.0.2.0/24"), Some("b")),
            grant(Protocol::Udp, tcp(443), v4("10.0.0.0/8"), None),
        ];
        let permissions = permissions_from_grants(&grants, Descriptions::Include);
        let shape: Vec<_> = permissions
            .iter()
            .map(|p| {
                let cidrs: Vec<&str> = p.ip_ranges().iter().filter_map(|r| r.cidr_ip()).collect();
                (p.ip_protocol().unwrap(), p.from_port(), p.to_port(), cidrs, p.user_id_group_pairs().len())
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("tcp", Some(80), Some(80), vec!["10.0.0.0/8"], 0),
                ("tcp", Some(443), Some(443), vec!["10.0.0.0/8", "192.0.2.0/24"], 1),
                ("udp", Some(443), Some(443), vec!["10.0.0.0/8"], 0),
            ]
        );
        // Peers EC2 would reject as empty lists are left out entirely.
        assert!(permissions[0].ipv6_ranges.is_none() && permissions[0].user_id_group_pairs.is_none());
    }

    #[test]
    fn port_less_protocols_are_sent_without_ports_and_icmp_with_type_and_code() {
        let grants = [
            grant(Protocol::All, Ports::None, v4("10.0.0.0/8"), None),
            grant(Protocol::Number(50), Ports::None, v4("10.0.0.0/8"), None),
            grant(Protocol::Icmp, Ports::Icmp { icmp_type: -1, code: -1 }, v4("10.0.0.0/8"), None),
        ];
        let sent: Vec<_> = permissions_from_grants(&grants, Descriptions::Include)
            .iter()
            .map(|p| (p.ip_protocol().unwrap().to_owned(), p.from_port(), p.to_port()))
            .collect();
        assert_eq!(
            sent,
            vec![("-1".into(), None, None), ("icmp".into(), Some(-1), Some(-1)), ("50".into(), None, None)]
        );
    }

    #[test]
    fn ec2_protocol_spellings_are_canonicalised_on_the_way_in() {
        let read = |protocol: &str, from: Option<i32>, to: Option<i32>| {
            let p = sdk::IpPermission::builder()
                .ip_protocol(protocol)
                .set_from_port(from)
                .set_to_port(to)
                .ip_ranges(sdk::IpRange::builder().cidr_ip("10.0.0.0/8").build())
                .build();
            grants_from_permission(&p, OWN).unwrap().remove(0).key
        };
        assert_eq!(read("-1", Some(-1), Some(-1)), read("-1", None, None));
        assert_eq!(read("6", Some(22), Some(22)), read("tcp", Some(22), Some(22)));
        assert_eq!(read("1", Some(-1), Some(-1)).protocol, Protocol::Icmp);
        assert_eq!(read("58", Some(-1), Some(-1)).protocol, Protocol::Icmpv6);
        assert_eq!(read("50", Some(-1), Some(-1)).ports, Ports::None);
        assert_eq!(read("tcp", Some(-1), Some(-1)).ports, Ports::Range { from: 0, to: 65535 });
    }

    #[test]
    fn revocations_carry_no_descriptions_and_updates_do() {
        let grants = [
            grant(Protocol::Tcp, tcp(443), v4("10.0.0.0/8"), Some("office")),
            grant(Protocol::Tcp, tcp(443), group_peer("sg-1", Some(OTHER)), Some("peer")),
        ];
        let revoke = permissions_from_grants(&grants, Descriptions::Omit);
        assert_eq!(revoke[0].ip_ranges()[0].description(), None);
        assert_eq!(revoke[0].user_id_group_pairs()[0].description(), None);
        assert_eq!(revoke[0].user_id_group_pairs()[0].user_id(), Some(OTHER));
        let update = permissions_from_grants(&grants, Descriptions::Include);
        assert_eq!(update[0].ip_ranges()[0].description(), Some("office"));
        assert_eq!(update[0].user_id_group_pairs()[0].description(), Some("peer"));
    }

    fn sdk_group() -> sdk::builders::SecurityGroupBuilder {
        sdk::SecurityGroup::builder()
            .group_id("sg-0a1")
            .group_name("web")
            .description("Web tier")
            .owner_id(OWN)
            .tags(sdk::Tag::builder().key("classiclinkmirror:linkToVPC").value("vpc-9f2").build())
            .tags(sdk::Tag::builder().key("empty").build())
            .ip_permissions(
                sdk::IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(8080)
                    .to_port(8080)
                    .user_id_group_pairs(sdk::UserIdGroupPair::builder().group_id("sg-0a2").user_id(OWN).build())
                    .build(),
            )
    }

    #[test]
    fn a_group_without_vpc_id_is_a_classic_group_with_its_tags_and_rules() {
        let group = security_group_from_sdk(&sdk_group().build()).unwrap();
        assert!(group.is_classic());
        assert_eq!(group.owner_id, OWN);
        assert_eq!(group.tags.get("classiclinkmirror:linkToVPC").map(String::as_str), Some("vpc-9f2"));
        assert_eq!(group.tags.get("empty").map(String::as_str), Some(""));
        assert_eq!(group.ingress, vec![grant(Protocol::Tcp, tcp(8080), group_peer("sg-0a2", None), None)]);
        let in_vpc = security_group_from_sdk(&sdk_group().vpc_id("vpc-9f2").build()).unwrap();
        assert_eq!(in_vpc.vpc_id, Some(VpcId::try_new("vpc-9f2").unwrap()));
    }

    fn malformed(result: Result<impl fmt::Debug, Malformed>) -> String {
        let error = result.unwrap_err().error(Operation::DescribeSecurityGroups);
        assert_eq!(error.code, MALFORMED_RESPONSE);
        assert_eq!(error.kind, ErrorKind::Fatal);
        error.message
    }

    #[test]
    fn malformed_groups_are_fatal_errors_naming_the_field() {
        let rule = |p: sdk::IpPermission| security_group_from_sdk(&sdk_group().ip_permissions(p).build());
        let cidr = |c: &str| sdk::IpRange::builder().cidr_ip(c).build();
        let cases = [
            (
                malformed(security_group_from_sdk(&sdk::SecurityGroup::builder().group_name("x").build())),
                "malformed response: SecurityGroups[].GroupId: missing",
            ),
            (
                malformed(security_group_from_sdk(&sdk_group().group_id("sg-XYZ").build())),
                r#"malformed response: SecurityGroups[].GroupId: "sg-XYZ" is not a security group id"#,
            ),
            (
                malformed(security_group_from_sdk(&sdk_group().set_owner_id(None).build())),
                "malformed response: SecurityGroups[sg-0a1].OwnerId: missing",
            ),
            (
                malformed(rule(sdk::IpPermission::builder().ip_ranges(cidr("10.0.0.0/8")).build())),
                "malformed response: SecurityGroups[sg-0a1].IpPermissions[].IpProtocol: missing",
            ),
            (
                malformed(rule(sdk::IpPermission::builder().ip_protocol("gre").ip_ranges(cidr("10.0.0.0/8")).build())),
                r#"malformed response: SecurityGroups[sg-0a1].IpPermissions[].IpProtocol: "gre" is not an IP protocol (name, number 0-255, or -1)"#,
            ),
            (
                malformed(rule(sdk::IpPermission::builder().ip_protocol("tcp").ip_ranges(cidr("10.0.0.0/8")).build())),
                "malformed response: SecurityGroups[sg-0a1].IpPermissions[].FromPort/ToPort: invalid port range (FromPort none, ToPort none) for protocol tcp",
            ),
            (
                malformed(rule(sdk::IpPermission::builder().ip_protocol("-1").ip_ranges(cidr("10.0.0.300/8")).build())),
                r#"malformed response: SecurityGroups[sg-0a1].IpPermissions[].IpRanges[].CidrIp: "10.0.0.300/8" is not a CIDR block"#,
            ),
            (
                malformed(rule(
                    sdk::IpPermission::builder()
                        .ip_protocol("-1")
                        .user_id_group_pairs(sdk::UserIdGroupPair::builder().group_name("lb").build())
                        .build(),
                )),
                "malformed response: SecurityGroups[sg-0a1].IpPermissions[].UserIdGroupPairs[].GroupId: missing",
            ),
            (
                malformed(security_group_from_sdk(&sdk_group().tags(sdk::Tag::builder().value("v").build()).build())),
                "malformed response: SecurityGroups[sg-0a1].Tags[].Key: missing",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn instances_links_and_vpcs_convert_and_reject_what_they_cannot_read() {
        let instance = |state: &str| {
            sdk::Instance::builder()
                .instance_id("i-0b3")
                .state(sdk::InstanceState::builder().name(sdk::InstanceStateName::from(state)).build())
                .security_groups(sdk::GroupIdentifier::builder().group_id("sg-0a1").group_name("web").build())
                .build()
        };
        let classic = instance_from_sdk(&instance("running")).unwrap();
        assert_eq!(classic.state, InstanceState::Running);
        assert_eq!(classic.vpc_id, None);
        assert_eq!(classic.groups, BTreeSet::from([sg("sg-0a1")]));
        assert_eq!(instance_from_sdk(&instance("shutting-down")).unwrap().state, InstanceState::ShuttingDown);
        assert_eq!(
            malformed(instance_from_sdk(&instance("hibernating"))),
            r#"malformed response: Reservations[].Instances[i-0b3].State.Name: "hibernating" is not an instance state"#
        );

        let link = sdk::ClassicLinkInstance::builder()
            .instance_id("i-0b3")
            .vpc_id("vpc-9f2")
            .groups(sdk::GroupIdentifier::builder().group_id("sg-77c").build())
            .groups(sdk::GroupIdentifier::builder().group_id("sg-77d").build())
            .build();
        let link = link_from_sdk(&link).unwrap();
        assert_eq!(link.vpc_id.as_str(), "vpc-9f2");
        assert_eq!(link.groups, BTreeSet::from([sg("sg-77c"), sg("sg-77d")]));
        assert_eq!(
            malformed(link_from_sdk(&sdk::ClassicLinkInstance::builder().instance_id("i-0b3").build())),
            "malformed response: Instances[i-0b3].VpcId: missing"
        );

        let vpc = vpc_from_sdk(&sdk::VpcClassicLink::builder().vpc_id("vpc-9f2").classic_link_enabled(true).build());
        assert_eq!(vpc.unwrap(), Vpc { id: VpcId::try_new("vpc-9f2").unwrap(), classic_link_enabled: true });
        let unknown = vpc_from_sdk(&sdk::VpcClassicLink::builder().vpc_id("vpc-1").build()).unwrap();
        assert!(!unknown.classic_link_enabled);
    }

    fn filters(list: &[sdk::Filter]) -> Vec<(String, Vec<String>)> {
        list.iter().map(|f| (f.name().unwrap().to_owned(), f.values().to_vec())).collect()
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn port_filters_become_ec2_filters_and_empty_fields_do_not_filter() {
        assert!(group_filters(&GroupFilter::default()).is_empty());
        let filter = GroupFilter {
            group_ids: vec![sg("sg-1"), sg("sg-2")],
            group_names: strings(&["web"]),
            vpc_ids: vec![VpcId::try_new("vpc-1").unwrap()],
            tag_keys: strings(&["k"]),
            tags: BTreeMap::from([("env".to_owned(), strings(&["prod", "stage"])), ("none".to_owned(), vec![])]),
        };
        assert_eq!(
            filters(&group_filters(&filter)),
            vec![
                ("group-id".into(), strings(&["sg-1", "sg-2"])),
                ("group-name".into(), strings(&["web"])),
                ("vpc-id".into(), strings(&["vpc-1"])),
                ("tag-key".into(), strings(&["k"])),
                ("tag:env".into(), strings(&["prod", "stage"])),
            ]
        );
        let instances = InstanceFilter {
            instance_ids: vec![InstanceId::try_new("i-1").unwrap()],
            group_ids: vec![sg("sg-1")],
            states: vec![InstanceState::Pending, InstanceState::ShuttingDown],
        };
        assert_eq!(
            filters(&instance_filters(&instances)),
            vec![
                ("instance-id".into(), strings(&["i-1"])),
                ("instance.group-id".into(), strings(&["sg-1"])),
                ("instance-state-name".into(), strings(&["pending", "shutting-down"])),
            ]
        );
        let links = LinkFilter { vpc_ids: vec![VpcId::try_new("vpc-1").unwrap()], ..LinkFilter::default() };
        assert_eq!(filters(&link_filters(&links)), vec![("vpc-id".into(), strings(&["vpc-1"]))]);
    }

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

    #[test]
    fn static_credentials_never_print_the_secret() {
        let creds = StaticCredentials { access_key_id: "AKIDEXAMPLE".into(), secret_access_key: "s3cr3t".into() };
        let printed =
            format!("{creds:?} {:?}", AwsOptions { credentials: Some(creds.clone()), ..AwsOptions::default() });
        assert!(printed.contains("AKIDEXAMPLE") && !printed.contains("s3cr3t"), "{printed}");
    }

    #[tokio::test]
    async fn page_size_is_clamped_to_what_ec2_accepts() {
        let aws =
            AwsConfig { region: "us-east-1".into(), endpoint_url: Some("http://127.0.0.1:9".into()), profile: None };
        let small = AwsEc2::from_config_with(&aws, AwsOptions { page_size: 1, ..AwsOptions::default() }).await;
        assert_eq!(small.page_size, MIN_PAGE_SIZE);
        let large = AwsEc2::from_config_with(&aws, AwsOptions { page_size: 5000, ..AwsOptions::default() }).await;
        assert_eq!(large.page_size, MAX_PAGE_SIZE);
    }
}
