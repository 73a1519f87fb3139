//! # Several accounts and regions, and STS, in one emulator
//!
//! A [`Cloud`] is the set of EC2 worlds one emulator server answers for: one
//! [`Emulator`] per (account, region), each with its own groups, VPCs,
//! instances, id counters, token buckets and counters — as EC2 keeps each
//! account's region apart and meters it on its own (docs/emulator.md,
//! "Accounts and regions").
//!
//! - The **account** of a request is the one its access key belongs to:
//!   long-term keys are mapped to accounts ([`Cloud::add_access_key`], an
//!   estate's `[[account]] access_keys`); temporary keys are the ones
//!   [`Cloud::assume_role`] issued, and act as the role's account; any other
//!   key acts as the default account (the home world's), so a client with
//!   made-up credentials sees the home world, as before accounts existed.
//! - The **region** is the one of the request's SigV4 credential scope;
//!   unsigned requests are in [`HOME_REGION`].
//! - The home world is the default account in [`HOME_REGION`] — and in
//!   every region that has no world of its own, so that a client of the
//!   default account sees one world whatever region it signs for, as
//!   before accounts existed. Any other account's (account, region) is
//!   created empty when first asked for; an estate's `[[world]]` seeds one
//!   (for the default account too, which then has that region apart). Each
//!   world has its own id seed so that ids never collide across worlds, as
//!   they do not in AWS.
//! - **STS**: roles ([`Role`]) live in accounts; `AssumeRole` checks the
//!   role exists and is not revoked, that the caller's account is trusted and
//!   the `ExternalId` matches when the role asks for one, and issues
//!   credentials valid for `DurationSeconds`. A revoked role also refuses
//!   the EC2 requests of the sessions issued before (`UnauthorizedOperation`),
//!   as AWS's "revoke active sessions" does; an expired session's requests
//!   are refused `ExpiredToken`.
//! - A region can be taken down ([`Cloud::set_region_down`]): every EC2
//!   request to it is answered `Unavailable` (HTTP 503).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use super::estate::{Estate, EstateError, EstateErrors};
use super::{Emulator, EmulatorOptions, codes};
use crate::model::GroupId;

/// The region of the home world and of unsigned requests.
pub const HOME_REGION: &str = "us-east-1";

/// Prefix of the temporary access keys `AssumeRole` issues (AWS's own prefix
/// of temporary keys is `ASIA`).
pub const SESSION_KEY_PREFIX: &str = "ASIAEMU";

/// Shortest session `AssumeRole` grants (STS's minimum, 15 minutes).
pub const MIN_SESSION: Duration = Duration::from_secs(900);

/// The default session of `AssumeRole` without `DurationSeconds` (1 hour).
pub const DEFAULT_SESSION: Duration = Duration::from_secs(3600);

/// The longest `max_session` a role may have (STS's 12 hours).
pub const MAX_SESSION: Duration = Duration::from_secs(43_200);

/// An IAM role that `AssumeRole` can be asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    /// The account the role lives in (12 digits).
    pub account_id: String,
    /// The role's name (the part of the ARN after `role/`).
    pub name: String,
    /// Accounts whose principals the trust policy allows; empty: any account.
    pub trusted_accounts: BTreeSet<String>,
    /// The `sts:ExternalId` the trust policy requires, if any.
    pub external_id: Option<String>,
    /// The role's maximum session duration (`DurationSeconds` above it is refused).
    pub max_session: Duration,
}

impl Role {
    /// A role any account may assume, without an external id, with a
    /// one-hour maximum session.
    #[must_use]
    pub fn new(account_id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            account_id: account_id.into(),
            name: name.into(),
            trusted_accounts: BTreeSet::new(),
            external_id: None,
            max_session: DEFAULT_SESSION,
        }
    }

    /// `arn:aws:iam::<account>:role/<name>`.
    #[must_use]
    pub fn arn(&self) -> String {
        format!("arn:aws:iam::{}:role/{}", self.account_id, self.name)
    }
}

