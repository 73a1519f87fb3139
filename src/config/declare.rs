//! `section!`: one declaration per key, from which everything that knows
//! the key is generated — so a key is written once, with its type, its
//! default (or that it is optional or required) and how its value is read
//! (with the range of a number or duration).
//!
//! ```text
//! section! {
//!     /// `[daemon]`.
//!     #[derive(Clone, Debug, PartialEq, Eq)]
//!     "daemon" => DaemonConfig, RawDaemon, PartialDaemon {
//!         /// Time between cycle starts (±10% jitter).
//!         interval: Duration { default: Duration::from_secs(30), read: duration(SECOND, DAY) },
//!         /// An EC2-compatible endpoint.
//!         endpoint_url: Option<String> { optional, read: values::endpoint_url },
//!         /// The mirror's source; the file's key is `source_group`.
//!         source ("source_group"): SourceRef { required, read: values::source },
//!     }
//! }
//! ```
//!
//! generates, for the section:
//! - the typed struct (`DaemonConfig`), each field with its doc;
//! - the raw form (`RawDaemon`): every key an `Option` of a raw, spanned TOML
//!   value, so deserializing it cannot fail on a bad value; `RawDaemon::KEYS`,
//!   the keys the schema walk knows (an unknown key is reported there with
//!   its location); `RawDaemon::BOUNDS`, the ranges `config::bounds` collects;
//! - the partial form (`PartialDaemon`): every field an `Option`, `None`
//!   where the value was wrong, so cross-key rules run on whatever could be
//!   read; its `Default` holds the defaults (the one place they are written),
//!   `read` checks each key (reporting every error) and `complete` gives the
//!   typed struct when every key could be read.
//!
//! What a key says when absent:
//! - `default: expr` — the value;
//! - `optional` — `None` (the field's type is an `Option`, the reader's value
//!   is wrapped in `Some`);
//! - `required` — a `missing_key` error at the section's header (a
//!   `[[mirror]]` entry's);
//! - `absent: function` — what `function(cx, at, span)` says (`aws.region`
//!   falls back to `AWS_REGION`).
//!
//! How a present value is read:
//! - `duration(min, max)`, `integer(min, max)`, `rate(min, max)` — a bounded
//!   number or duration (an integer converts to the field's type with
//!   [`super::check::FromU64`]);
//! - `function` — `function(cx, at, value) -> Option<T>`, for everything else
//!   (`config/values.rs`, or a generic reader of `Checker`).

