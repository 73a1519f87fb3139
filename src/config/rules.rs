//! Rules across keys and across `[[mirror]]` entries, run on whatever could
//! be read (a key whose own value was wrong is `None` and skipped), so they
//! add their errors to those of the values.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::check::{Checker, KeyPath};
use super::error::ErrorKind;
use super::sections::{
    MirrorConfig, PartialMirror, PartialRateLimit, PartialSafety, RawMirror, RawRateLimit, RawSafety,
};
use super::{SourceRef, VpcId};

/// A fight's longest backoff may not be shorter than its first; left at its
/// default, it is raised to the first.
pub(super) fn fight_backoff(cx: &mut Checker<'_>, raw: Option<&Spanned<RawSafety>>, safety: &mut PartialSafety) {
    let written = raw.and_then(|raw| raw.get_ref().fight_backoff_max.as_ref());
    match (safety.fight_backoff, safety.fight_backoff_max, written) {
        (Some(first), Some(max), Some(value)) if max < first => {
            let shown = cx.shown(value);
            let message = format!("{shown} is shorter than fight_backoff ({})", humantime::format_duration(first));
            cx.invalid(KeyPath::new("safety", "fight_backoff_max"), value, message);
            safety.fight_backoff_max = None;
        }
        (Some(first), Some(max), None) => safety.fight_backoff_max = Some(max.max(first)),
        _ => {}
    }
}

/// A base delay the file sets above the cap would be silently cut to it:
/// say so instead (a default base above an explicit cap is simply capped).
pub(super) fn retry_delays(cx: &mut Checker<'_>, raw: Option<&Spanned<RawRateLimit>>, rate_limit: &PartialRateLimit) {
    let (Some(raw), Some(max)) = (raw.map(Spanned::get_ref), rate_limit.retry_max_delay) else { return };
    for (key, value, base) in [
        ("retry_base_delay", &raw.retry_base_delay, rate_limit.retry_base_delay),
        ("retry_throttled_base_delay", &raw.retry_throttled_base_delay, rate_limit.retry_throttled_base_delay),
    ] {
        if let (Some(value), Some(base)) = (value, base)
            && base > max
        {
            let shown = cx.shown(value);
            let max = humantime::format_duration(max);
            let message = format!("{shown} is longer than rate_limit.retry_max_delay ({max})");
            cx.invalid(KeyPath::new("rate_limit", key), value, message);
        }
    }
}

/// Reads every `[[mirror]]` entry and checks the rules across entries: a
/// source is mapped once; a mirror name is used once per VPC (ignoring case,
/// as EC2 does). Entries in `skipped` were not tables (already reported).
/// Returns the mirrors when every entry could be read.
pub(super) fn mirrors(
    cx: &mut Checker<'_>,
    raw: &[Spanned<RawMirror>],
    skipped: &BTreeSet<usize>,
) -> Option<Vec<MirrorConfig>> {
    let mut mirrors = Vec::new();
    let mut complete = true;
    // First index using each source, and each (VPC, case-folded name).
    let mut sources: BTreeMap<SourceRef, usize> = BTreeMap::new();
    let mut names: BTreeMap<(VpcId, String), usize> = BTreeMap::new();
    for (i, entry) in raw.iter().enumerate() {
        if skipped.contains(&i) {
            complete = false;
            continue;
        }
        let prefix = format!("mirror[{i}]");
        let m = entry.get_ref();
        let mirror = PartialMirror::read(cx, m, &prefix, Some(entry.span()));

        let mut duplicate = false;
        if let (Some(source), Some(value)) = (&mirror.source, &m.source) {
            if let Some(first) = sources.get(source) {
                let message = format!("{:?} is already mapped by mirror[{first}]", source.to_string());
                cx.push(ErrorKind::Duplicate, KeyPath::new(&prefix, "source_group"), Some(value.span()), message);
                duplicate = true;
            } else {
                sources.insert(source.clone(), i);
            }
        }
        // The mirror's name is known now when given, or when the source is
        // given by name (the mirror is named after it).
        let explicit = match (&mirror.name, &mirror.source) {
            (Some(Some(name)), _) => m.name.as_ref().map(|v| (name.clone(), "name", v.span(), "")),
            (Some(None), Some(SourceRef::Name(source))) => {
                m.source.as_ref().map(|v| (source.clone(), "source_group", v.span(), " (the source's name)"))
            }
            _ => None,
        };
        if let (false, Some(vpc), Some((name, key, span, origin))) = (duplicate, &mirror.vpc, explicit) {
            match names.get(&(vpc.clone(), name.to_lowercase())) {
                Some(first) => {
                    let message = format!("mirror name {name:?}{origin} is already used in {vpc} by mirror[{first}]");
                    cx.push(ErrorKind::Duplicate, KeyPath::new(&prefix, key), Some(span), message);
                }
                None => {
                    names.insert((vpc.clone(), name.to_lowercase()), i);
                }
            }
        }
        match mirror.complete() {
            Some(mirror) => mirrors.push(mirror),
            None => complete = false,
        }
    }
    complete.then_some(mirrors)
}
