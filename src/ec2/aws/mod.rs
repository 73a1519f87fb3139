//! The `aws-sdk-ec2` adapter of the [`Ec2`] port: how observe and execute
//! reach real EC2 (or any EC2-compatible endpoint, such as our emulator).
//!
//! This directory is the only place that imports `aws_sdk_ec2`, `aws_config` or
//! `aws_smithy_*`. It turns domain values into SDK requests and SDK shapes
//! back into domain values, one request per port call (a describe page is a
//! request with its `NextToken`; the pager above walks the pages), and
//! classifies every failure by EC2 error *code* into an [`Ec2Error`]. It adds
//! no policy: throttling, backoff and retries belong to
//! [`super::limited::Limited`], semantic retries to the executor.
//!
//! - `mod.rs` (here): client set-up ([`AwsEc2::from_config`]) and the port's
//!   methods, one SDK request each;
//! - [`convert`]: SDK shapes ↔ domain values (grants, groups, instances, filters);
//! - [`classify`]: SDK failures → [`Ec2Error`] by EC2 error code;
//! - [`sqs`]: the `aws-sdk-sqs` adapter of the event source port
//!   ([`crate::events::EventSource`]), on the same SDK set-up;
//! - [`world`]: world-building calls (create a VPC, run instances …) for the
//!   demo and the tests; not part of the port.

mod classify;
mod convert;
mod sqs;
mod world;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{AppName, Credentials, Region};
use aws_sdk_ec2::types as sdk;

use self::classify::{check_return, classify, parse_id};
use self::convert::{
    Descriptions, filter, group_filters, id_strings, instance_filters, instance_from_sdk, interface_filters,
    interface_from_sdk, link_filters, link_from_sdk, permissions_from_grants, prefix_list_entries_to_sdk,
    prefix_list_entry_from_sdk, prefix_list_filters, prefix_list_from_sdk, security_group_from_sdk, tags_to_sdk,
    vpc_from_sdk,
};
pub use self::sqs::AwsEventSource;
pub use self::world::AwsWorld;
use super::accounts::{AccountPort, SourceAccounts};
use super::{
    CreateGroup, CreatePrefixList, Ec2, Ec2Error, GroupFilter, InstanceFilter, InterfaceFilter, LinkFilter,
    ModifyPrefixList, Operation, Page, PrefixListFilter,
};
use crate::config::{AWS_ACCOUNT, AccountConfig, AwsConfig, Config, RateLimitConfig, SourceRef};
use crate::events::OWN_APP_NAME;
use crate::model::{
    Grant, GroupId, Instance, InstanceId, Link, NetworkInterface, PrefixList, PrefixListEntry, PrefixListId,
    SecurityGroup, Vpc, VpcId,
};

/// The largest `MaxResults` of `DescribeManagedPrefixLists` and
/// `GetManagedPrefixListEntries`.
const PREFIX_LIST_PAGE_SIZE: i32 = 100;

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
    /// The app name in every request's `User-Agent`: [`OWN_APP_NAME`] for
    /// the daemon, whose events are then recognised as its own echo;
    /// another name for a client that plays someone else (`demo`'s script).
    pub app_name: String,
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
            app_name: OWN_APP_NAME.to_owned(),
        }
    }
}

/// The shared SDK configuration of the daemon's AWS clients (EC2 and SQS):
/// `aws`'s region, endpoint and profile, the standard credential chain
/// unless `options` has static credentials, SDK retries off, the timeouts
/// of `options`, and the app name of `options` in every `User-Agent` —
/// [`OWN_APP_NAME`] by default, which CloudTrail records, so the event path
/// recognises the daemon's own writes (an invalid app name is left out).
pub(crate) async fn sdk_config(aws: &AwsConfig, options: &AwsOptions) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(aws.region.clone()))
        // One layer owns retries: `ec2::limited::Limited` retries
        // throttling and 5xx with capped, jittered backoff and slows its
        // token buckets down (AIMD). SDK retries underneath would multiply
        // the attempts (3 × 3), hide throttling from the AIMD pacer, and
        // spend EC2's request budget behind our rate limiter's back. (The
        // event source's loop retries its own requests the same way.)
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
    // Ours is a valid app name (a unit test checks it); another invalid
    // one is left out.
    if let Ok(app_name) = AppName::new(options.app_name.clone()) {
        loader = loader.app_name(app_name);
    }
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
    loader.load().await
}

