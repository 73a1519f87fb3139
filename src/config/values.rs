//! The readers of values that are more than a string, a boolean or a bounded
//! number: a region, an endpoint URL, a socket address, a path, a
//! deployment's name, a tag key, a group and a VPC. Each has the signature
//! the key declarations of `config/sections.rs` expect:
//! `fn(&mut Checker, KeyPath, &RawValue) -> Option<T>`, reporting what is
//! wrong with the value and returning `None` then.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;

use super::SourceRef;
use super::bounds;
use super::check::{Checker, KeyPath, RawValue};
use super::error::ErrorKind;
use crate::model::{GroupId, VpcId};

/// Maximum length of a security group name (EC2).
const MAX_GROUP_NAME_LEN: usize = 255;
/// Maximum length of a tag key (EC2).
const MAX_TAG_KEY_LEN: usize = 128;
/// Maximum length of `daemon.owner` ([`bounds::OWNER_LENGTH`]).
const MAX_OWNER_LEN: usize = bounds::OWNER_LENGTH.max as usize;
/// Punctuation EC2 allows in VPC security group names, besides letters,
/// digits and spaces.
const VPC_GROUP_NAME_PUNCTUATION: &str = "._-:/()#,@[]+=&;{}!$*";

/// `xx-xxxx-N`: lowercase words joined by dashes, at least two of them,
/// then a number (`us-east-1`, `us-gov-west-1`, `ap-southeast-2`).
fn is_plausible_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let Some((number, words)) = parts.split_last() else { return false };
    words.len() >= 2
        && words[0].len() == 2
        && words.iter().all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// The first control character of `text` (NUL, newline, DEL, ...), as
/// `U+0000`: EC2 refuses them in group names and tags, and none belongs in a
/// profile name or a URL.
fn control_character(text: &str) -> Option<String> {
    text.chars().find(|c| c.is_control()).map(|c| format!("U+{:04X}", u32::from(c)))
}

/// `aws.region` as written.
pub(super) fn region(cx: &mut Checker<'_>, at: KeyPath<'_>, raw: &RawValue) -> Option<String> {
    let region = cx.string(at, raw)?;
    if is_plausible_region(region) {
        Some(region.to_owned())
    } else {
        cx.invalid(at, raw, format!("{region:?} is not an AWS region (like \"us-east-1\")"));
        None
    }
}

/// `aws.region` when the file has none: `AWS_REGION` (empty counts as
/// unset), else a missing key at the `[aws]` header (or nowhere).
pub(super) fn region_from_environment(
    cx: &mut Checker<'_>,
    at: KeyPath<'_>,
    span: Option<Range<usize>>,
) -> Option<String> {
    match cx.env_region.map(str::trim).filter(|r| !r.is_empty()) {
        Some(region) if is_plausible_region(region) => Some(region.to_owned()),
        Some(region) => {
            let message = format!("{region:?} (from AWS_REGION) is not an AWS region (like \"us-east-1\")");
            cx.push(ErrorKind::InvalidValue, at, None, message);
            None
        }
        None => {
            let message = "required key is missing (or set AWS_REGION)".to_owned();
            cx.push(ErrorKind::MissingKey, at, span, message);
            None
        }
    }
}

/// Why `url` cannot be an endpoint: it must be an `http://` or `https://`
/// URL (as the `url` crate parses it) with a host and, if given, a port,
/// and nothing else in its authority.
fn check_endpoint_url(url: &str) -> Result<(), &'static str> {
    let lower = url.to_ascii_lowercase();
    let Some(rest) = lower.strip_prefix("http://").or_else(|| lower.strip_prefix("https://")) else {
        return Err("is not an http:// or https:// URL");
    };
    // The URL standard drops tabs and newlines and escapes other controls:
    // refuse them rather than connect somewhere the file does not say.
    if url.chars().any(char::is_whitespace) {
        return Err("is not a URL (it contains whitespace)");
    }
    if control_character(url).is_some() {
        return Err("is not a URL (it contains a control character)");
    }
    let parsed = url::Url::parse(url).map_err(|e| match e {
        url::ParseError::EmptyHost => "has no host",
        url::ParseError::InvalidPort => "has an invalid port",
        url::ParseError::InvalidIpv6Address if !rest.contains(']') => "has an unclosed IPv6 address",
        _ => "has an invalid host",
    })?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("has credentials in it (user:password@); the SDK signs requests itself");
    }
    // The URL standard reads `host:` as the default port; an endpoint that
    // names no port writes no colon.
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.ends_with(':') {
        return Err("has an invalid port");
    }
    match parsed.host() {
        None => Err("has no host"),
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => Ok(()),
        // As written: a name the URL standard would rewrite (an IDN, a
        // character HTTP clients refuse) is not one an SDK resolves alike.
        Some(url::Host::Domain(host)) => {
            if host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) && authority.contains(host) {
                Ok(())
            } else {
                Err("has an invalid host")
            }
        }
    }
}

