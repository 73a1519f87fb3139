//! `[accounts.NAME]` and the `source_account`/`target_account` of a
//! `[[mirror]]` (docs/configuration.md, "Accounts"): the accounts and
//! regions a daemon reaches besides the `[aws]` one, each by its own role.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::{Checker, ErrorKind, RawMirror, RawValue, check_endpoint_url, control_character, is_plausible_region};

/// The name the `[aws]` account has where an account is named (metric
/// labels, `/status`, logs); no `[accounts.NAME]` may take it.
pub const AWS_ACCOUNT: &str = "aws";

/// Default of `accounts.NAME.session_name`.
pub const DEFAULT_SESSION_NAME: &str = "classiclink-mirror";

/// Longest account name: it is a metric label value.
pub const MAX_ACCOUNT_NAME_LEN: usize = 32;

/// Longest `external_id` STS accepts.
const MAX_EXTERNAL_ID_LEN: usize = 1224;

/// `[accounts.NAME]`: another account (or region) the daemon reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountConfig {
    /// The region of this account's EC2 client.
    pub region: String,
    /// The role to assume (`arn:aws:iam::<account>:role/<name>`); `None`:
    /// the default credential chain, as `[aws]`.
    pub role_arn: Option<String>,
    /// The `sts:ExternalId` the role's trust policy asks for.
    pub external_id: Option<String>,
    /// The `RoleSessionName` (CloudTrail shows it).
    pub session_name: String,
    /// An endpoint for EC2 and STS, e.g. the emulator; `None`: `[aws]
    /// endpoint_url` when set, else AWS's own.
    pub endpoint_url: Option<String>,
}

impl AccountConfig {
    /// An account in `region` on the default chain.
    #[must_use]
    pub fn in_region(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            role_arn: None,
            external_id: None,
            session_name: DEFAULT_SESSION_NAME.to_owned(),
            endpoint_url: None,
        }
    }
}

/// The raw form of one `[accounts.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccount {
    region: Option<RawValue>,
    role_arn: Option<RawValue>,
    external_id: Option<RawValue>,
    session_name: Option<RawValue>,
    endpoint_url: Option<RawValue>,
}

/// The keys of one `[accounts.NAME]`.
pub(super) const ACCOUNT_KEYS: &[&str] = &["region", "role_arn", "external_id", "session_name", "endpoint_url"];

/// Whether `name` can name an account: 1 to [`MAX_ACCOUNT_NAME_LEN`] of
/// lower-case letters, digits, `_` and `-`, starting with a letter or digit.
fn check_account_name(name: &str) -> Result<(), String> {
    if name == AWS_ACCOUNT {
        return Err(format!("{name:?} is the name of the [aws] account; choose another"));
    }
    let good = !name.is_empty()
        && name.len() <= MAX_ACCOUNT_NAME_LEN
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if good {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an account name (1 to {MAX_ACCOUNT_NAME_LEN} of a-z, 0-9, _ and -, starting with a letter or digit)"
        ))
    }
}

/// Whether `arn` is an IAM role ARN: `arn:<partition>:iam::<12 digits>:role/<path/name>`.
fn is_role_arn(arn: &str) -> bool {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    partition.starts_with("aws")
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.strip_prefix("role/").is_some_and(|name| {
            !name.is_empty()
                && !name.ends_with('/')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-/".contains(&b))
        })
}

/// The characters STS allows in `RoleSessionName` and `ExternalId`
/// (`[\w+=,.@-]`, and `:/` in an external id).
fn sts_text(text: &str, extra: &[u8]) -> bool {
    text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b) || extra.contains(&b))
}