/// The port of one target's part of a configuration
/// ([`Config::for_target`]: every mirror targets one account): the client of
/// that account (`[aws]`, or the `[accounts.NAME]` of `target_account`); when the
/// mirrors name accounts, a [`SourceAccounts`] over it and one client per
/// other account holding sources, every error message naming its account.
/// `limit` wraps each client (its own token buckets and retry quota:
/// [`super::limited::Limited`]), given the name of its account (`aws` for
/// `[aws]`). Every call makes new clients: for the target loops of one
/// daemon, [`connect_shared`].
pub async fn connect(
    config: &Config,
    options: &AwsOptions,
    limit: &(dyn Fn(&str, AwsEc2) -> Arc<dyn Ec2> + Send + Sync),
) -> Arc<dyn Ec2> {
    assemble(config, |name| async move {
        let account = name.and_then(|n| config.accounts.get(n));
        limit(name.unwrap_or(AWS_ACCOUNT), AwsEc2::for_account(&config.aws, account, options.clone()).await)
    })
    .await
}

/// [`connect`] drawing each account's limited client from `clients`: the
/// target loops of one daemon that reach one account (as target or as
/// source) share its client, so its token buckets and retry quota are the
/// account's, not N times them. A client is made again when the account's
/// settings (`[aws]`, its `[accounts.NAME]`, `[rate_limit]`) differ from
/// those it was made with (a reload); a loop still holding the old one
/// keeps it until it connects again. `options` and `limit` are the same
/// at every call on one `clients`.
pub async fn connect_shared(
    config: &Config,
    options: &AwsOptions,
    clients: &SharedClients,
    limit: &(dyn Fn(&str, AwsEc2) -> Arc<dyn Ec2> + Send + Sync),
) -> Arc<dyn Ec2> {
    assemble(config, |name| clients.client(config, options, name, limit)).await
}

