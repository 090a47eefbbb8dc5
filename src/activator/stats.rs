//! Per-revision metric handles, built once per revision so requests never build label sets.

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram, Label};

use crate::{metrics as names, revision::RevisionKey};

/// Status codes 100..=599 get a lazily built counter each.
const CODES: usize = 500;

/// `kactivator_requests_total` counters by status code, for one label set.
#[derive(Debug)]
pub(crate) struct Codes {
    labels: Vec<Label>,
    counters: Box<[OnceLock<Counter>]>,
}

impl Codes {
    pub(crate) fn new(labels: Vec<Label>) -> Self {
        Self {
            labels,
            counters: (0..CODES).map(|_| OnceLock::new()).collect(),
        }
    }

    pub(crate) fn count(&self, code: u16) {
        let Some(slot) = usize::from(code)
            .checked_sub(100)
            .and_then(|i| self.counters.get(i))
        else {
            return;
        };
        slot.get_or_init(|| {
            let mut labels = self.labels.clone();
            labels.push(Label::new("code", code.to_string()));
            metrics::counter!(names::REQUESTS, labels)
        })
        .increment(1);
    }
}

/// Every metric a request of one revision touches.
#[derive(Debug)]
pub(crate) struct RevisionStats {
    pub(crate) queued: Gauge,
    pub(crate) active: Gauge,
    pub(crate) duration: Histogram,
    pub(crate) cold_start: Histogram,
    pub(crate) retries: Counter,
    queue_full: Counter,
    queue_timeout: Counter,
    pub(crate) codes: Codes,
}

impl RevisionStats {
    pub(crate) fn new(key: &RevisionKey) -> Self {
        let labels = vec![
            Label::new(names::LABEL_NAMESPACE, key.namespace().to_owned()),
            Label::new(names::LABEL_REVISION, key.name().to_owned()),
        ];
        let with = |k: &'static str, v: &'static str| {
            let mut l = labels.clone();
            l.push(Label::new(k, v));
            l
        };
        Self {
            queued: metrics::gauge!(names::REVISION_REQUEST_QUEUED, labels.clone()),
            active: metrics::gauge!(names::REVISION_REQUEST_ACTIVE, labels.clone()),
            duration: metrics::histogram!(names::REQUEST_DURATION, labels.clone()),
            cold_start: metrics::histogram!(names::COLD_START, labels.clone()),
            retries: metrics::counter!(names::RETRIES, labels.clone()),
            queue_full: metrics::counter!(names::QUEUE_REJECTIONS, with("reason", "queue_full")),
            queue_timeout: metrics::counter!(
                names::QUEUE_REJECTIONS,
                with("reason", "queue_timeout")
            ),
            codes: Codes::new(labels),
        }
    }

    pub(crate) fn rejected(&self, reason: &str) {
        match reason {
            "queue_full" => self.queue_full.increment(1),
            _ => self.queue_timeout.increment(1),
        }
    }
}

/// Increments a gauge now and decrements it on drop.
#[derive(Debug)]
pub(crate) struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub(crate) fn new(gauge: &Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
