//! The adapter's part of the status document: holds in progress and the poke coalescer's state.

use tokio::time::Instant;

use super::service::Shared;
use crate::status::{self, AdapterStatus, Document, PokedRevision};

/// Reads the adapter's counters and coalescer table when the page asks.
#[derive(Debug)]
pub(crate) struct AdapterSource(pub(crate) Shared);

/// Coalescer entries read per document: bounds the time the page holds the coalescer's lock
/// (one entry per autoscaler and revision; the table holds up to 65,536).
const MAX_ENTRIES: usize = 4 * status::MAX_REVISIONS;

impl status::Source for AdapterSource {
    fn fill(&self, doc: &mut Document) {
        let f = self.0.status(MAX_ENTRIES);
        let now = Instant::now();
        // One line per revision (it may have been poked at several autoscalers): the newest.
        let mut recent = f.recent;
        recent.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        recent.dedup_by(|later, first| later.0 == first.0);
        let (recent, _) = status::first_revisions(recent, |r| r.0.clone());
        let (holds_in_progress, holds_total, holds_expired) = f.holds;
        let (pokes_forwarded, pokes_coalesced, pokes_overflow) = f.pokes;
        doc.adapter = Some(AdapterStatus {
            holds_in_progress,
            holds_total,
            holds_expired,
            pokes_forwarded,
            pokes_coalesced,
            pokes_overflow,
            // Entries are per autoscaler and revision: with one autoscaler, revisions.
            revisions_total: f.poked,
            revisions_truncated: f.poked.saturating_sub(recent.len()),
            revisions: recent
                .into_iter()
                .map(|(key, at)| PokedRevision {
                    namespace: key.namespace().to_owned(),
                    name: key.name().to_owned(),
                    last_poke_seconds_ago: status::seconds(now.saturating_duration_since(at)),
                })
                .collect(),
        });
    }
}