/// An endpoint or queue URL (`aws.endpoint_url`, `[events]`).
pub(super) fn endpoint_url(cx: &mut Checker<'_>, at: KeyPath<'_>, raw: &RawValue) -> Option<String> {
    let url = cx.string(at, raw)?;
    match check_endpoint_url(url) {
        Ok(()) => Some(url.to_owned()),
        Err(why) => {
            cx.invalid(at, raw, format!("{url:?} {why}"));
            None
        }
    }
}

/// `aws.profile`: a name, not empty, without control characters.
pub(super) fn profile(cx: &mut Checker<'_>, at: KeyPath<'_>, raw: &RawValue) -> Option<String> {
    let profile = cx.string(at, raw)?;
    if profile.trim().is_empty() {
        cx.invalid(at, raw, "must not be empty (remove the key to use the default chain)".into());
        None
    } else if let Some(c) = control_character(profile) {
        cx.invalid(at, raw, format!("{profile:?} contains the control character {c}"));
        None
    } else {
        Some(profile.to_owned())
    }
}

/// `daemon.listen`: an IP and a port.
pub(super) fn socket_address(cx: &mut Checker<'_>, at: KeyPath<'_>, raw: &RawValue) -> Option<SocketAddr> {
    let text = cx.string(at, raw)?;
    match text.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            let message = format!("{text:?} is not a socket address (IP:port, like \"127.0.0.1:9464\")");
            cx.invalid(at, raw, message);
            None
        }
    }
}

/// `daemon.state_dir`: a path, not empty, without NUL.
pub(super) fn directory(cx: &mut Checker<'_>, at: KeyPath<'_>, raw: &RawValue) -> Option<PathBuf> {
    let text = cx.string(at, raw)?;
    if text.is_empty() || text.contains('\0') {
        cx.invalid(at, raw, format!("{text:?} is not a directory path"));
        None
    } else {
        Some(PathBuf::from(text))
    }
}

/// Whether `owner` can be `daemon.owner`: 1 to [`MAX_OWNER_LEN`]
/// characters of a tag value EC2 accepts everywhere (ASCII letters, digits,
/// spaces and `+ - = . _ : / @`), not starting or ending with a space, so
/// that it reads the same in a tag, an IAM condition and a log line.
fn check_owner(owner: &str) -> Result<(), String> {
    if owner.is_empty() {
        return Err("is empty; name the deployment (the default is \"default\")".to_owned());
    }
    if let Some(c) = control_character(owner) {
        return Err(format!("contains the control character {c}"));
    }
    if owner.chars().count() > MAX_OWNER_LEN {
        return Err(format!("is longer than {MAX_OWNER_LEN} characters"));
    }
    if let Some(c) = owner.chars().find(|c| !(c.is_ascii_alphanumeric() || " +-=._:/@".contains(*c))) {
        return Err(format!(
            "contains {c:?}; use ASCII letters, digits, spaces and + - = . _ : / @ (EC2's tag-value characters)"
        ));
    }
    if owner.starts_with(' ') || owner.ends_with(' ') {
        return Err("starts or ends with a space".to_owned());
    }
    Ok(())
}

/// `daemon.owner`.
pub(super) fn owner(cx: &mut Checker<'_>, at: KeyPath<'_>, raw: &RawValue) -> Option<String> {
    let text = cx.string(at, raw)?;
    match check_owner(text) {
        Ok(()) => Some(text.to_owned()),
        Err(why) => {
            cx.invalid(at, raw, format!("{text:?} {why}"));
            None
        }
    }
}

/// `mirroring.unmanaged_references` and its `[[mirror]]` override:
/// `"report"` or `"expand"`.
pub(super) fn unmanaged_references(
    cx: &mut Checker<'_>,
    at: KeyPath<'_>,
    raw: &RawValue,
) -> Option<super::UnmanagedReferences> {
    match cx.string(at, raw)? {
        "report" => Some(super::UnmanagedReferences::Report),
        "expand" => Some(super::UnmanagedReferences::Expand),
        other => {
            cx.invalid(at, raw, format!("{other:?} is not \"report\" or \"expand\""));
            None
        }
    }
}