impl Checker<'_> {
    /// Checks every `[accounts.NAME]`.
    pub(super) fn check_accounts(
        &mut self,
        raw: &BTreeMap<String, Spanned<RawAccount>>,
    ) -> Option<BTreeMap<String, AccountConfig>> {
        let mut accounts = BTreeMap::new();
        let mut complete = true;
        for (name, entry) in raw {
            let path = |key: &str| format!("accounts.{}.{key}", super::key_segment(name));
            if let Err(why) = check_account_name(name) {
                self.push(
                    ErrorKind::InvalidValue,
                    format!("accounts.{}", super::key_segment(name)),
                    Some(entry.span()),
                    why,
                );
                complete = false;
                continue;
            }
            let a = entry.get_ref();
            let region = match &a.region {
                Some(value) => self.string(&path("region"), value).and_then(|region| {
                    if is_plausible_region(region) {
                        Some(region.to_owned())
                    } else {
                        let message = format!("{region:?} is not an AWS region (like \"us-east-1\")");
                        self.invalid(&path("region"), value, message);
                        None
                    }
                }),
                None => {
                    let message = "required key is missing".to_owned();
                    self.push(ErrorKind::MissingKey, path("region"), Some(entry.span()), message);
                    None
                }
            };
            let mut ok = true;
            let mut text =
                |cx: &mut Self, key: &str, raw: Option<&RawValue>, check: &dyn Fn(&str) -> Result<(), String>| {
                    let value = raw?;
                    let Some(text) = cx.string(&path(key), value) else {
                        ok = false;
                        return None;
                    };
                    match check(text) {
                        Ok(()) => Some(text.to_owned()),
                        Err(why) => {
                            cx.invalid(&path(key), value, why);
                            ok = false;
                            None
                        }
                    }
                };
            let role_arn = text(self, "role_arn", a.role_arn.as_ref(), &|arn| {
                if is_role_arn(arn) {
                    Ok(())
                } else {
                    Err(format!(
                        "{arn:?} is not an IAM role ARN (like \"arn:aws:iam::123456789012:role/classiclink-mirror\")"
                    ))
                }
            });
            let external_id = text(self, "external_id", a.external_id.as_ref(), &|id| {
                if (2..=MAX_EXTERNAL_ID_LEN).contains(&id.len()) && sts_text(id, b":/") {
                    Ok(())
                } else {
                    Err(format!(
                        "{id:?} is not an external id (2 to {MAX_EXTERNAL_ID_LEN} of letters, digits and +=,.@:/-_)"
                    ))
                }
            });
            let session_name = text(self, "session_name", a.session_name.as_ref(), &|name| {
                if (2..=64).contains(&name.len()) && sts_text(name, b"") {
                    Ok(())
                } else {
                    Err(format!("{name:?} is not a session name (2 to 64 of letters, digits and +=,.@-_)"))
                }
            });
            let endpoint_url = text(self, "endpoint_url", a.endpoint_url.as_ref(), &|url| {
                check_endpoint_url(url).map_err(|why| format!("{url:?} {why}"))
            });
            if let (None, Some(value)) = (&a.role_arn, &a.external_id) {
                let message = "is set without role_arn: an external id is sent only when assuming a role".to_owned();
                self.push(ErrorKind::InvalidValue, path("external_id"), Some(value.span()), message);
                ok = false;
            }
            match (region, ok) {
                (Some(region), true) => {
                    accounts.insert(
                        name.clone(),
                        AccountConfig {
                            region,
                            role_arn,
                            external_id,
                            session_name: session_name.unwrap_or_else(|| DEFAULT_SESSION_NAME.to_owned()),
                            endpoint_url,
                        },
                    );
                }
                _ => complete = false,
            }
        }
        complete.then_some(accounts)
    }

    /// The `source_account` or `target_account` of `mirror[i]`: `None` for
    /// the `[aws]` account (the key absent), else a name of `[accounts]`.
    /// An unknown name is an error naming the mirror; `Err` when the value
    /// cannot be used.
    pub(super) fn mirror_account(
        &mut self,
        i: usize,
        key: &str,
        raw: Option<&RawValue>,
        accounts: &BTreeMap<String, Spanned<RawAccount>>,
    ) -> Result<Option<String>, ()> {
        let Some(value) = raw else { return Ok(None) };
        let path = format!("mirror[{i}].{key}");
        let name = self.string(&path, value).ok_or(())?;
        if accounts.contains_key(name) {
            return Ok(Some(name.to_owned()));
        }
        let known: Vec<&str> = accounts.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "there is no [accounts.NAME] section".to_owned()
        } else {
            format!("known accounts: {}", known.join(", "))
        };
        let shown = control_character(name).map_or_else(|| format!("{name:?}"), |c| format!("a name with {c}"));
        self.invalid(&path, value, format!("{shown} is not an account of [accounts] ({known})"));
        Err(())
    }

    /// The accounts of every mirror, `(source, target)` by mirror index, and
    /// the rule of this version: one target account per daemon.
    pub(super) fn check_mirror_accounts(
        &mut self,
        raw: &[Spanned<RawMirror>],
        accounts: &BTreeMap<String, Spanned<RawAccount>>,
    ) -> Option<Vec<(Option<String>, Option<String>)>> {
        let mut out = Vec::with_capacity(raw.len());
        let mut complete = true;
        let mut first_target: Option<(usize, Option<String>)> = None;
        for (i, entry) in raw.iter().enumerate() {
            let m = entry.get_ref();
            let source = self.mirror_account(i, "source_account", m.source_account.as_ref(), accounts);
            let target = self.mirror_account(i, "target_account", m.target_account.as_ref(), accounts);
            if let Ok(target) = &target {
                match &first_target {
                    None => first_target = Some((i, target.clone())),
                    Some((first, name)) if name != target => {
                        let shown = |n: &Option<String>| {
                            n.clone().unwrap_or_else(|| format!("{AWS_ACCOUNT} (the [aws] account)"))
                        };
                        let message = format!(
                            "targets account {}, but mirror[{first}] targets {}: a daemon mirrors into one target account \
                             (run one daemon per target account)",
                            shown(target),
                            shown(name)
                        );
                        let span = m.target_account.as_ref().map_or_else(|| entry.span(), Spanned::span);
                        self.push(ErrorKind::InvalidValue, format!("mirror[{i}].target_account"), Some(span), message);
                        complete = false;
                    }
                    Some(_) => {}
                }
            }
            // A group name is unique among Classic groups of one account
            // only: a source elsewhere is named by its id.
            if let (Ok(source), Ok(target), Some(value)) = (&source, &target, &m.source_group)
                && source != target
                && let toml::Value::String(group) = value.get_ref()
                && !group.starts_with("sg-")
            {
                let message = format!(
                    "{group:?} is a group name, but the source is in another account than the target: name it by its id (sg-…)"
                );
                self.invalid(&format!("mirror[{i}].source_group"), value, message);
                complete = false;
            }
            match (source, target) {
                (Ok(source), Ok(target)) => out.push((source, target)),
                _ => complete = false,
            }
        }
        complete.then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_are_recognised() {
        assert!(is_role_arn("arn:aws:iam::123456789012:role/classiclink-mirror"));
        assert!(is_role_arn("arn:aws-cn:iam::123456789012:role/path/to/mirror"));
        assert!(!is_role_arn("arn:aws:iam::12345678901:role/x"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:user/x"));
        assert!(!is_role_arn("arn:aws:sts::123456789012:role/x"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:role/"));
        assert!(!is_role_arn("nonsense"));
    }

    #[test]
    fn account_names_are_short_lower_case_words() {
        assert!(check_account_name("prod-eu").is_ok());
        assert!(check_account_name("b2").is_ok());
        assert!(check_account_name("aws").is_err());
        assert!(check_account_name("Prod").is_err());
        assert!(check_account_name("-x").is_err());
        assert!(check_account_name("").is_err());
        assert!(check_account_name(&"a".repeat(33)).is_err());
    }
}
