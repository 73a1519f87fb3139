//! Estate files: a TOML description of a world to seed the emulator with —
//! VPCs, Classic and VPC groups with rules and tags, instances with their
//! groups, states and links (format and example in `docs/estate.md`).
//!
//! Loading goes through the same rules as EC2 requests (names, descriptions,
//! ports, quotas, ClassicLink constraints), collects *every* problem with its
//! place (`group[3].rules[1].from_group: no group named "app" among Classic
//! groups`), and yields a world only when there is none: nothing is ever half
//! loaded. Indexes in places are 0-based, in file order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use tokio::time::Instant;

use crate::model::{
    Direction, Grant, GroupId, InstanceId, InstanceState, Peer, Ports, PrefixListId, Protocol, VpcId, canonical_ipv4,
    canonical_ipv6,
};

use super::state::{GroupSpec, RunSpec, VpcSpec, World};

/// A whole estate file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Estate {
    /// `[[vpc]]` entries.
    #[serde(default, rename = "vpc", skip_serializing_if = "Vec::is_empty")]
    pub vpcs: Vec<EstateVpc>,
    /// `[[group]]` entries.
    #[serde(default, rename = "group", skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<EstateGroup>,
    /// `[[instance]]` entries.
    #[serde(default, rename = "instance", skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<EstateInstance>,
    /// `[[prefix_list]]` entries: managed prefix lists (IPv4).
    #[serde(default, rename = "prefix_list", skip_serializing_if = "Vec::is_empty")]
    pub prefix_lists: Vec<EstatePrefixList>,
    /// `[[account]]` entries: other accounts, their access keys and roles
    /// (served by [`super::Cloud`]).
    #[serde(default, rename = "account", skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<EstateAccount>,
    /// `[[world]]` entries: the VPCs, groups and instances of an account in
    /// a region other than the home world (served by [`super::Cloud`]).
    #[serde(default, rename = "world", skip_serializing_if = "Vec::is_empty")]
    pub worlds: Vec<EstateWorld>,
}

/// A managed prefix list (IPv4), which rules name by `prefix_list`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstatePrefixList {
    /// `PrefixListName`, also how rules name it.
    pub name: String,
    /// `MaxEntries` (1–1000).
    pub max_entries: i64,
    /// IPv4 CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// An AWS-managed list of the world's region (`OwnerId` `AWS`, an id
    /// shared by every account of the region, read-only), beside the ones
    /// every region has; its name starts `com.amazonaws.`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub aws_managed: bool,
}

/// An account other than the default one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstateAccount {
    /// The account id, 12 digits.
    pub id: String,
    /// Long-term access keys whose requests act as this account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_keys: Vec<String>,
    /// `[[account.role]]`: roles that STS `AssumeRole` can be asked for.
    #[serde(default, rename = "role", skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<EstateRole>,
}

/// An IAM role of an estate account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstateRole {
    /// The role name (`arn:aws:iam::<account>:role/<name>`).
    pub name: String,
    /// Accounts the trust policy allows; empty: any account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_accounts: Vec<String>,
    /// The external id the trust policy requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Maximum session duration in seconds (3600–43200; default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_session_seconds: Option<u64>,
}

/// The world of one account in one region.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstateWorld {
    /// The account id; default: the default account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The region.
    pub region: String,
    /// `[[world.vpc]]`.
    #[serde(default, rename = "vpc", skip_serializing_if = "Vec::is_empty")]
    pub vpcs: Vec<EstateVpc>,
    /// `[[world.group]]`.
    #[serde(default, rename = "group", skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<EstateGroup>,
    /// `[[world.instance]]`.
    #[serde(default, rename = "instance", skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<EstateInstance>,
}

impl EstateWorld {
    /// The world as an estate of its own.
    #[must_use]
    pub fn estate(&self) -> Estate {
        Estate {
            vpcs: self.vpcs.clone(),
            groups: self.groups.clone(),
            instances: self.instances.clone(),
            ..Estate::default()
        }
    }
}

