//! One declaration per metric: [`metric_set!`] writes a struct of metrics
//! from one line each (field, name, help, labels, buckets) and the function
//! that creates and registers them all, so a metric cannot be declared
//! without being registered, nor registered under a second name.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

/// What a metric is: its name (without the registry's prefix), its help
/// text, its label names and, for a histogram, its buckets.
pub(crate) struct Def {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    pub buckets: &'static [f64],
}

impl Def {
    fn opts(&self) -> Opts {
        Opts::new(self.name, self.help)
    }

    fn histogram_opts(&self) -> HistogramOpts {
        HistogramOpts::new(self.name, self.help).buckets(self.buckets.to_vec())
    }
}

/// A Prometheus metric type made from a [`Def`].
pub(crate) trait Declare: Sized {
    /// The metric `def` describes.
    ///
    /// # Errors
    /// An invalid name, help or label set.
    fn declare(def: &Def) -> prometheus::Result<Self>;
}

impl Declare for IntCounter {
    fn declare(def: &Def) -> prometheus::Result<Self> {
        Self::with_opts(def.opts())
    }
}

impl Declare for IntGauge {
    fn declare(def: &Def) -> prometheus::Result<Self> {
        Self::with_opts(def.opts())
    }
}

impl Declare for Gauge {
    fn declare(def: &Def) -> prometheus::Result<Self> {
        Self::with_opts(def.opts())
    }
}

impl Declare for Histogram {
    fn declare(def: &Def) -> prometheus::Result<Self> {
        Self::with_opts(def.histogram_opts())
    }
}

impl Declare for IntCounterVec {
    fn declare(def: &Def) -> prometheus::Result<Self> {
        Self::new(def.opts(), def.labels)
    }
}

impl Declare for IntGaugeVec {
    fn declare(def: &Def) -> prometheus::Result<Self> {
        Self::new(def.opts(), def.labels)
    }
}

impl Declare for GaugeVec {
    fn declare(def: &Def) -> prometheus::Result<Self> {
        Self::new(def.opts(), def.labels)
    }
}

impl Declare for HistogramVec {
    fn declare(def: &Def) -> prometheus::Result<Self> {
        Self::new(def.histogram_opts(), def.labels)
    }
}

/// A struct of metrics, each declared once:
///
/// ```text
/// metric_set! {
///     /// Doc of the struct.
///     pub(super) struct Requests {
///         /// Doc of the field.
///         requests: IntCounterVec = ("aws_requests_total", "Help.", labels ["operation", "outcome"]),
///         duration: Histogram = ("aws_request_duration_seconds", "Help.", buckets BUCKETS),
///     }
/// }
/// ```
///
/// gives the struct and `register(&Registry) -> prometheus::Result<Self>`,
/// which creates every metric and registers it.
macro_rules! metric_set {
    (@buckets) => { &[] };
    (@buckets $buckets:expr) => { &$buckets };
    (
        $(#[$meta:meta])*
        $vis:vis struct $set:ident {
            $(
                $(#[$field_meta:meta])*
                $field:ident: $ty:ty = (
                    $name:literal, $help:expr
                    $(, labels [$($label:literal),* $(,)?])?
                    $(, buckets $buckets:expr)?
                )
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $set {
            $($(#[$field_meta])* pub(super) $field: $ty,)*
        }

        impl $set {
            /// Every metric of the set, created and registered in `registry`.
            ///
            /// # Errors
            /// An invalid definition, or a name registered already.
            pub(super) fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
                let set = Self {
                    $($field: <$ty as $crate::metrics::declare::Declare>::declare(&$crate::metrics::declare::Def {
                        name: $name,
                        help: $help,
                        labels: &[$($($label),*)?],
                        buckets: $crate::metrics::declare::metric_set!(@buckets $($buckets)?),
                    })?,)*
                };
                $(registry.register(Box::new(set.$field.clone()))?;)*
                Ok(set)
            }

            /// The names of the set's metrics, without the prefix.
            #[cfg(test)]
            pub(super) const NAMES: &'static [&'static str] = &[$($name),*];
        }
    };
}

pub(crate) use metric_set;
