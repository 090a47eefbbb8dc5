//! Request errors of the activator, and the one place they become HTTP status codes.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// Why a request was not proxied, or failed while being proxied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("request header fields too large")]
    HeadersTooLarge,
    #[error("unexpected probe header value: {0:?}")]
    BadProbe(HeaderValue),
    #[error("a probe request must contain a non-empty \"K-Network-Hash\" header")]
    ProbeWithoutHash,
    #[error("no revision matches this request")]
    UnknownRevision,
    #[error("pending request queue full")]
    QueueFull,
    #[error("timed out waiting for capacity")]
    QueueTimeout,
    /// The revision went away (deleted in the Kubernetes API, or dropped from the config) while
    /// the request waited for it.
    #[error("revision deleted while the request waited")]
    RevisionGone,
    /// The revision's `timeout` (the whole request) ran out.
    #[error("activator request timeout")]
    RevisionTimeout,
    /// No response head within the revision's `response_start_timeout`.
    #[error("activator response start timeout")]
    ResponseStartTimeout,
    /// Nothing written to the client for the revision's `idle_timeout`.
    #[error("activator idle timeout")]
    IdleTimeout,
    // Causes are part of the messages, not `source()`s: a chain printer would repeat them.
    #[error("upstream {addr}: {error}")]
    Upstream {
        addr: SocketAddr,
        error: hyper_util::client::legacy::Error,
    },
    /// The fast path's equivalent of `Upstream`: the pod's connection failed or answered
    /// something that is not HTTP/1.1.
    #[error("upstream {addr}: {error}")]
    UpstreamIo {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot build the upstream request: {0}")]
    Rewrite(http::Error),
}

impl Error {
    /// The status code answered for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::BadProbe(_) | Self::ProbeWithoutHash => {
                StatusCode::BAD_REQUEST
            }
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UnknownRevision => StatusCode::NOT_FOUND,
            Self::QueueFull | Self::QueueTimeout | Self::RevisionGone => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RevisionTimeout | Self::ResponseStartTimeout | Self::IdleTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::Upstream { .. } | Self::UpstreamIo { .. } => StatusCode::BAD_GATEWAY,
            Self::Rewrite(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The throttler rejection reason for `kactivator_queue_rejections_total`, if any.
    pub fn rejection(&self) -> Option<&'static str> {
        match self {
            Self::QueueFull => Some("queue_full"),
            Self::QueueTimeout => Some("queue_timeout"),
            Self::RevisionGone => Some("revision_deleted"),
            _ => None,
        }
    }

    /// Whether the client connection must close after this answer: after a malformed
    /// request, the rest of what the client sent cannot be trusted to start a request.
    pub(crate) fn closes_connection(&self) -> bool {
        matches!(self, Self::BadRequest(_))
    }

    /// What the client is answered: status, headers (`Retry-After` on throttling) and the
    /// message. Both the general path and the HTTP/1.1 fast path answer from this.
    ///
    /// The message never names a pod or the inner error (those go to the log): a client
    /// learns nothing of the cluster's addresses.
    pub(crate) fn response_parts(&self) -> (StatusCode, HeaderMap, Bytes) {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.closes_connection() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let body = match self {
            Self::Upstream { .. } | Self::UpstreamIo { .. } => {
                Bytes::from_static(b"upstream request failed")
            }
            Self::Rewrite(_) => Bytes::from_static(b"internal error"),
            // One message for the three, as Knative answers them (the log tells them apart).
            Self::RevisionTimeout | Self::ResponseStartTimeout | Self::IdleTimeout => {
                Bytes::from_static(b"activator request timeout")
            }
            other => Bytes::from(other.to_string()),
        };
        (self.status(), headers, body)
    }

    /// The response sent to the client.
    pub(crate) fn to_response(&self) -> Response<Full<Bytes>> {
        let (status, headers, body) = self.response_parts();
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }
}

impl From<http::Error> for Error {
    fn from(error: http::Error) -> Self {
        Self::Rewrite(error)
    }
}