/// A VPC.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstateVpc {
    /// Estate-local name, used by groups and instances; also the `Name` tag.
    pub name: String,
    /// Fixed id; default: the next counter id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<VpcId>,
    /// IPv4 CIDR; default `10.0.0.0/16`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// Whether ClassicLink is enabled.
    #[serde(default)]
    pub classic_link: bool,
}

/// A security group: Classic unless `vpc` is set. A group named `default`
/// describes the network's existing default group (rules and tags only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstateGroup {
    /// Group name, unique in its network.
    pub name: String,
    /// Estate name (or id) of the VPC; absent for EC2-Classic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc: Option<String>,
    /// Fixed id; default: the next counter id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<GroupId>,
    /// Description; default: the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Ingress rules, one grant each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<EstateRule>,
    /// Egress rules (VPC groups only), one grant each; the peer fields name
    /// where traffic may go (`from_group` names the destination group).
    /// Absent: the group keeps EC2's default allow-all egress; present (even
    /// empty): these rules replace it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<EstateRule>>,
}

/// One ingress grant: a protocol, ports and exactly one source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstateRule {
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `-1`/`all`, or a number.
    #[serde(deserialize_with = "string_or_integer")]
    pub protocol: String,
    /// A single port (same as `from_port = to_port = port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// First port (ICMP type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_port: Option<i32>,
    /// Last port (ICMP code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_port: Option<i32>,
    /// Source: an IPv4 or IPv6 CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// Source: another estate group of the same network, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_group: Option<String>,
    /// Source: a group of another account, `"<owner>/<group id>"`
    /// (e.g. `amazon-elb/sg-843f59ed`, the Classic ELB group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreign_group: Option<String>,
    /// Source: a managed prefix list of the estate, by name (VPC groups only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_list: Option<String>,
    /// Rule description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One instance, or `count` alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstateInstance {
    /// Fixed id (only with `count = 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<InstanceId>,
    /// Estate name of the VPC; absent for an EC2-Classic instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc: Option<String>,
    /// Group names in the instance's network; empty means `default`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Lifecycle state; default `running`. A `pending` instance stays pending.
    #[serde(default = "running", skip_serializing_if = "is_running")]
    pub state: InstanceState,
    /// How many alike; default 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: usize,
    /// An existing ClassicLink link (running Classic instances only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<EstateLink>,
}

impl Default for EstateInstance {
    fn default() -> Self {
        Self { id: None, vpc: None, groups: Vec::new(), state: InstanceState::Running, count: 1, link: None }
    }
}

/// A ClassicLink link of an estate instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstateLink {
    /// Estate name of the VPC.
    pub vpc: String,
    /// Names of groups of that VPC (1–5).
    pub groups: Vec<String>,
}

fn running() -> InstanceState {
    InstanceState::Running
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_running(state: &InstanceState) -> bool {
    *state == InstanceState::Running
}

fn one() -> usize {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_one(n: &usize) -> bool {
    *n == 1
}

fn string_or_integer<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        S(String),
        N(i64),
    }
    Ok(match Text::deserialize(d)? {
        Text::S(s) => s,
        Text::N(n) => n.to_string(),
    })
}

/// Why an estate could not be read or loaded.
#[derive(Debug, thiserror::Error)]
pub enum EstateError {
    /// The file could not be read.
    #[error("cannot read estate file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for the estate format (unknown keys included).
    #[error("estate file is not valid: {0}")]
    Parse(#[source] Box<toml::de::Error>),
    /// A value is wrong; `path` names its place.
    #[error("{path}: {message}")]
    Invalid {
        /// Where, e.g. `group[3].rules[1].from_group`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl EstateError {
    /// Stable label for metrics and logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Parse(_) => "parse",
            Self::Invalid { .. } => "invalid",
        }
    }

