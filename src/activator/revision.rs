//! Which revision a request is for: `Knative-Serving-*` headers, else the Host.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Uri, header};

pub(crate) use crate::revision::from_service_host;
use crate::revision::strip_port;

use super::headers::name;

pub(crate) static REVISION_HEADER: HeaderName = HeaderName::from_static(name::REVISION);
pub(crate) static NAMESPACE_HEADER: HeaderName = HeaderName::from_static(name::NAMESPACE);

/// `(namespace, name)` from the `Knative-Serving-Namespace` and `-Revision` headers, when
/// both are present and non-empty.
pub(crate) fn from_headers(headers: &HeaderMap) -> Option<(&str, &str)> {
    let name = headers.get(&REVISION_HEADER)?.to_str().ok()?;
    let namespace = headers.get(&NAMESPACE_HEADER)?.to_str().ok()?;
    (!name.is_empty() && !namespace.is_empty()).then_some((namespace, name))
}

/// The request's host, lowercased, without port: the Host header, else the URI authority
/// (HTTP/2 `:authority`).
pub(crate) fn host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<Cow<'a, str>> {
    let raw = match headers.get(header::HOST) {
        Some(h) => h.to_str().ok()?,
        None => uri.authority()?.as_str(),
    };
    Some(normalize_host(raw))
}

/// A Host value as routes are keyed: lowercase, without port, without the trailing dot of
/// a fully qualified name (`hello.example.com.` is `hello.example.com`).
pub(crate) fn normalize_host(raw: &str) -> Cow<'_, str> {
    let host = strip_port(raw);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn headers_name_the_revision_when_both_are_set() {
        let mut h = HeaderMap::new();
        h.insert(&REVISION_HEADER, HeaderValue::from_static("hello-00001"));
        assert_eq!(from_headers(&h), None);
        h.insert(&NAMESPACE_HEADER, HeaderValue::from_static("prod"));
        assert_eq!(from_headers(&h), Some(("prod", "hello-00001")));
        h.insert(&NAMESPACE_HEADER, HeaderValue::from_static(""));
        assert_eq!(from_headers(&h), None);
    }

    #[test]
    fn service_hosts_in_every_form() {
        let d = "cluster.local";
        assert_eq!(from_service_host("hello.prod", d), Some(("prod", "hello")));
        assert_eq!(
            from_service_host("hello.prod.svc", d),
            Some(("prod", "hello"))
        );
        assert_eq!(
            from_service_host("hello.prod.svc.cluster.local", d),
            Some(("prod", "hello"))
        );
        assert_eq!(
            from_service_host("hello.prod.svc.cluster.local.", d),
            Some(("prod", "hello"))
        );
        assert_eq!(from_service_host("hello.prod.svc.other.domain", d), None);
        assert_eq!(from_service_host("hello.prod.com", d), None);
        assert_eq!(from_service_host("hello", d), None);
        assert_eq!(from_service_host(".prod", d), None);
    }

    #[test]
    fn host_is_lowercased_and_loses_its_port() {
        let uri = Uri::from_static("/");
        let mut h = HeaderMap::new();
        h.insert(
            header::HOST,
            HeaderValue::from_static("Hello.Prod.svc.cluster.local:8080"),
        );
        assert_eq!(
            host(&h, &uri).as_deref(),
            Some("hello.prod.svc.cluster.local")
        );
        h.insert(header::HOST, HeaderValue::from_static("[::1]:80"));
        assert_eq!(host(&h, &uri).as_deref(), Some("::1"));
        // HTTP/2 carries it in :authority.
        let uri = Uri::from_static("http://api.example.com:443/x");
        assert_eq!(
            host(&HeaderMap::new(), &uri).as_deref(),
            Some("api.example.com")
        );
        assert_eq!(host(&HeaderMap::new(), &Uri::from_static("/x")), None);
    }
}
