//! Probes answered by the activator itself: kubelet health and Knative network probes.
//!
//! Knative's activator Deployment sends both its readiness and its liveness probe to the data
//! port (8012, path `/`, User-Agent `kube-probe/…`), whatever the Host; Knative answers them
//! before any routing, kubelet first, then `K-Network-Probe`. So do we.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use super::{error::Error, headers::name};
use crate::admin::Readiness;

static NETWORK_PROBE: HeaderName = HeaderName::from_static(name::NETWORK_PROBE);
static NETWORK_HASH: HeaderName = HeaderName::from_static(name::NETWORK_HASH);
static KUBELET_PROBE: HeaderName = HeaderName::from_static(name::KUBELET_PROBE);

/// Answers the request if it is a probe; `None` lets it through to the proxy.
pub(crate) fn answer(
    headers: &HeaderMap,
    readiness: &Readiness,
) -> Option<Result<Response<Full<Bytes>>, Error>> {
    if is_kubelet_probe(headers) {
        // The same answer as `/readyz`: not before every listener is bound and discovery has
        // listed once (Knative's activator does not listen before its informers sync), never
        // while draining. Knative answers 500 when unhealthy.
        let (status, body) = if readiness.is_ready() {
            (StatusCode::OK, "ok")
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, "not ready")
        };
        return Some(Ok(respond(status, body)));
    }
    let probe = headers.get(&NETWORK_PROBE)?;
    Some(match probe.as_bytes() {
        b"" => return None,
        b"activator" => Ok(respond(StatusCode::OK, "activator")),
        b"probe" => match headers.get(&NETWORK_HASH).filter(|h| !h.is_empty()) {
            Some(hash) => {
                let mut resp = respond(StatusCode::OK, "");
                resp.headers_mut()
                    .insert(NETWORK_HASH.clone(), hash.clone());
                Ok(resp)
            }
            None => Err(Error::ProbeWithoutHash),
        },
        _ => Err(Error::BadProbe(probe.clone())),
    })
}

fn is_kubelet_probe(headers: &HeaderMap) -> bool {
    headers
        .get(header::USER_AGENT)
        .is_some_and(|ua| ua.as_bytes().starts_with(super::headers::KUBE_PROBE_AGENT))
        || headers.get(&KUBELET_PROBE).is_some_and(|v| !v.is_empty())
}

fn respond(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::Drain;

    fn ask(pairs: &[(&'static str, &'static str)], ready: &Readiness) -> Option<Result<u16, u16>> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        answer(&h, ready).map(|r| {
            r.map(|r| r.status().as_u16())
                .map_err(|e| e.status().as_u16())
        })
    }

    #[test]
    fn network_and_kubelet_probes() {
        let drain = Drain::new();
        let d = Readiness::new(drain.clone());
        // Before start-up completes, kubelet probes fail; network probes are answered.
        assert_eq!(ask(&[("user-agent", "kube-probe/1.30")], &d), Some(Ok(500)));
        assert_eq!(ask(&[("k-network-probe", "activator")], &d), Some(Ok(200)));
        d.set_started();
        // Until discovery has listed once (discovery: kubernetes).
        let gate = d.sync_gate();
        assert_eq!(ask(&[("user-agent", "kube-probe/1.30")], &d), Some(Ok(500)));
        gate.release();
        assert_eq!(ask(&[], &d), None);
        assert_eq!(ask(&[("k-network-probe", "activator")], &d), Some(Ok(200)));
        assert_eq!(ask(&[("k-network-probe", "probe")], &d), Some(Err(400)));
        assert_eq!(
            ask(
                &[("k-network-probe", "probe"), ("k-network-hash", "abc")],
                &d
            ),
            Some(Ok(200))
        );
        assert_eq!(ask(&[("k-network-probe", "queue")], &d), Some(Err(400)));
        assert_eq!(ask(&[("user-agent", "kube-probe/1.30")], &d), Some(Ok(200)));
        assert_eq!(ask(&[("k-kubelet-probe", "1")], &d), Some(Ok(200)));
        // Kubelet first, as in Knative: a kubelet probe with a network probe header is a
        // kubelet probe.
        assert_eq!(
            ask(
                &[
                    ("user-agent", "kube-probe/1.30"),
                    ("k-network-probe", "queue")
                ],
                &d
            ),
            Some(Ok(200))
        );
        // Not the kubelet: the prefix is case-sensitive, as Go's strings.HasPrefix; an empty
        // K-Kubelet-Probe does not count.
        assert_eq!(ask(&[("user-agent", "Kube-Probe/1.30")], &d), None);
        assert_eq!(ask(&[("k-kubelet-probe", "")], &d), None);
        drain.start_draining();
        assert_eq!(ask(&[("user-agent", "kube-probe/1.30")], &d), Some(Ok(500)));
        assert_eq!(ask(&[("k-kubelet-probe", "1")], &d), Some(Ok(500)));
        // Network probes are about routing, not readiness.
        assert_eq!(ask(&[("k-network-probe", "activator")], &d), Some(Ok(200)));
    }
}