    pub(crate) fn invalid(path: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::Invalid { path: path.into(), message: message.to_string() }
    }

    /// The error with its place inside `prefix` (`world[1].group[0]…`).
    pub(crate) fn within(self, prefix: &str) -> Self {
        match self {
            Self::Invalid { path, message } => Self::Invalid { path: format!("{prefix}.{path}"), message },
            other => other,
        }
    }
}

/// Every problem found while loading an estate, in file order.
#[derive(Debug, thiserror::Error)]
pub struct EstateErrors(pub Vec<EstateError>);

impl fmt::Display for EstateErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl Estate {
    /// Parses estate TOML; unknown keys are errors.
    ///
    /// # Errors
    /// [`EstateError::Parse`], which names the line and column.
    pub fn from_toml(text: &str) -> Result<Self, EstateError> {
        toml::from_str(text).map_err(|e| EstateError::Parse(Box::new(e)))
    }

    /// Reads and parses an estate file.
    ///
    /// # Errors
    /// [`EstateError::Read`] or [`EstateError::Parse`].
    pub fn read(path: &Path) -> Result<Self, EstateError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| EstateError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text)
    }

    /// The home world's part: the top-level VPCs, groups and instances.
    #[must_use]
    pub fn home(&self) -> Estate {
        Estate {
            vpcs: self.vpcs.clone(),
            groups: self.groups.clone(),
            instances: self.instances.clone(),
            ..Estate::default()
        }
    }

    /// The estate as TOML (e.g. to save a generated one).
    #[must_use]
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("estates serialise")
    }
}

/// Resolves estate VPC references (names, or ids of estate VPCs).
struct Vpcs(HashMap<String, VpcId>);

impl Vpcs {
    fn resolve(&self, reference: &str) -> Option<VpcId> {
        self.0.get(reference).cloned()
    }
}

fn network_name(vpc: Option<&str>) -> String {
    vpc.map_or_else(|| "among Classic groups".to_owned(), |v| format!("in VPC {v:?}"))
}

struct Loader<'w> {
    world: &'w mut World,
    now: Instant,
    errors: Vec<EstateError>,
    /// Groups that are declared but failed to load: references to them are
    /// not reported again.
    broken: HashSet<(Option<VpcId>, String)>,
}

