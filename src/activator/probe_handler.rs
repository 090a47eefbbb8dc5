//! Probes answered by the activator itself: kubelet health and Knative network probes.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use super::{error::Error, headers::name};
use crate::drain::Drain;

static NETWORK_PROBE: HeaderName = HeaderName::from_static(name::NETWORK_PROBE);
static NETWORK_HASH: HeaderName = HeaderName::from_static(name::NETWORK_HASH);
static KUBELET_PROBE: HeaderName = HeaderName::from_static(name::KUBELET_PROBE);

/// Answers the request if it is a probe; `None` lets it through to the proxy.
pub(crate) fn answer(
    headers: &HeaderMap,
    drain: &Drain,
) -> Option<Result<Response<Full<Bytes>>, Error>> {
    if is_kubelet_probe(headers) {
        let (status, body) = if drain.is_draining() {
            (StatusCode::INTERNAL_SERVER_ERROR, "draining")
        } else {
            (StatusCode::OK, "ok")
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

    fn ask(pairs: &[(&'static str, &'static str)], drain: &Drain) -> Option<Result<u16, u16>> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        answer(&h, drain).map(|r| {
            r.map(|r| r.status().as_u16())
                .map_err(|e| e.status().as_u16())
        })
    }

    #[test]
    fn network_and_kubelet_probes() {
        let d = Drain::new();
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
        d.start_draining();
        assert_eq!(ask(&[("user-agent", "kube-probe/1.30")], &d), Some(Ok(500)));
        // Network probes are about routing, not readiness.
        assert_eq!(ask(&[("k-network-probe", "activator")], &d), Some(Ok(200)));
    }
}