/// The port of [`connect`] over `client`, which gives the limited client
/// of an account by name (`None`: `[aws]`).
async fn assemble<'c, F, Fut>(config: &'c Config, mut client: F) -> Arc<dyn Ec2>
where
    F: FnMut(Option<&'c str>) -> Fut,
    Fut: Future<Output = Arc<dyn Ec2>>,
{
    let target_name = config.target_account();
    let label = |name: Option<&str>| name.unwrap_or(AWS_ACCOUNT).to_owned();
    let target = client(target_name).await;
    if !config.uses_accounts() {
        return target;
    }
    let mut by_account: BTreeMap<Option<&str>, BTreeSet<GroupId>> = BTreeMap::new();
    for mirror in &config.mirrors {
        if let (SourceRef::Id(id), true) = (&mirror.source, mirror.source_account.as_deref() != target_name) {
            by_account.entry(mirror.source_account.as_deref()).or_default().insert(id.clone());
        }
    }
    let mut sources = Vec::with_capacity(by_account.len());
    for (name, ids) in by_account {
        let port = client(name).await;
        sources.push((ids, AccountPort::new(label(name), port)));
    }
    Arc::new(SourceAccounts::new(AccountPort::new(label(target_name), target), sources))
}

/// The limited EC2 clients of one daemon, one per account name (`aws` for
/// `[aws]`; each name is one account in one region), shared by its target
/// loops through [`connect_shared`]: EC2's request budget is the
/// account's, whichever loops spend it.
#[derive(Default)]
pub struct SharedClients {
    /// Held while a client is looked up or made: two loops asking for one
    /// account at once get one client.
    making: tokio::sync::Mutex<()>,
    clients: parking_lot::Mutex<BTreeMap<String, SharedClient>>,
}

/// One account's client and the settings it was made with.
struct SharedClient {
    settings: ClientSettings,
    client: Arc<dyn Ec2>,
}

/// What an account's client is made from.
#[derive(PartialEq)]
struct ClientSettings {
    aws: AwsConfig,
    account: Option<AccountConfig>,
    rate_limit: RateLimitConfig,
}

impl SharedClients {
    /// The limited client of the account `name` (`None`: `[aws]`) as
    /// `config` sets it: the one made before with the same settings, else a
    /// new one (kept for the next caller).
    async fn client(
        &self,
        config: &Config,
        options: &AwsOptions,
        name: Option<&str>,
        limit: &(dyn Fn(&str, AwsEc2) -> Arc<dyn Ec2> + Send + Sync),
    ) -> Arc<dyn Ec2> {
        let label = name.unwrap_or(AWS_ACCOUNT);
        let settings = ClientSettings {
            aws: config.aws.clone(),
            account: name.and_then(|n| config.accounts.get(n)).cloned(),
            rate_limit: config.rate_limit.clone(),
        };
        let _making = self.making.lock().await;
        let made_before = {
            let clients = self.clients.lock();
            clients.get(label).filter(|shared| shared.settings == settings).map(|shared| Arc::clone(&shared.client))
        };
        if let Some(client) = made_before {
            return client;
        }
        let made = AwsEc2::for_account(&config.aws, settings.account.as_ref(), options.clone()).await;
        let client = limit(label, made);
        self.clients.lock().insert(label.to_owned(), SharedClient { settings, client: Arc::clone(&client) });
        client
    }

    /// Forgets the clients of accounts a reloaded configuration no longer
    /// uses ([`Config::client_accounts`]); the loops still holding one keep
    /// it until they connect again. Named again later, an account gets a
    /// new client.
    pub fn retain(&self, accounts: &BTreeSet<String>) {
        self.clients.lock().retain(|name, _| accounts.contains(name));
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
        let sdk_config = sdk_config(aws, &options).await;
        Self { client: Client::new(&sdk_config), page_size: options.page_size.clamp(MIN_PAGE_SIZE, MAX_PAGE_SIZE) }
    }

    /// A client for one account: `[aws]` itself when `account` is `None`;
    /// else the account's region, its `endpoint_url` (else `[aws]`'s) for
    /// EC2 and STS, and, with a `role_arn`, credentials from STS
    /// `AssumeRole` through `aws-config`'s `AssumeRoleProvider` — the base
    /// credentials are `[aws]`'s (the standard chain or `options`'), and
    /// the SDK's identity cache assumes the role again before the
    /// credentials expire. Without `role_arn`, the standard chain. Nothing
    /// is contacted until the first call: a role that cannot be assumed
    /// surfaces as a fatal `CredentialsUnavailable` [`Ec2Error`] on each
    /// request until it can.
    pub async fn for_account(aws: &AwsConfig, account: Option<&AccountConfig>, options: AwsOptions) -> Self {
        let Some(account) = account else { return Self::from_config_with(aws, options).await };
        let base = AwsConfig {
            region: account.region.clone(),
            endpoint_url: account.endpoint_url.clone().or_else(|| aws.endpoint_url.clone()),
            profile: aws.profile.clone(),
        };
        let sdk_config = sdk_config(&base, &options).await;
        let page_size = options.page_size.clamp(MIN_PAGE_SIZE, MAX_PAGE_SIZE);
        let Some(role_arn) = &account.role_arn else {
            return Self { client: Client::new(&sdk_config), page_size };
        };
        let mut role = aws_config::sts::AssumeRoleProvider::builder(role_arn.clone())
            .session_name(account.session_name.clone())
            .region(Region::new(account.region.clone()))
            .configure(&sdk_config);
        if let Some(external_id) = &account.external_id {
            role = role.external_id(external_id.clone());
        }
        let provider = role.build().await;
        let conf = aws_sdk_ec2::config::Builder::from(&sdk_config).credentials_provider(provider).build();
        Self { client: Client::from_conf(conf), page_size }
    }

    /// World-building calls (create a VPC, run instances …) on the same
    /// client, for the demo and the tests: not part of the port.
    #[must_use]
    pub fn world(&self) -> AwsWorld {
        AwsWorld::new(self.client.clone())
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

    async fn prefix_lists_page(
        &self,
        filter: &PrefixListFilter,
        next_token: Option<String>,
    ) -> Result<Page<PrefixList>, Ec2Error> {
        let op = Operation::DescribeManagedPrefixLists;
        let out = self
            .client
            .describe_managed_prefix_lists()
            .set_filters(Some(prefix_list_filters(filter)).filter(|f| !f.is_empty()))
            .max_results(self.page_size.min(PREFIX_LIST_PAGE_SIZE))
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        let items =
            out.prefix_lists().iter().map(prefix_list_from_sdk).collect::<Result<_, _>>().map_err(|m| m.error(op))?;
        Ok(Page { items, next_token: out.next_token().map(str::to_owned) })
    }

    async fn prefix_list_entries_page(
        &self,
        id: &PrefixListId,
        next_token: Option<String>,
    ) -> Result<Page<PrefixListEntry>, Ec2Error> {
        let op = Operation::GetManagedPrefixListEntries;
        let out = self
            .client
            .get_managed_prefix_list_entries()
            .prefix_list_id(id.as_str())
            .max_results(self.page_size.min(PREFIX_LIST_PAGE_SIZE))
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        let items =
            out.entries().iter().map(prefix_list_entry_from_sdk).collect::<Result<_, _>>().map_err(|m| m.error(op))?;
        Ok(Page { items, next_token: out.next_token().map(str::to_owned) })
    }

    async fn network_interfaces_page(
        &self,
        filter: &InterfaceFilter,
        next_token: Option<String>,
    ) -> Result<Page<NetworkInterface>, Ec2Error> {
        let op = Operation::DescribeNetworkInterfaces;
        let out = self
            .client
            .describe_network_interfaces()
            .set_filters(Some(interface_filters(filter)).filter(|f| !f.is_empty()))
            .max_results(self.page_size)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        let items = out
            .network_interfaces()
            .iter()
            .map(interface_from_sdk)
            .collect::<Result<_, _>>()
            .map_err(|m| m.error(op))?;
        Ok(Page { items, next_token: out.next_token().map(str::to_owned) })
    }

    async fn create_prefix_list(&self, request: &CreatePrefixList) -> Result<PrefixList, Ec2Error> {
        let op = Operation::CreateManagedPrefixList;
        let mut call = self
            .client
            .create_managed_prefix_list()
            .prefix_list_name(&request.name)
            .address_family(&request.address_family)
            .max_entries(i32::try_from(request.max_entries).unwrap_or(i32::MAX))
            .set_entries(Some(prefix_list_entries_to_sdk(&request.entries)).filter(|e| !e.is_empty()))
            .set_client_token(request.client_token.clone());
        if !request.tags.is_empty() {
            // Tags in the create call itself: a list the daemon makes is
            // never without its ownership tag.
            call = call.tag_specifications(
                sdk::TagSpecification::builder()
                    .resource_type(sdk::ResourceType::PrefixList)
                    .set_tags(Some(tags_to_sdk(&request.tags)))
                    .build(),
            );
        }
        let out = call.send().await.map_err(|e| classify(op, e))?;
        let list = out.prefix_list().ok_or_else(|| {
            Ec2Error::new(op, super::MALFORMED_RESPONSE, "malformed response: no PrefixList in the answer")
        })?;
        prefix_list_from_sdk(list).map_err(|m| m.error(op))
    }

    async fn modify_prefix_list(&self, request: &ModifyPrefixList) -> Result<PrefixList, Ec2Error> {
        let op = Operation::ModifyManagedPrefixList;
        let remove: Vec<_> = request
            .remove
            .iter()
            .map(|cidr| sdk::RemovePrefixListEntry::builder().cidr(cidr.to_string()).build())
            .collect();
        let out = self
            .client
            .modify_managed_prefix_list()
            .prefix_list_id(request.id.as_str())
            .current_version(i64::try_from(request.current_version).unwrap_or(i64::MAX))
            .set_add_entries(Some(prefix_list_entries_to_sdk(&request.add)).filter(|e| !e.is_empty()))
            .set_remove_entries(Some(remove).filter(|e| !e.is_empty()))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        let list = out.prefix_list().ok_or_else(|| {
            Ec2Error::new(op, super::MALFORMED_RESPONSE, "malformed response: no PrefixList in the answer")
        })?;
        prefix_list_from_sdk(list).map_err(|m| m.error(op))
    }

    async fn delete_prefix_list(&self, id: &PrefixListId) -> Result<(), Ec2Error> {
        let op = Operation::DeleteManagedPrefixList;
        self.client
            .delete_managed_prefix_list()
            .prefix_list_id(id.as_str())
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        Ok(())
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
            // without its ownership tag (docs/architecture.md, "Mirrors").
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
            // The description is not part of a rule's identity (docs/architecture.md, "Grants").
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

    async fn authorize_egress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        if grants.is_empty() {
            return Ok(());
        }
        let op = Operation::AuthorizeSecurityGroupEgress;
        let out = self
            .client
            .authorize_security_group_egress()
            .group_id(group_id.as_str())
            .set_ip_permissions(Some(permissions_from_grants(grants, Descriptions::Include)))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        check_return(op, out.r#return())
    }

    async fn revoke_egress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        if grants.is_empty() {
            return Ok(());
        }
        let op = Operation::RevokeSecurityGroupEgress;
        let out = self
            .client
            .revoke_security_group_egress()
            .group_id(group_id.as_str())
            // As for ingress: the description is not part of a rule's identity.
            .set_ip_permissions(Some(permissions_from_grants(grants, Descriptions::Omit)))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        if !out.unknown_ip_permissions().is_empty() {
            tracing::debug!(group_id = %group_id, unknown = out.unknown_ip_permissions().len(),
                "egress revoke named rules the group does not have");
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

#[cfg(test)]
mod tests {
    use super::*;

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
