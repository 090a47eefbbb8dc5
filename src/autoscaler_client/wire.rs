//! Stats frames on the wire: protobuf `WireStatMessages` batches and gob `StatMessage`s.

use prost::Message as _;

use super::{
    Stat,
    gob::{self, GobStat},
};
use crate::{config::Encoding, proto::metrics as pb, revision::RevisionKey};

/// One received stat, whatever the encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub key: RevisionKey,
    pub pod_name: String,
    pub average_concurrent_requests: f64,
    pub average_proxied_concurrent_requests: f64,
    pub request_count: f64,
    pub proxied_request_count: f64,
}

impl Received {
    /// Concurrency attributable to the sender (Knative subtracts what queue-proxies also report).
    pub fn concurrency(&self) -> f64 {
        (self.average_concurrent_requests - self.average_proxied_concurrent_requests).max(0.0)
    }
}

/// A frame that is neither protobuf nor gob stats.
#[derive(Debug, thiserror::Error)]
#[error("frame is neither gob ({gob}) nor protobuf ({protobuf})")]
pub struct FrameError {
    gob: gob::GobError,
    protobuf: String,
}

/// Encodes one batch: a single protobuf frame, or one gob frame per stat.
pub fn encode(encoding: Encoding, stats: &[Stat], pod_name: &str) -> Vec<Vec<u8>> {
    match encoding {
        Encoding::Protobuf => vec![encode_protobuf(stats, pod_name)],
        Encoding::Gob => stats.iter().map(|s| encode_gob(s, pod_name)).collect(),
    }
}

/// `WireStatMessages`; `stat` is always present (the autoscaler drops messages without it).
pub fn encode_protobuf(stats: &[Stat], pod_name: &str) -> Vec<u8> {
    pb::WireStatMessages {
        messages: stats
            .iter()
            .map(|s| pb::WireStatMessage {
                namespace: s.key.namespace().to_owned(),
                name: s.key.name().to_owned(),
                stat: Some(pb::Stat {
                    pod_name: pod_name.to_owned(),
                    average_concurrent_requests: s.average_concurrent_requests,
                    request_count: s.request_count,
                    ..pb::Stat::default()
                }),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// One gob `StatMessage` with `Key = "namespace/name"`.
pub fn encode_gob(stat: &Stat, pod_name: &str) -> Vec<u8> {
    gob::encode(
        &stat.key.to_string(),
        &GobStat {
            pod_name: pod_name.to_owned(),
            average_concurrent_requests: stat.average_concurrent_requests,
            request_count: stat.request_count,
            ..GobStat::default()
        },
    )
}

/// Decodes a binary frame of either encoding (detected per frame).
///
/// Gob is tried first: it is strict (complete type definitions, named fields, nothing left
/// over), whereas protobuf accepts many byte strings. A protobuf frame must carry at least one
/// message with a `stat` and a key, otherwise the frame is garbage.
pub fn decode(frame: &[u8]) -> Result<(Encoding, Vec<Received>), FrameError> {
    let gob_error = match gob::decode(frame) {
        Ok(stats) => return Ok((Encoding::Gob, stats.into_iter().map(from_gob).collect())),
        Err(e) => e,
    };
    let fail = |protobuf: String| FrameError {
        gob: gob_error.clone(),
        protobuf,
    };
    let batch = pb::WireStatMessages::decode(frame).map_err(|e| fail(e.to_string()))?;
    let stats: Vec<Received> = batch
        .messages
        .into_iter()
        .filter_map(|m| {
            // Knative skips entries without a stat ("future schema changes").
            let stat = m.stat?;
            if m.namespace.is_empty() || m.name.is_empty() {
                return None;
            }
            Some(Received {
                key: RevisionKey::new(&m.namespace, &m.name),
                pod_name: stat.pod_name,
                average_concurrent_requests: finite(stat.average_concurrent_requests),
                average_proxied_concurrent_requests: finite(
                    stat.average_proxied_concurrent_requests,
                ),
                request_count: finite(stat.request_count),
                proxied_request_count: finite(stat.proxied_request_count),
            })
        })
        .collect();
    if stats.is_empty() {
        return Err(fail("no message with a key and a stat".into()));
    }
    Ok((Encoding::Protobuf, stats))
}

fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

fn from_gob(s: GobStat) -> Received {
    Received {
        key: RevisionKey::new(&s.namespace, &s.name),
        pod_name: s.pod_name,
        average_concurrent_requests: s.average_concurrent_requests,
        average_proxied_concurrent_requests: s.average_proxied_concurrent_requests,
        request_count: s.request_count,
        proxied_request_count: s.proxied_request_count,
    }
}

#[cfg(test)]
mod tests;
