//! The metrics of the calls the front answers itself, kept natively (issue #18): each call is added to
//! totals per label set as it ends (one short lock and a few map lookups; nothing is allocated once a
//! label set has been seen), and Python's Prometheus metrics take the totals when they are collected
//! (`server/metrics.py` `ServerMetrics.add_native`). What is held is bounded by the label sets (methods,
//! status codes, the registry's callers, entities, FGs, stores), never by the number of calls, so no
//! call goes uncounted however long nobody collects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use ofs_core::tiers::ReadReport;
use tonic::Code;

/// The caller labels of the metrics (`server/metrics.py` `ANONYMOUS`, `UNKNOWN`).
#[derive(Debug, Clone)]
pub struct CallerLabels {
    pub anonymous: String,
    pub unknown: String,
}

/// How the front's metrics are labelled and bucketed: as `server/metrics.py` declares them.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub labels: CallerLabels,
    /// Upper bounds of the latency histograms, seconds, ascending (`LATENCY_BUCKETS`; `+Inf` implied).
    pub latency_bounds: Vec<f64>,
    /// Upper bounds of the keys-per-call histogram, ascending (`ROWS_BUCKETS`; `+Inf` implied).
    pub rows_bounds: Vec<f64>,
}

impl MetricsConfig {
    /// Checks the bounds: finite and strictly ascending.
    pub fn check(&self) -> Result<(), String> {
        for (name, bounds) in [("latency", &self.latency_bounds), ("rows", &self.rows_bounds)] {
            if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("{name} bucket bounds must be finite and strictly ascending: {bounds:?}"));
            }
        }
        Ok(())
    }
}

/// Observations of a histogram: per bucket (not cumulative: bucket `i` counts values `v <= bounds[i]`
/// above the bucket before it; the last one, `+Inf`, the values above every bound) and their sum, as
/// `prometheus_client`'s `Histogram.observe` keeps them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.counts.len() != bounds.len() + 1 {
            self.counts = vec![0; bounds.len() + 1];
        }
        self.counts[bounds.partition_point(|b| *b < value)] += 1;
        self.sum += value;
    }
}

/// One entity's totals.
#[derive(Debug, Clone, Default)]
pub struct EntityTotals {
    /// Per method: latency and keys per call.
    pub methods: HashMap<&'static str, (Histogram, Histogram)>,
    /// Per FG label: rows found, missing, expired.
    pub fgs: HashMap<String, [u64; 3]>,
    /// Keys looked up in the in-process cache: hits, misses.
    pub in_process: [u64; 2],
    /// Keys looked up in the distributed cache: hits, misses.
    pub distributed: [u64; 2],
}

/// Everything counted since the last take.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Calls per caller label, then per (method, status code).
    pub calls: HashMap<String, HashMap<(&'static str, Code), u64>>,
    /// Latency per method.
    pub seconds: HashMap<&'static str, Histogram>,
    /// Per entity of a planned retrieve.
    pub entities: HashMap<String, EntityTotals>,
    /// Per store id and op (`read`, `write`): latency and failed calls.
    pub stores: HashMap<String, HashMap<&'static str, (Histogram, u64)>>,
}

/// What one call answered here did, as it ends.
#[derive(Debug, Default)]
pub struct Outcome {
    pub caller: String,
    /// `(entity, keys)` once the request was planned (a persist: its distinct keys) and served natively.
    pub planned: Option<(String, usize)>,
    /// Per FG of a served retrieve: label, found, missing, expired.
    pub fgs: Vec<(String, u64, u64, u64)>,
    /// Cache lookups and store calls of its read (a persist: its store writes).
    pub report: ReadReport,
}

/// The front's metrics: totals since the last take, and the calls in flight.
#[derive(Debug)]
pub struct Metrics {
    pub config: MetricsConfig,
    totals: Mutex<Totals>,
    in_flight: AtomicI64,
}

fn entry<'m, V: Default>(map: &'m mut HashMap<String, V>, key: &str) -> &'m mut V {
    // Looked up by `&str` first: a label set seen before allocates nothing.
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

impl Metrics {
    pub fn new(config: MetricsConfig) -> Metrics {
        Metrics { config, totals: Mutex::default(), in_flight: AtomicI64::new(0) }
    }