/// `discovery.tag_key`: a tag key EC2 accepts, or `""` (discovery off: `None`).
pub(super) fn tag_key(cx: &mut Checker<'_>, at: KeyPath<'_>, raw: &RawValue) -> Option<Option<String>> {
    let key = cx.string(at, raw)?;
    if key.is_empty() {
        return Some(None);
    }
    if key.chars().count() > MAX_TAG_KEY_LEN {
        cx.invalid(at, raw, format!("is longer than {MAX_TAG_KEY_LEN} characters"));
        return None;
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        cx.invalid(at, raw, format!("{key:?} uses the reserved \"aws:\" prefix"));
        return None;
    }
    if let Some(c) = control_character(key) {
        let message = format!("{key:?} contains the control character {c}, which EC2 does not allow in tag keys");
        cx.invalid(at, raw, message);
        return None;
    }
    Some(Some(key.to_owned()))
}

/// `mirror[i].source_group`: a group id (`sg-…`) or a group name.
pub(super) fn source(cx: &mut Checker<'_>, at: KeyPath<'_>, raw: &RawValue) -> Option<SourceRef> {
    let text = cx.string(at, raw)?;
    if text.starts_with("sg-") {
        return match GroupId::try_new(text) {
            Ok(id) => Some(SourceRef::Id(id)),
            Err(e) => {
                cx.invalid(at, raw, e.to_string());
                None
            }
        };
    }
    if text.is_empty() {
        cx.invalid(at, raw, "must not be empty (a group id like \"sg-0a1b2c3d\" or a group name)".into());
        return None;
    }
    if text.chars().count() > MAX_GROUP_NAME_LEN {
        cx.invalid(at, raw, format!("is longer than {MAX_GROUP_NAME_LEN} characters"));
        return None;
    }
    if let Some(c) = control_character(text) {
        let message = format!("{text:?} contains the control character {c}, which EC2 does not allow in group names");
        cx.invalid(at, raw, message);
        return None;
    }
    Some(SourceRef::Name(text.to_owned()))
}

/// `mirror[i].vpc`: a VPC id.
pub(super) fn vpc(cx: &mut Checker<'_>, at: KeyPath<'_>, raw: &RawValue) -> Option<VpcId> {
    let text = cx.string(at, raw)?;
    VpcId::try_new(text).map_err(|e| cx.invalid(at, raw, e.to_string())).ok()
}

/// EC2's rules for a VPC security group name we may create.
fn check_mirror_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.chars().count() > MAX_GROUP_NAME_LEN {
        return Err(format!("is longer than {MAX_GROUP_NAME_LEN} characters"));
    }
    if name.starts_with("sg-") {
        return Err(format!("{name:?} starts with \"sg-\", which EC2 does not allow in group names"));
    }
    if let Some(bad) =
        name.chars().find(|&c| !(c.is_ascii_alphanumeric() || c == ' ' || VPC_GROUP_NAME_PUNCTUATION.contains(c)))
    {
        return Err(format!(
            "{name:?} contains {bad:?}; VPC group names allow letters, digits, spaces and {VPC_GROUP_NAME_PUNCTUATION}"
        ));
    }
    Ok(())
}

/// `mirror[i].name`: a VPC group name EC2 accepts.
pub(super) fn mirror_name(cx: &mut Checker<'_>, at: KeyPath<'_>, raw: &RawValue) -> Option<String> {
    let name = cx.string(at, raw)?;
    match check_mirror_name(name) {
        Ok(()) => Some(name.to_owned()),
        Err(why) => {
            cx.invalid(at, raw, why);
            None
        }
    }
}

/// `safety.max_source_shrink`: a fraction in (0, 1]
/// ([`bounds::MAX_SOURCE_SHRINK`]).
pub(super) fn fraction(cx: &mut Checker<'_>, at: KeyPath<'_>, raw: &RawValue) -> Option<f64> {
    let fraction = cx.number(at, raw)?;
    if fraction > 0.0 && fraction <= 1.0 {
        Some(fraction)
    } else {
        let shown = cx.shown(raw);
        let range = bounds::MAX_SOURCE_SHRINK.1;
        cx.invalid(at, raw, format!("{shown} is outside {range}"));
        None
    }
}