/// Temporary credentials issued by `AssumeRole`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionCredentials {
    /// `AccessKeyId` (`ASIAEMU…`).
    pub access_key_id: String,
    /// `SecretAccessKey` (the emulator checks no signature).
    pub secret_access_key: String,
    /// `SessionToken`.
    pub session_token: String,
    /// `Expiration`.
    pub expiration: SystemTime,
    /// `AssumedRoleUser.Arn`: `arn:aws:sts::<account>:assumed-role/<role>/<session>`.
    pub assumed_role_arn: String,
    /// `AssumedRoleUser.AssumedRoleId`: `AROA…:<session>`.
    pub assumed_role_id: String,
}

/// What `AssumeRole` is asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssumeRoleRequest {
    /// `RoleArn`.
    pub role_arn: String,
    /// `RoleSessionName`.
    pub session_name: String,
    /// `DurationSeconds`.
    pub duration_seconds: Option<u64>,
    /// `ExternalId`.
    pub external_id: Option<String>,
}

/// A refusal of STS or of the cloud in front of EC2: an AWS error code and
/// its message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CloudRefusal {
    /// The AWS error code ([`codes::ACCESS_DENIED`], …).
    pub code: &'static str,
    /// The message.
    pub message: String,
}

impl CloudRefusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// Stable label.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        self.code
    }
}

/// Who a request's access key is: its account, and the ARN
/// `GetCallerIdentity` answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The account.
    pub account_id: String,
    /// `arn:aws:iam::<account>:user/emulator` for a long-term key, the
    /// assumed-role ARN for a session.
    pub arn: String,
    /// `UserId`.
    pub user_id: String,
}

#[derive(Debug)]
struct Session {
    role_arn: String,
    identity: Identity,
    expiration: SystemTime,
}

#[derive(Debug)]
struct State {
    default_account: String,
    options: EmulatorOptions,
    worlds: BTreeMap<(String, String), Emulator>,
    access_keys: BTreeMap<String, String>,
    roles: BTreeMap<String, Role>,
    revoked: BTreeSet<String>,
    regions_down: BTreeSet<String>,
    sessions: BTreeMap<String, Session>,
    next_seed: u32,
    issued: u64,
}

impl State {
    fn fresh_seed(&mut self) -> u32 {
        let seed = self.next_seed;
        self.next_seed = self.next_seed.wrapping_add(1).max(1);
        seed
    }
}

/// The worlds of one emulator server, with STS. Cloning is cheap; every
/// clone sees the same worlds.
#[derive(Clone, Debug)]
pub struct Cloud {
    state: Arc<Mutex<State>>,
}

/// Reads the account out of a role ARN (`arn:aws:iam::<account>:role/<name>`).
fn role_account(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_partition), Some("iam"), Some(""), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let name = resource.strip_prefix("role/")?.rsplit('/').next()?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty()).then_some((account, name))
}