/// Declares one section of the mapping file; see the module's docs.
macro_rules! section {
    (
        $(#[$meta:meta])*
        $section:literal => $name:ident, $raw:ident, $partial:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident $(($key:literal))? : $ty:ty { $presence:ident $(: $pval:expr)?, read: $($read:tt)+ }
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        #[doc = concat!("`[", $section, "]` as written: each key a raw TOML value, or absent.")]
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct $raw {
            $( $(#[serde(rename = $key)])? pub(super) $field: Option<$crate::config::check::RawValue>, )*
        }

        impl $raw {
            /// The keys of the section, as the file writes them.
            pub(super) const KEYS: &'static [&'static str] = &[ $( section!(@key $field $(($key))?) ),* ];
            /// The range of each key (`Bounded::None` for a key without one).
            pub(super) const BOUNDS: &'static [$crate::config::bounds::Bounded] =
                &[ $( section!(@bound $section, $field, $($read)+) ),* ];
        }

        #[doc = concat!("`[", $section, "]` as read so far: `None` where a value was wrong or is missing.")]
        #[derive(Debug)]
        pub(super) struct $partial {
            $( pub(super) $field: Option<$ty>, )*
        }

        impl Default for $partial {
            /// Every key at its default; optional keys absent, required ones missing.
            fn default() -> Self {
                Self { $( $field: section!(@default $presence $(: $pval)?), )* }
            }
        }

        impl $partial {
            /// Checks every key of `raw` (a section, or an entry, at `prefix`
            /// whose header is at `span`), recording each error in `cx`.
            #[allow(unused_variables, reason = "a section without required keys does not use the span")]
            pub(super) fn read(
                cx: &mut $crate::config::check::Checker<'_>,
                raw: &$raw,
                prefix: &str,
                span: Option<std::ops::Range<usize>>,
            ) -> Self {
                Self {
                    $(
                        $field: {
                            let at = $crate::config::check::KeyPath::new(prefix, section!(@key $field $(($key))?));
                            match &raw.$field {
                                Some(value) => section!(@read cx, at, value, $section, $field, $presence, $($read)+),
                                None => section!(@absent cx, at, span.clone(), $presence $(: $pval)?),
                            }
                        },
                    )*
                }
            }

            /// [`Self::read`] of the table at the section's own name, which
            /// may be absent (every key then takes its default).
            #[allow(dead_code, reason = "an array of tables is read entry by entry")]
            pub(super) fn read_table(
                cx: &mut $crate::config::check::Checker<'_>,
                raw: Option<&toml::Spanned<$raw>>,
            ) -> Self {
                let empty = $raw::default();
                let (raw, span) = raw.map_or((&empty, None), |r| (r.get_ref(), Some(r.span())));
                Self::read(cx, raw, $section, span)
            }

            /// The typed section, when every key could be read.
            pub(super) fn complete(self) -> Option<$name> {
                Some($name { $( $field: self.$field?, )* })
            }
        }
    };

    (@key $field:ident) => { stringify!($field) };
    (@key $field:ident ($key:literal)) => { $key };

    (@default default: $value:expr) => { Some($value) };
    (@default optional) => { Some(None) };
    (@default required) => { None };
    (@default absent: $f:expr) => { None };

    (@absent $cx:ident, $at:ident, $span:expr, default: $value:expr) => { Some($value) };
    (@absent $cx:ident, $at:ident, $span:expr, optional) => { Some(None) };
    (@absent $cx:ident, $at:ident, $span:expr, required) => {{
        $cx.missing($at, $span);
        None
    }};
    (@absent $cx:ident, $at:ident, $span:expr, absent: $f:expr) => { ($f)($cx, $at, $span) };

    (@read $cx:ident, $at:ident, $value:ident, $section:literal, $field:ident, optional, $($read:tt)+) => {
        section!(@value $cx, $at, $value, $section, $field, $($read)+).map(Some)
    };
    (@read $cx:ident, $at:ident, $value:ident, $section:literal, $field:ident, $presence:ident, $($read:tt)+) => {
        section!(@value $cx, $at, $value, $section, $field, $($read)+)
    };

    (@value $cx:ident, $at:ident, $value:ident, $section:literal, $field:ident, duration($min:expr, $max:expr)) => {
        $cx.duration($at, $value, &section!(@bounds $section, $field, $min, $max))
    };
    (@value $cx:ident, $at:ident, $value:ident, $section:literal, $field:ident, integer($min:expr, $max:expr)) => {
        $cx.integer($at, $value, &section!(@bounds $section, $field, $min, $max))
            .map($crate::config::check::FromU64::from_u64)
    };
    (@value $cx:ident, $at:ident, $value:ident, $section:literal, $field:ident, rate($min:expr, $max:expr)) => {
        $cx.rate($at, $value, &section!(@bounds $section, $field, $min, $max))
    };
    (@value $cx:ident, $at:ident, $value:ident, $section:literal, $field:ident, $f:expr) => {
        ($f)($cx, $at, $value)
    };

    (@bound $section:literal, $field:ident, duration($min:expr, $max:expr)) => {
        $crate::config::bounds::Bounded::Duration(section!(@bounds $section, $field, $min, $max))
    };
    (@bound $section:literal, $field:ident, integer($min:expr, $max:expr)) => {
        $crate::config::bounds::Bounded::Integer(section!(@bounds $section, $field, $min, $max))
    };
    (@bound $section:literal, $field:ident, rate($min:expr, $max:expr)) => {
        $crate::config::bounds::Bounded::Rate(section!(@bounds $section, $field, $min, $max))
    };
    (@bound $section:literal, $field:ident, $($other:tt)+) => { $crate::config::bounds::Bounded::None };

    (@bounds $section:literal, $field:ident, $min:expr, $max:expr) => {
        $crate::config::bounds::Bounds { key: concat!($section, ".", stringify!($field)), min: $min, max: $max }
    };
}

pub(super) use section;
