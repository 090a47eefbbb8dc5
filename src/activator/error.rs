//! Request errors of the activator, and the one place they become HTTP status codes.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
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
    #[error("activator request timeout")]
    RevisionTimeout,
    #[error("upstream {addr}: {source}")]
    Upstream {
        addr: SocketAddr,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("cannot build the upstream request: {0}")]
    Rewrite(#[from] http::Error),
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
            Self::QueueFull | Self::QueueTimeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::RevisionTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::Rewrite(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The throttler rejection reason for `kactivator_queue_rejections_total`, if any.
    pub fn rejection(&self) -> Option<&'static str> {
        match self {
            Self::QueueFull => Some("queue_full"),
            Self::QueueTimeout => Some("queue_timeout"),
            _ => None,
        }
    }

    /// The response sent to the client: status, `Retry-After` on throttling, the message.
    pub(crate) fn to_response(&self) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(Bytes::from(self.to_string())));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