    /// A call starts here; the guard ends it.
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// The calls being answered here now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a call of `method` that ended with `code` after `seconds`.
    pub fn count(&self, method: &'static str, call: &Outcome, code: Code, seconds: f64) {
        let config = &self.config;
        let mut totals = self.totals.lock().expect("metrics lock");
        let totals = &mut *totals;
        *entry(&mut totals.calls, &call.caller).entry((method, code)).or_default() += 1;
        totals.seconds.entry(method).or_default().observe(&config.latency_bounds, seconds);
        if let Some((entity, keys)) = &call.planned {
            let e = entry(&mut totals.entities, entity);
            let (latency, rows) = e.methods.entry(method).or_default();
            latency.observe(&config.latency_bounds, seconds);
            rows.observe(&config.rows_bounds, *keys as f64);
            for (tier, seen) in
                [(&mut e.in_process, call.report.in_process), (&mut e.distributed, call.report.distributed)]
            {
                if let Some((hits, misses)) = seen {
                    tier[0] += hits;
                    tier[1] += misses;
                }
            }
            for (fg, found, missing, expired) in &call.fgs {
                let rows = entry(&mut e.fgs, fg);
                rows[0] += found;
                rows[1] += missing;
                rows[2] += expired;
            }
        }
        for store in &call.report.store_calls {
            let (latency, failed) = entry(&mut totals.stores, &store.store_id).entry(store.op).or_default();
            latency.observe(&config.latency_bounds, store.seconds);
            *failed += u64::from(store.failed);
        }
    }

    /// The totals since the last take, and zero from now on.
    pub fn take(&self) -> Totals {
        std::mem::take(&mut *self.totals.lock().expect("metrics lock"))
    }
}

/// A call in flight ([`Metrics::begin`]); dropped when it ends.
#[derive(Debug)]
pub struct InFlight<'m>(&'m AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use ofs_core::tiers::StoreCall;

    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(MetricsConfig {
            labels: CallerLabels { anonymous: "anonymous".into(), unknown: "unknown".into() },
            latency_bounds: vec![0.001, 0.01],
            rows_bounds: vec![1.0, 10.0],
        })
    }

    #[test]
    fn histogram_buckets_as_prometheus_observes() {
        let mut h = Histogram::default();
        for v in [0.0005, 0.001, 0.002, 0.01, 5.0] {
            h.observe(&[0.001, 0.01], v);
        }
        // v <= 0.001: two; (0.001, 0.01]: two; above: one.
        assert_eq!(h.counts, [2, 2, 1]);
        assert!((h.sum - 5.0135).abs() < 1e-12);
    }

    #[test]
    fn counts_per_label_set_and_takes_them_once() {
        let m = metrics();
        let call = Outcome {
            caller: "r".into(),
            planned: Some(("user".into(), 5)),
            fgs: vec![("user:fg".into(), 3, 1, 1)],
            report: ReadReport {
                in_process: Some((2, 3)),
                distributed: None,
                store_calls: vec![StoreCall { store_id: "s".into(), op: "read", seconds: 0.002, failed: true }],
            },
        };
        m.count("RetrieveFeatures", &call, Code::Ok, 0.0005);
        m.count("RetrieveFeatures", &call, Code::Ok, 0.005);
        m.count(
            "RetrieveFeatures",
            &Outcome { caller: "anonymous".into(), ..Outcome::default() },
            Code::Unauthenticated,
            0.0,
        );
        let t = m.take();
        assert_eq!(t.calls["r"][&("RetrieveFeatures", Code::Ok)], 2);
        assert_eq!(t.calls["anonymous"][&("RetrieveFeatures", Code::Unauthenticated)], 1);
        assert_eq!(t.seconds["RetrieveFeatures"].counts, [2, 1, 0]);
        let user = &t.entities["user"];
        let (latency, rows) = &user.methods["RetrieveFeatures"];
        assert_eq!(
            (latency.counts.as_slice(), rows.counts.as_slice(), rows.sum),
            ([1, 1, 0].as_slice(), [0, 2, 0].as_slice(), 10.0)
        );
        assert_eq!((user.fgs["user:fg"], user.in_process, user.distributed), ([6, 2, 2], [4, 6], [0, 0]));
        let read = &t.stores["s"]["read"];
        assert_eq!((read.0.counts.as_slice(), read.1), ([0, 2, 0].as_slice(), 2));
        assert!(m.take().calls.is_empty(), "taken once");
    }

    #[test]
    fn in_flight_follows_the_guards() {
        let m = metrics();
        let (a, b) = (m.begin(), m.begin());
        assert_eq!(m.in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(m.in_flight(), 0);
    }

    #[test]
    fn refuses_bounds_out_of_order() {
        let mut m = metrics().config;
        assert!(m.check().is_ok());
        m.rows_bounds = vec![2.0, 1.0];
        assert!(m.check().unwrap_err().contains("rows bucket bounds"));
        m.rows_bounds = vec![1.0, f64::INFINITY];
        assert!(m.check().is_err());
    }
}
