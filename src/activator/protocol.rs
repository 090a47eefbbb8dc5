//! The HTTP version a request goes to its pod in, from the revision's protocol, the client's
//! version and what the picked pod was found to speak.

use http::Version;

use crate::{config::Protocol, endpoints::Speaks};

/// The upstream version of one attempt to a pod that speaks `speaks`.
///
/// Upgrades (websockets) exist only in HTTP/1.1. `http1` and `h2c` revisions get what they
/// configured. `auto` keeps the client's version when the pod speaks it and otherwise uses
/// the one the pod speaks, so that an HTTP/2 client reaches an HTTP/1.1-only app and an
/// HTTP/1.1 client an h2c-only one. A pod whose protocols are unknown (`Speaks::ANY`) gets
/// the client's version.
pub(crate) fn upstream(
    protocol: Protocol,
    client: Version,
    upgrade: bool,
    speaks: Speaks,
) -> Version {
    if upgrade {
        return Version::HTTP_11;
    }
    match protocol {
        Protocol::Http1 => Version::HTTP_11,
        Protocol::H2c => Version::HTTP_2,
        Protocol::Auto => {
            let http2_client = client == Version::HTTP_2;
            match (http2_client, speaks.http1, speaks.h2c) {
                (true, _, true) => Version::HTTP_2,
                (true, true, false) => Version::HTTP_11,
                // HTTP/1.0 stays HTTP/1.0, as hyper relays it.
                (false, true, _) => client,
                (false, false, true) => Version::HTTP_2,
                // Not a healthy pod's state; the client's version is as good a guess as any.
                (_, false, false) => client,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: Version = Version::HTTP_11;
    const H2: Version = Version::HTTP_2;

    #[test]
    fn configured_protocols_and_upgrades_ignore_the_pod() {
        for speaks in [Speaks::ANY, Speaks::HTTP1, Speaks::H2C] {
            for client in [H1, H2] {
                assert_eq!(upstream(Protocol::Http1, client, false, speaks), H1);
                assert_eq!(upstream(Protocol::H2c, client, false, speaks), H2);
            }
            for protocol in [Protocol::Auto, Protocol::Http1, Protocol::H2c] {
                assert_eq!(upstream(protocol, H1, true, speaks), H1);
            }
        }
    }

    #[test]
    fn auto_keeps_the_clients_version_when_the_pod_speaks_it_else_the_pods() {
        let auto = |client, speaks| upstream(Protocol::Auto, client, false, speaks);
        // Unknown (TCP probes) or both: the client's version, as before protocols were learned.
        assert_eq!(auto(H1, Speaks::ANY), H1);
        assert_eq!(auto(H2, Speaks::ANY), H2);
        assert_eq!(auto(Version::HTTP_10, Speaks::ANY), Version::HTTP_10);
        // An HTTP/2 client (curl --http2-prior-knowledge, gRPC) to an HTTP/1.1-only app.
        assert_eq!(auto(H2, Speaks::HTTP1), H1);
        // An HTTP/1.1 client to an h2c-only app (a gRPC server).
        assert_eq!(auto(H1, Speaks::H2C), H2);
        assert_eq!(auto(Version::HTTP_10, Speaks::H2C), H2);
        assert_eq!(auto(H2, Speaks::H2C), H2);
        assert_eq!(auto(H1, Speaks::HTTP1), H1);
        let none = Speaks {
            http1: false,
            h2c: false,
        };
        assert_eq!(auto(H2, none), H2);
    }
}
