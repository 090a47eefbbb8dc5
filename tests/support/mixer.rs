//! Adapter fixtures: a raw-bytes gRPC codec, protobuf hand-encoding from field numbers,
//! gRPC channels (plain and TLS), test certificates, and a pod that answers /healthz.

use std::{net::SocketAddr, time::Duration};

use bytes::{Buf, BufMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

pub const AUTHORIZATION_PATH: &str =
    "/authorization.HandleAuthorizationService/HandleAuthorization";
pub const METRIC_PATH: &str = "/metric.HandleMetricService/HandleMetric";
pub const EXT_AUTHZ_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// A channel to the adapter over plaintext HTTP/2.
pub async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap()
}

/// Sends `body` as the request message of `path` and returns the raw response message.
pub async fn raw_call(
    channel: Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// A codec whose messages are the protobuf bytes themselves: what Mixer does (it encodes
/// requests from template descriptors and sends them with a raw codec).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

// === protobuf by hand ===

pub fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (wire type 2).
pub fn len_field(field: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(field << 3 | 2, &mut out);
    varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// A varint field (wire type 0).
pub fn varint_field(field: u64, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(field << 3, &mut out);
    varint(v, &mut out);
    out
}

/// A `map<string, M>` entry: `{key = 1, value = 2}`.
pub fn map_entry(field: u64, key: &str, value: &[u8]) -> Vec<u8> {
    len_field(
        field,
        &[len_field(1, key.as_bytes()), len_field(2, value)].concat(),
    )
}

/// `Any{type_url = 1, value = 2}` of `adapter.kactivator.config.Params{autoscaler_endpoint = 1}`.
pub fn params_any(endpoint: &str) -> Vec<u8> {
    [
        len_field(1, b"type.googleapis.com/adapter.kactivator.config.Params"),
        len_field(2, &len_field(1, endpoint.as_bytes())),
    ]
    .concat()
}

/// `authorization.HandleAuthorizationRequest` as Mixer encodes it.
pub fn authorization_request(namespace: &str, service: &str, endpoint: &str) -> Vec<u8> {
    let action = [
        len_field(1, namespace.as_bytes()),
        len_field(2, service.as_bytes()),
    ]
    .concat();
    let subject = len_field(1, b"spiffe://cluster.local/ns/default/sa/client");
    let instance = [
        len_field(72_295_727, b"kactivator.instance.istio-system"),
        len_field(1, &subject),
        len_field(2, &action),
    ]
    .concat();
    [
        len_field(1, &instance),
        len_field(2, &params_any(endpoint)),
        len_field(3, b"9223372036854775817"),
    ]
    .concat()
}

/// `metric.HandleMetricRequest` with one instance per `dims` set (string Values).
pub fn metric_request(instances: &[&[(&str, &str)]]) -> Vec<u8> {
    let mut out = Vec::new();
    for dims in instances {
        let mut inst = len_field(72_295_727, b"requestcount.instance.istio-system");
        inst.extend(len_field(1, &varint_field(2, 1))); // value: int64_value 1
        for (k, v) in *dims {
            inst.extend(map_entry(2, k, &len_field(1, v.as_bytes())));
        }
        out.extend(len_field(1, &inst));
    }
    out.extend(len_field(3, b"42"));
    out
}

/// `envoy.service.auth.v3.CheckRequest` with `attributes.request.http.{headers, host}`.
pub fn ext_authz_request(host: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    ext_authz_request_to(host, "/", headers)
}

/// [`ext_authz_request`] for `path` (the request target: path and query).
pub fn ext_authz_request_to(host: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut http = len_field(2, b"GET");
    for (k, v) in headers {
        http.extend(map_entry(3, k, v.as_bytes()));
    }
    http.extend(len_field(4, path.as_bytes()));
    http.extend(len_field(5, host.as_bytes()));
    let request = len_field(2, &http);
    len_field(1, &len_field(4, &request))
}

// === TLS ===

/// A CA, a server certificate for `localhost` and a client certificate, all PEM.
pub struct Pki {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

pub fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into()]);
    let (client_cert, client_key) = leaf(vec![
        "spiffe://cluster.local/ns/istio-system/sa/istio-mixer-service-account".into(),
    ]);
    Pki {
        ca: ca_cert.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

/// A TLS channel trusting `pki.ca`, presenting the client certificate when `with_cert`.
pub async fn tls_channel(
    addr: SocketAddr,
    pki: &Pki,
    with_cert: bool,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    if with_cert {
        tls = tls.identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
}

// === a pod ===

/// A TCP listener answering every HTTP/1.1 request with 200 `queue` (a healthy pod for both
/// probe styles).
pub async fn healthy_pod() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 4096];
                let mut seen = Vec::new();
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nqueue";
                        if s.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}