impl Loader<'_> {
    fn fail(&mut self, path: impl Into<String>, message: impl fmt::Display) {
        self.errors.push(EstateError::invalid(path, message));
    }

    fn reserve_ids(&mut self, estate: &Estate) {
        let explicit = estate
            .vpcs
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.id.as_ref().map(|id| (format!("vpc[{i}].id"), id.to_string())))
            .chain(
                estate
                    .groups
                    .iter()
                    .enumerate()
                    .filter_map(|(i, g)| g.id.as_ref().map(|id| (format!("group[{i}].id"), id.to_string()))),
            )
            .chain(
                estate
                    .instances
                    .iter()
                    .enumerate()
                    .filter_map(|(i, g)| g.id.as_ref().map(|id| (format!("instance[{i}].id"), id.to_string()))),
            )
            .collect::<Vec<_>>();
        for (path, id) in explicit {
            if !self.world.reserve(&id) {
                self.fail(path, format_args!("id {id} is used twice"));
            }
        }
    }

    fn load_vpcs(&mut self, estate: &Estate) -> Vpcs {
        let mut vpcs = HashMap::new();
        for (i, vpc) in estate.vpcs.iter().enumerate() {
            if vpcs.contains_key(&vpc.name) {
                self.fail(format!("vpc[{i}].name"), format_args!("VPC name {:?} is used twice", vpc.name));
                continue;
            }
            let cidr = match vpc.cidr.as_deref().map(canonical_ipv4).transpose() {
                Ok(cidr) => cidr,
                Err(e) => {
                    self.fail(format!("vpc[{i}].cidr"), e);
                    continue;
                }
            };
            let spec = VpcSpec {
                id: vpc.id.clone(),
                cidr,
                classic_link: vpc.classic_link,
                tags: BTreeMap::from([("Name".to_owned(), vpc.name.clone())]),
            };
            match self.world.create_vpc(self.now, spec) {
                Ok(id) => {
                    vpcs.insert(id.to_string(), id.clone());
                    vpcs.insert(vpc.name.clone(), id);
                }
                Err(fail) => self.fail(format!("vpc[{i}]"), fail),
            }
        }
        Vpcs(vpcs)
    }

    fn resolve_vpc(&mut self, vpcs: &Vpcs, path: String, reference: Option<&str>) -> Result<Option<VpcId>, ()> {
        match reference {
            None => Ok(None),
            Some(name) => match vpcs.resolve(name) {
                Some(id) => Ok(Some(id)),
                None => {
                    self.fail(path, format_args!("no VPC named {name:?}"));
                    Err(())
                }
            },
        }
    }

    /// Creates every group (without rules), so rules can reference any of them.
    fn load_groups(&mut self, estate: &Estate, vpcs: &Vpcs) -> Vec<Option<GroupId>> {
        let mut ids = Vec::with_capacity(estate.groups.len());
        for (i, group) in estate.groups.iter().enumerate() {
            let Ok(vpc_id) = self.resolve_vpc(vpcs, format!("group[{i}].vpc"), group.vpc.as_deref()) else {
                ids.push(None);
                continue;
            };
            let id = if group.name == "default" {
                self.default_group(i, group, vpc_id.as_ref())
            } else {
                let spec = GroupSpec {
                    id: group.id.clone(),
                    vpc_id: vpc_id.clone(),
                    name: group.name.clone(),
                    description: group.description.clone().unwrap_or_else(|| group.name.clone()),
                    tags: group.tags.clone(),
                };
                match self.world.create_group(self.now, spec) {
                    Ok(id) => Some(id),
                    Err(fail) => {
                        self.fail(format!("group[{i}]"), fail);
                        None
                    }
                }
            };
            if id.is_none() {
                self.broken.insert((vpc_id, group.name.clone()));
            }
            ids.push(id);
        }
        ids
    }

    fn default_group(&mut self, i: usize, group: &EstateGroup, vpc_id: Option<&VpcId>) -> Option<GroupId> {
        if group.id.is_some() || group.description.is_some() {
            self.fail(format!("group[{i}]"), "the default group exists already: give only its rules and tags");
            return None;
        }
        let id = match vpc_id {
            Some(vpc) => self.world.vpc(vpc).ok()?.default_group.clone(),
            None => self.world.classic_default().clone(),
        };
        if !group.tags.is_empty()
            && let Err(fail) = self.world.create_tags(self.now, std::slice::from_ref(&id), &group.tags)
        {
            self.fail(format!("group[{i}].tags"), fail);
        }
        Some(id)
    }

    fn group_in(
        &mut self,
        path: String,
        vpc_id: Option<&VpcId>,
        vpc_name: Option<&str>,
        name: &str,
    ) -> Option<GroupId> {
        if let Some(id) = self.world.group_id_by_name(vpc_id, name) {
            return Some(id.clone());
        }
        if !self.broken.contains(&(vpc_id.cloned(), name.to_owned())) {
            self.fail(path, format_args!("no group named {name:?} {}", network_name(vpc_name)));
        }
        None
    }

    fn rule_grant(
        &mut self,
        path: &str,
        rule: &EstateRule,
        vpc_id: Option<&VpcId>,
        vpc_name: Option<&str>,
    ) -> Option<Grant> {
        let protocol = match Protocol::parse(&rule.protocol) {
            Ok(p) => p,
            Err(e) => {
                self.fail(format!("{path}.protocol"), e);
                return None;
            }
        };
        if rule.port.is_some() && (rule.from_port.is_some() || rule.to_port.is_some()) {
            self.fail(format!("{path}.port"), "give either port or from_port/to_port, not both");
            return None;
        }
        let ports = match Ports::canonical(protocol, rule.port.or(rule.from_port), rule.port.or(rule.to_port)) {
            Ok(p) => p,
            Err(e) => {
                self.fail(path.to_owned(), e);
                return None;
            }
        };
        let sources = [&rule.cidr, &rule.from_group, &rule.foreign_group, &rule.prefix_list];
        if sources.iter().filter(|s| s.is_some()).count() != 1 {
            self.fail(path.to_owned(), "a rule needs exactly one of cidr, from_group, foreign_group, prefix_list");
            return None;
        }
        let peer = if let Some(cidr) = &rule.cidr {
            let parsed = if cidr.contains(':') {
                canonical_ipv6(cidr).map(Peer::Ipv6)
            } else {
                canonical_ipv4(cidr).map(Peer::Ipv4)
            };
            match parsed {
                Ok(peer) => peer,
                Err(e) => {
                    self.fail(format!("{path}.cidr"), e);
                    return None;
                }
            }
        } else if let Some(name) = &rule.from_group {
            let group = self.group_in(format!("{path}.from_group"), vpc_id, vpc_name, name)?;
            Peer::Group { group, owner: None }
        } else if let Some(foreign) = &rule.foreign_group {
            let parsed = foreign
                .split_once('/')
                .filter(|(owner, _)| !owner.is_empty())
                .and_then(|(owner, id)| GroupId::try_new(id).ok().map(|id| (owner.to_owned(), id)));
            match parsed {
                Some((owner, group)) => Peer::Group { group, owner: Some(owner) },
                None => {
                    self.fail(
                        format!("{path}.foreign_group"),
                        format_args!("{foreign:?} is not \"<owner>/<group id>\""),
                    );
                    return None;
                }
            }
        } else {
            let list = rule.prefix_list.as_deref().unwrap_or_default();
            let named = self.world.prefix_lists.values().find(|l| l.name == list).map(|l| l.id.clone());
            match named.map_or_else(|| PrefixListId::try_new(list), Ok) {
                Ok(id) => Peer::PrefixList(id),
                Err(_) => {
                    self.fail(format!("{path}.prefix_list"), format_args!("no prefix list named {list:?}"));
                    return None;
                }
            }
        };
        Some(Grant::new(protocol, ports, peer, rule.description.clone()))
    }

    fn load_prefix_lists(&mut self, estate: &Estate) {
        for (i, list) in estate.prefix_lists.iter().enumerate() {
            let spec = super::prefix_lists::CreateSpec {
                name: Some(list.name.clone()),
                address_family: Some("IPv4".to_owned()),
                max_entries: Some(list.max_entries),
                entries: list.entries.iter().map(|c| (c.clone(), None)).collect(),
                tags: list.tags.clone(),
                client_token: None,
            };
            if self.world.prefix_lists.values().any(|l| l.name == list.name) {
                self.fail(format!("prefix_list[{i}].name"), format_args!("{:?} is used twice", list.name));
            } else if list.aws_managed {
                if let Err(why) = self.world.add_aws_prefix_list(&list.name, &list.entries, list.max_entries, self.now)
                {
                    self.fail(format!("prefix_list[{i}]"), why);
                }
            } else if let Err(fail) = self.world.create_prefix_list(self.now, spec) {
                self.fail(format!("prefix_list[{i}]"), fail);
            }
        }
    }

    fn load_rules(&mut self, estate: &Estate, ids: &[Option<GroupId>]) {
        for (i, (group, id)) in estate.groups.iter().zip(ids).enumerate() {
            let Some(id) = id else { continue };
            let vpc_id = self.world.groups.get(id).and_then(|g| g.vpc_id.clone());
            for (j, rule) in group.rules.iter().enumerate() {
                let path = format!("group[{i}].rules[{j}]");
                let Some(grant) = self.rule_grant(&path, rule, vpc_id.as_ref(), group.vpc.as_deref()) else {
                    continue;
                };
                if let Err(fail) = self.world.authorize(self.now, id, std::slice::from_ref(&grant)) {
                    self.fail(path, fail);
                }
            }
            let Some(egress) = &group.egress else { continue };
            if vpc_id.is_none() {
                self.fail(format!("group[{i}].egress"), "an EC2-Classic group has no egress rules");
                continue;
            }
            if let Some(rec) = self.world.groups.get_mut(id) {
                rec.egress.clear();
            }
            for (j, rule) in egress.iter().enumerate() {
                let path = format!("group[{i}].egress[{j}]");
                let Some(grant) = self.rule_grant(&path, rule, vpc_id.as_ref(), group.vpc.as_deref()) else {
                    continue;
                };
                let grants = std::slice::from_ref(&grant);
                if let Err(fail) = self.world.authorize_rules(self.now, Direction::Egress, id, grants) {
                    self.fail(path, fail);
                }
            }
        }
    }

    fn load_instances(&mut self, estate: &Estate, vpcs: &Vpcs) {
        for (i, instance) in estate.instances.iter().enumerate() {
            let Ok(vpc_id) = self.resolve_vpc(vpcs, format!("instance[{i}].vpc"), instance.vpc.as_deref()) else {
                continue;
            };
            let mut groups = Vec::with_capacity(instance.groups.len());
            for (k, name) in instance.groups.iter().enumerate() {
                groups.push(self.group_in(
                    format!("instance[{i}].groups[{k}]"),
                    vpc_id.as_ref(),
                    instance.vpc.as_deref(),
                    name,
                ));
            }
            let Some(groups) = groups.into_iter().collect::<Option<Vec<_>>>() else { continue };
            let spec = RunSpec {
                id: instance.id.clone(),
                vpc_id,
                groups,
                count: instance.count,
                state: instance.state,
                running_at: None,
            };
            let ids = match self.world.run_instances(self.now, spec) {
                Ok(ids) => ids,
                Err(fail) => {
                    self.fail(format!("instance[{i}]"), fail);
                    continue;
                }
            };
            if let Some(link) = &instance.link {
                self.load_link(i, link, vpcs, &ids);
            }
        }
    }

    fn load_link(&mut self, i: usize, link: &EstateLink, vpcs: &Vpcs, ids: &[InstanceId]) {
        let Ok(Some(vpc_id)) = self.resolve_vpc(vpcs, format!("instance[{i}].link.vpc"), Some(&link.vpc)) else {
            return;
        };
        let mut groups = Vec::with_capacity(link.groups.len());
        for (k, name) in link.groups.iter().enumerate() {
            groups.push(self.group_in(format!("instance[{i}].link.groups[{k}]"), Some(&vpc_id), Some(&link.vpc), name));
        }
        let Some(groups) = groups.into_iter().collect::<Option<Vec<_>>>() else { return };
        for id in ids {
            if let Err(fail) = self.world.attach(self.now, id, &vpc_id, &groups) {
                self.fail(format!("instance[{i}].link"), fail);
                return;
            }
        }
    }
}

/// Loads `estate` into a fresh `world`. On error the world is half built and
/// must be dropped; [`super::Emulator::from_estate`] does.
pub(crate) fn load(world: &mut World, estate: &Estate, now: Instant) -> Result<(), EstateErrors> {
    let mut loader = Loader { world, now, errors: Vec::new(), broken: HashSet::new() };
    loader.reserve_ids(estate);
    let vpcs = loader.load_vpcs(estate);
    let ids = loader.load_groups(estate, &vpcs);
    loader.load_prefix_lists(estate);
    loader.load_rules(estate, &ids);
    loader.load_instances(estate, &vpcs);
    if loader.errors.is_empty() { Ok(()) } else { Err(EstateErrors(loader.errors)) }
}