/// Whether `name` is a valid `RoleSessionName`: 2–64 of `\w+=,.@-`.
fn valid_session_name(name: &str) -> bool {
    (2..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
}

/// Whether `id` is an account id: 12 digits.
#[must_use]
pub fn is_account_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

impl Cloud {
    /// A cloud whose home world is `home` (the default account, in
    /// [`HOME_REGION`]); other worlds are created with `home`'s limits and
    /// no faults when first asked for.
    #[must_use]
    pub fn new(home: Emulator) -> Self {
        let default_account = home.account_id();
        let options = EmulatorOptions { account_id: default_account.clone(), ..home.options() };
        let next_seed = options.id_seed.wrapping_add(1).max(1);
        let mut worlds = BTreeMap::new();
        worlds.insert((default_account.clone(), HOME_REGION.to_owned()), home);
        let state = State {
            default_account,
            options,
            worlds,
            access_keys: BTreeMap::new(),
            roles: BTreeMap::new(),
            revoked: BTreeSet::new(),
            regions_down: BTreeSet::new(),
            sessions: BTreeMap::new(),
            next_seed,
            issued: 0,
        };
        Self { state: Arc::new(Mutex::new(state)) }
    }

    /// A cloud seeded from an estate: its top-level VPCs, groups and
    /// instances are the home world, its `[[account]]`s the access keys and
    /// roles, its `[[world]]`s the other worlds. Nothing is loaded unless
    /// all of it is valid.
    ///
    /// # Errors
    /// Every problem, each with its place (`world[1].group[0].vpc: …`).
    pub fn from_estate(estate: &Estate, options: EmulatorOptions) -> Result<Self, EstateErrors> {
        let mut errors = Vec::new();
        let home = Emulator::from_estate(&estate.home(), options.clone());
        let home = match home {
            Ok(home) => Some(home),
            Err(EstateErrors(found)) => {
                errors.extend(found);
                None
            }
        };
        let default_account = options.account_id.clone();
        let mut known: BTreeSet<String> = BTreeSet::from([default_account.clone()]);
        let mut keys: BTreeMap<String, String> = BTreeMap::new();
        let mut roles = Vec::new();
        for (i, account) in estate.accounts.iter().enumerate() {
            let at = |key: &str| format!("account[{i}].{key}");
            if !is_account_id(&account.id) {
                errors
                    .push(EstateError::invalid(at("id"), format!("{:?} is not an account id (12 digits)", account.id)));
                continue;
            }
            if account.id != default_account && !known.insert(account.id.clone()) {
                errors.push(EstateError::invalid(at("id"), format!("account {} is declared twice", account.id)));
            }
            for (k, key) in account.access_keys.iter().enumerate() {
                if key.is_empty() || key.starts_with(SESSION_KEY_PREFIX) {
                    let why =
                        format!("{key:?} is empty or starts with {SESSION_KEY_PREFIX}, the prefix of session keys");
                    errors.push(EstateError::invalid(format!("account[{i}].access_keys[{k}]"), why));
                } else if let Some(other) = keys.insert(key.clone(), account.id.clone()) {
                    let why = format!("{key:?} already belongs to account {other}");
                    errors.push(EstateError::invalid(format!("account[{i}].access_keys[{k}]"), why));
                }
            }
            for (r, role) in account.roles.iter().enumerate() {
                let at = |key: &str| format!("account[{i}].role[{r}].{key}");
                if role.name.is_empty()
                    || !role.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
                {
                    errors.push(EstateError::invalid(at("name"), format!("{:?} is not a role name", role.name)));
                }
                let max = role.max_session_seconds.map_or(DEFAULT_SESSION, Duration::from_secs);
                if !(DEFAULT_SESSION..=MAX_SESSION).contains(&max) {
                    errors.push(EstateError::invalid(
                        at("max_session_seconds"),
                        format!("{} is outside 3600..=43200", max.as_secs()),
                    ));
                }
                for (t, trusted) in role.trusted_accounts.iter().enumerate() {
                    if !is_account_id(trusted) {
                        let why = format!("{trusted:?} is not an account id (12 digits)");
                        errors.push(EstateError::invalid(format!("{}[{t}]", at("trusted_accounts")), why));
                    }
                }
                roles.push(Role {
                    account_id: account.id.clone(),
                    name: role.name.clone(),
                    trusted_accounts: role.trusted_accounts.iter().cloned().collect(),
                    external_id: role.external_id.clone(),
                    max_session: max,
                });
            }
        }
        let mut worlds = Vec::new();
        let mut seen: BTreeSet<(String, String)> = BTreeSet::from([(default_account.clone(), HOME_REGION.to_owned())]);
        let mut seed = options.id_seed;
        for (i, world) in estate.worlds.iter().enumerate() {
            let at = |key: &str| format!("world[{i}].{key}");
            let account = world.account.clone().unwrap_or_else(|| default_account.clone());
            if !known.contains(&account) {
                let why = format!("account {account:?} is not declared by an [[account]] (nor the default account)");
                errors.push(EstateError::invalid(at("account"), why));
                continue;
            }
            if !is_plausible_region(&world.region) {
                errors.push(EstateError::invalid(at("region"), format!("{:?} is not a region", world.region)));
                continue;
            }
            if !seen.insert((account.clone(), world.region.clone())) {
                let why =
                    format!("account {account} in {} has a world already (the home world included)", world.region);
                errors.push(EstateError::invalid(at("region"), why));
                continue;
            }
            seed = seed.wrapping_add(1).max(1);
            let world_options = EmulatorOptions {
                account_id: account.clone(),
                id_seed: seed,
                region: world.region.clone(),
                ..options.clone()
            };
            match Emulator::from_estate(&world.estate(), world_options) {
                Ok(emulator) => worlds.push(((account, world.region.clone()), emulator)),
                Err(EstateErrors(found)) => errors.extend(found.into_iter().map(|e| e.within(&format!("world[{i}]")))),
            }
        }
        let Some(home) = home.filter(|_| errors.is_empty()) else {
            return Err(EstateErrors(errors));
        };
        let cloud = Self::new(home);
        {
            let mut state = cloud.state.lock();
            state.next_seed = seed.wrapping_add(1).max(1);
            state.access_keys = keys;
            state.worlds.extend(worlds);
            for role in roles {
                state.roles.insert(role.arn(), role);
            }
        }
        Ok(cloud)
    }

    /// The home world: the default account in [`HOME_REGION`].
    #[must_use]
    pub fn home(&self) -> Emulator {
        let state = self.state.lock();
        let key = (state.default_account.clone(), HOME_REGION.to_owned());
        state.worlds.get(&key).cloned().unwrap_or_default()
    }

    /// The default account (the home world's).
    #[must_use]
    pub fn default_account(&self) -> String {
        self.state.lock().default_account.clone()
    }

    /// The world of `account` in `region`: its own when it has one; the
    /// home world for the default account; else a new empty one.
    #[must_use]
    pub fn world(&self, account: &str, region: &str) -> Emulator {
        let mut state = self.state.lock();
        let key = (account.to_owned(), region.to_owned());
        if let Some(world) = state.worlds.get(&key) {
            return world.clone();
        }
        if account == state.default_account {
            let home = (state.default_account.clone(), HOME_REGION.to_owned());
            return state.worlds.get(&home).cloned().unwrap_or_default();
        }
        let id_seed = state.fresh_seed();
        let options = EmulatorOptions {
            account_id: account.to_owned(),
            id_seed,
            limits: state.options.limits,
            faults: super::Faults::none(),
            region: region.to_owned(),
        };
        let world = Emulator::new(options);
        state.worlds.insert(key, world.clone());
        world
    }

    /// Whether `account`'s world in `region` has the VPC group `group`
    /// (creating no world): what a rule of another account that names it
    /// as `UserId` + `GroupId` needs (docs/emulator.md, "Accounts and
    /// regions"; peering is not modelled: same-region VPCs count as peered).
    #[must_use]
    pub fn has_vpc_group(&self, account: &str, region: &str, group: &GroupId) -> bool {
        let state = self.state.lock();
        let world = state.worlds.get(&(account.to_owned(), region.to_owned())).or_else(|| {
            (account == state.default_account)
                .then(|| state.worlds.get(&(state.default_account.clone(), HOME_REGION.to_owned())))
                .flatten()
        });
        world.and_then(|w| w.peek_group(group)).is_some_and(|g| g.vpc_id.is_some())
    }

    /// The (account, region) pairs with a world so far.
    #[must_use]
    pub fn worlds(&self) -> Vec<(String, String)> {
        self.state.lock().worlds.keys().cloned().collect()
    }

    /// Maps a long-term access key to `account`.
    pub fn add_access_key(&self, key: impl Into<String>, account: impl Into<String>) {
        self.state.lock().access_keys.insert(key.into(), account.into());
    }

    /// Adds (or replaces) a role.
    pub fn add_role(&self, role: Role) {
        self.state.lock().roles.insert(role.arn(), role);
    }

    /// Revokes (`true`) or restores (`false`) the role named by `arn`:
    /// a revoked role cannot be assumed and its sessions' EC2 requests are
    /// refused. Returns whether the role exists.
    pub fn set_role_revoked(&self, arn: &str, revoked: bool) -> bool {
        let mut state = self.state.lock();
        if !state.roles.contains_key(arn) {
            return false;
        }
        if revoked {
            state.revoked.insert(arn.to_owned());
        } else {
            state.revoked.remove(arn);
        }
        true
    }

    /// Takes `region` down (`true`: every EC2 request to it is answered
    /// `Unavailable`) or brings it back.
    pub fn set_region_down(&self, region: &str, down: bool) {
        let mut state = self.state.lock();
        if down {
            state.regions_down.insert(region.to_owned());
        } else {
            state.regions_down.remove(region);
        }
    }

    /// Who `access_key` is at `now`: a session's role, a mapped long-term
    /// key's account, else the default account.
    ///
    /// # Errors
    /// `ExpiredToken` for an expired session, `UnauthorizedOperation` for
    /// a session of a revoked role.
    pub fn identity(&self, access_key: Option<&str>, now: SystemTime) -> Result<Identity, CloudRefusal> {
        let state = self.state.lock();
        let Some(key) = access_key else {
            return Ok(long_term(&state.default_account));
        };
        if let Some(session) = state.sessions.get(key) {
            if session.expiration <= now {
                return Err(CloudRefusal::new(
                    codes::EXPIRED_TOKEN,
                    "The security token included in the request is expired",
                ));
            }
            if state.revoked.contains(&session.role_arn) {
                let message = format!(
                    "You are not authorized to perform this operation: the sessions of {} have been revoked.",
                    session.role_arn
                );
                return Err(CloudRefusal::new(codes::UNAUTHORIZED_OPERATION, message));
            }
            return Ok(session.identity.clone());
        }
        let account = state.access_keys.get(key).unwrap_or(&state.default_account);
        Ok(long_term(account))
    }

    /// The EC2 world a request signed by `access_key` for `region` is served
    /// by.
    ///
    /// # Errors
    /// [`Self::identity`]'s refusals, and `Unavailable` when the region is
    /// down.
    pub fn ec2_world(&self, access_key: Option<&str>, region: Option<&str>) -> Result<Emulator, CloudRefusal> {
        let identity = self.identity(access_key, SystemTime::now())?;
        let region = region.unwrap_or(HOME_REGION);
        if self.state.lock().regions_down.contains(region) {
            let message = format!("The service is unavailable in {region}. Please try again shortly.");
            return Err(CloudRefusal::new(codes::UNAVAILABLE, message));
        }
        Ok(self.world(&identity.account_id, region))
    }

    /// STS `AssumeRole` for a caller of `caller_account` at `now`.
    ///
    /// # Errors
    /// `ValidationError` for a bad session name or duration, `AccessDenied`
    /// for a role that does not exist or is revoked, an untrusted caller or a
    /// wrong or missing external id.
    pub fn assume_role(
        &self,
        caller: &Identity,
        request: &AssumeRoleRequest,
        now: SystemTime,
    ) -> Result<SessionCredentials, CloudRefusal> {
        if !valid_session_name(&request.session_name) {
            let message = format!(
                "1 validation error detected: Value '{}' at 'roleSessionName' failed to satisfy constraint: \
                 Member must have length between 2 and 64 and match [\\w+=,.@-]*",
                request.session_name
            );
            return Err(CloudRefusal::new(codes::VALIDATION_ERROR, message));
        }
        let denied = || {
            CloudRefusal::new(
                codes::ACCESS_DENIED,
                format!(
                    "User: {} is not authorized to perform: sts:AssumeRole on resource: {}",
                    caller.arn, request.role_arn
                ),
            )
        };
        let Some((_, role_name)) = role_account(&request.role_arn) else {
            let message = format!("{} is not a valid role ARN", request.role_arn);
            return Err(CloudRefusal::new(codes::VALIDATION_ERROR, message));
        };
        let mut state = self.state.lock();
        let Some(role) = state.roles.get(&request.role_arn).cloned() else {
            return Err(denied());
        };
        if state.revoked.contains(&request.role_arn)
            || (!role.trusted_accounts.is_empty() && !role.trusted_accounts.contains(&caller.account_id))
            || (role.external_id.is_some() && role.external_id != request.external_id)
        {
            return Err(denied());
        }
        let duration = request.duration_seconds.map_or(DEFAULT_SESSION, Duration::from_secs);
        if duration < MIN_SESSION || duration > role.max_session {
            let message = format!(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role, or is below {} seconds.",
                MIN_SESSION.as_secs()
            );
            return Err(CloudRefusal::new(codes::VALIDATION_ERROR, message));
        }
        state.issued += 1;
        let n = state.issued;
        let access_key_id = format!("{SESSION_KEY_PREFIX}{n:013X}");
        let role_id = format!("AROAEMU{:013X}", role_name.len() as u64 * 7919 + n);
        let assumed_role_arn =
            format!("arn:aws:sts::{}:assumed-role/{}/{}", role.account_id, role.name, request.session_name);
        let assumed_role_id = format!("{role_id}:{}", request.session_name);
        let credentials = SessionCredentials {
            access_key_id: access_key_id.clone(),
            secret_access_key: format!("emulator-secret-{n:024}"),
            session_token: format!("emulator-session-token-{n}"),
            expiration: now + duration,
            assumed_role_arn: assumed_role_arn.clone(),
            assumed_role_id: assumed_role_id.clone(),
        };
        let identity =
            Identity { account_id: role.account_id.clone(), arn: assumed_role_arn, user_id: assumed_role_id };
        state.sessions.insert(
            access_key_id,
            Session { role_arn: request.role_arn.clone(), identity, expiration: now + duration },
        );
        // Expired sessions are of no use to anyone: keep the map small.
        state.sessions.retain(|_, s| s.expiration > now);
        Ok(credentials)
    }
}

fn long_term(account: &str) -> Identity {
    Identity {
        account_id: account.to_owned(),
        arn: format!("arn:aws:iam::{account}:user/emulator"),
        user_id: format!("AIDAEMU{account}"),
    }
}

/// Whether `region` looks like an AWS region (`us-east-1`, `eu-west-1`, …).
#[must_use]
pub fn is_plausible_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "111111111111";
    const B: &str = "222222222222";

    fn cloud() -> Cloud {
        let cloud = Cloud::new(Emulator::default());
        cloud.add_access_key("AKIAA", A);
        cloud.add_role(Role { trusted_accounts: BTreeSet::from([A.to_owned()]), ..Role::new(B, "mirror") });
        cloud
    }

    fn request(arn: &str) -> AssumeRoleRequest {
        AssumeRoleRequest { role_arn: arn.to_owned(), session_name: "test".into(), ..AssumeRoleRequest::default() }
    }

    #[test]
    fn an_unknown_key_acts_as_the_default_account_and_a_mapped_key_as_its_own() {
        let cloud = cloud();
        let now = SystemTime::now();
        assert_eq!(cloud.identity(Some("whatever"), now).unwrap().account_id, super::super::DEFAULT_ACCOUNT_ID);
        assert_eq!(cloud.identity(None, now).unwrap().account_id, super::super::DEFAULT_ACCOUNT_ID);
        assert_eq!(cloud.identity(Some("AKIAA"), now).unwrap().account_id, A);
    }

    #[test]
    fn each_account_and_region_is_its_own_world_with_its_own_ids() {
        let cloud = cloud();
        let home = cloud.ec2_world(None, None).unwrap();
        let a_east = cloud.ec2_world(Some("AKIAA"), Some("us-east-1")).unwrap();
        let a_west = cloud.ec2_world(Some("AKIAA"), Some("eu-west-1")).unwrap();
        assert_eq!(a_east.account_id(), A);
        assert_eq!(a_west.account_id(), A);
        let ids: BTreeSet<_> = [&home, &a_east, &a_west].iter().map(|w| w.default_group(None).unwrap()).collect();
        assert_eq!(ids.len(), 3, "Classic default groups of three worlds: {ids:?}");
        assert_eq!(cloud.world(A, "eu-west-1").default_group(None), a_west.default_group(None));
    }

    #[test]
    fn the_default_account_sees_the_home_world_in_every_region_without_a_world_of_its_own() {
        let cloud = cloud();
        let home = cloud.home().default_group(None);
        assert_eq!(cloud.ec2_world(Some("test"), Some("eu-west-1")).unwrap().default_group(None), home);
        assert_eq!(cloud.worlds().len(), 1, "no world was made for it");
    }

    #[test]
    fn an_assumed_role_acts_as_the_role_account_until_it_expires() {
        let cloud = cloud();
        let now = SystemTime::now();
        let caller = cloud.identity(Some("AKIAA"), now).unwrap();
        let request =
            AssumeRoleRequest { duration_seconds: Some(900), ..request(&format!("arn:aws:iam::{B}:role/mirror")) };
        let credentials = cloud.assume_role(&caller, &request, now).unwrap();
        assert!(credentials.access_key_id.starts_with(SESSION_KEY_PREFIX));
        assert_eq!(credentials.expiration, now + Duration::from_secs(900));
        let identity = cloud.identity(Some(&credentials.access_key_id), now).unwrap();
        assert_eq!(identity.account_id, B);
        assert_eq!(identity.arn, format!("arn:aws:sts::{B}:assumed-role/mirror/test"));
        let later = now + Duration::from_secs(900);
        assert_eq!(cloud.identity(Some(&credentials.access_key_id), later).unwrap_err().code, codes::EXPIRED_TOKEN);
    }

    #[test]
    fn missing_untrusted_revoked_roles_and_wrong_external_ids_are_denied() {
        let cloud = cloud();
        let now = SystemTime::now();
        let a = cloud.identity(Some("AKIAA"), now).unwrap();
        let home = cloud.identity(None, now).unwrap();
        let arn = format!("arn:aws:iam::{B}:role/mirror");
        let code =
            |caller: &Identity, request: &AssumeRoleRequest| cloud.assume_role(caller, request, now).unwrap_err().code;
        assert_eq!(code(&a, &request(&format!("arn:aws:iam::{B}:role/other"))), codes::ACCESS_DENIED);
        assert_eq!(code(&home, &request(&arn)), codes::ACCESS_DENIED, "the home account is not trusted");
        assert_eq!(code(&a, &AssumeRoleRequest { session_name: "x".into(), ..request(&arn) }), codes::VALIDATION_ERROR);
        assert_eq!(
            code(&a, &AssumeRoleRequest { duration_seconds: Some(3601), ..request(&arn) }),
            codes::VALIDATION_ERROR
        );
        assert_eq!(code(&a, &request("arn:aws:iam::12:role/x")), codes::VALIDATION_ERROR);

        let credentials = cloud.assume_role(&a, &request(&arn), now).unwrap();
        assert!(cloud.set_role_revoked(&arn, true));
        assert_eq!(code(&a, &request(&arn)), codes::ACCESS_DENIED);
        let refused = cloud.ec2_world(Some(&credentials.access_key_id), Some("eu-west-1")).unwrap_err();
        assert_eq!(refused.code, codes::UNAUTHORIZED_OPERATION);
        assert!(cloud.set_role_revoked(&arn, false));
        assert!(cloud.ec2_world(Some(&credentials.access_key_id), Some("eu-west-1")).is_ok());
        assert!(!cloud.set_role_revoked("arn:aws:iam::222222222222:role/none", true));

        cloud.add_role(Role { external_id: Some("secret".into()), ..Role::new(B, "guarded") });
        let guarded = format!("arn:aws:iam::{B}:role/guarded");
        assert_eq!(code(&a, &request(&guarded)), codes::ACCESS_DENIED);
        let wrong = AssumeRoleRequest { external_id: Some("nope".into()), ..request(&guarded) };
        assert_eq!(code(&a, &wrong), codes::ACCESS_DENIED);
        let right = AssumeRoleRequest { external_id: Some("secret".into()), ..request(&guarded) };
        assert!(cloud.assume_role(&home, &right, now).is_ok(), "a role without trusted accounts trusts any");
    }

    #[test]
    fn a_region_down_refuses_its_requests_only() {
        let cloud = cloud();
        cloud.set_region_down("eu-west-1", true);
        assert_eq!(cloud.ec2_world(None, Some("eu-west-1")).unwrap_err().code, codes::UNAVAILABLE);
        assert!(cloud.ec2_world(None, Some("us-east-1")).is_ok());
        cloud.set_region_down("eu-west-1", false);
        assert!(cloud.ec2_world(None, Some("eu-west-1")).is_ok());
    }

    #[test]
    fn role_arns_name_their_account_and_role() {
        assert_eq!(role_account("arn:aws:iam::222222222222:role/mirror"), Some(("222222222222", "mirror")));
        assert_eq!(role_account("arn:aws:iam::222222222222:role/path/to/mirror"), Some(("222222222222", "mirror")));
        assert_eq!(role_account("arn:aws:iam::2222:role/mirror"), None);
        assert_eq!(role_account("arn:aws:iam::222222222222:user/mirror"), None);
        assert_eq!(role_account("nonsense"), None);
    }
}
