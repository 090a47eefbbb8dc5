//! Server TLS and mTLS for the adapter: from `adapter.tls`, else from the 2019 adapter's
//! environment variables. Files are read and checked at startup, naming the bad file.

use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::TlsConfig;

/// Server certificate chain (PEM path), as the 2019 adapter read it.
pub const ENV_CERT: &str = "GRPC_ADAPTER_CREDENTIAL";
/// Server private key (PEM path).
pub const ENV_KEY: &str = "GRPC_ADAPTER_PRIVATE_KEY";
/// Client CA bundle (PEM path); when set, clients must present a certificate it signed.
pub const ENV_CLIENT_CA: &str = "GRPC_ADAPTER_CERTIFICATE";

/// TLS settings that cannot be used. Every message names the setting and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    // Causes are part of the messages, not `source()`s: a chain printer would repeat them.
    #[error("{setting} {}: {error}", path.display())]
    Read {
        setting: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{setting} {}: {message}", path.display())]
    Pem {
        setting: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{ENV_CERT} is set but {ENV_KEY} is not")]
    MissingKey,
    #[error("adapter TLS from {cert} and {key}: {error}", cert = cert.display(), key = key.display())]
    Config {
        cert: PathBuf,
        key: PathBuf,
        error: tonic::transport::Error,
    },
}

/// Where the certificate, key and optional client CA come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    cert: (&'static str, PathBuf),
    key: (&'static str, PathBuf),
    client_ca: Option<(&'static str, PathBuf)>,
}

/// The files to use: the config's `adapter.tls` block wins; without it, the environment.
/// `env` reads a variable (a parameter so tests need not touch the process environment).
pub(crate) fn files(
    config: Option<&TlsConfig>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<TlsFiles>, TlsError> {
    if let Some(tls) = config {
        return Ok(Some(TlsFiles {
            cert: ("adapter.tls.cert", tls.cert.clone()),
            key: ("adapter.tls.key", tls.key.clone()),
            client_ca: tls.client_ca.clone().map(|p| ("adapter.tls.client_ca", p)),
        }));
    }
    let var = |name| {
        env(name)
            .filter(|v| !v.trim().is_empty())
            .map(PathBuf::from)
    };
    let Some(cert) = var(ENV_CERT) else {
        return Ok(None);
    };
    let key = var(ENV_KEY).ok_or(TlsError::MissingKey)?;
    Ok(Some(TlsFiles {
        cert: (ENV_CERT, cert),
        key: (ENV_KEY, key),
        client_ca: var(ENV_CLIENT_CA).map(|p| (ENV_CLIENT_CA, p)),
    }))
}

/// The adapter's server TLS: `config` (`adapter.tls`), else the environment, with the files
/// read and checked. The one loader for start-up and `--check-config`.
pub fn load(config: Option<&TlsConfig>) -> Result<Option<ServerTlsConfig>, TlsError> {
    match files(config, |k| std::env::var(k).ok())? {
        Some(files) => server_config(&files).map(Some),
        None => Ok(None),
    }
}

/// Reads and checks the files; a client CA makes client certificates mandatory.
pub(crate) fn server_config(files: &TlsFiles) -> Result<ServerTlsConfig, TlsError> {
    let cert = read(&files.cert)?;
    if CertificateDer::pem_slice_iter(&cert).next().is_none() {
        return Err(pem_error(&files.cert, "no PEM certificate found"));
    }
    let key = read(&files.key)?;
    PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| pem_error(&files.key, &format!("no usable PEM private key ({e})")))?;
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca_file) = &files.client_ca {
        let ca = read(ca_file)?;
        if CertificateDer::pem_slice_iter(&ca).next().is_none() {
            return Err(pem_error(ca_file, "no PEM certificate found"));
        }
        config = config.client_ca_root(Certificate::from_pem(ca));
    }
    // Builds the acceptor once now, so that a key that does not match the certificate fails
    // at startup instead of on the first connection.
    tonic::transport::Server::builder()
        .tls_config(config.clone())
        .map_err(|error| TlsError::Config {
            cert: files.cert.1.clone(),
            key: files.key.1.clone(),
            error,
        })?;
    Ok(config)
}

fn read((setting, path): &(&'static str, PathBuf)) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        setting,
        path: path.clone(),
        error,
    })
}

fn pem_error((setting, path): &(&'static str, PathBuf), message: &str) -> TlsError {
    TlsError::Pem {
        setting,
        path: Path::new(path).to_path_buf(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn config_block_wins_over_the_environment() {
        let tls = TlsConfig {
            cert: "/c.pem".into(),
            key: "/k.pem".into(),
            client_ca: None,
        };
        let f = files(Some(&tls), env(&[(ENV_CERT, "/other.pem")]))
            .unwrap()
            .unwrap();
        assert_eq!(f.cert.1, PathBuf::from("/c.pem"));
        assert_eq!(f.client_ca, None);
    }

    #[test]
    fn the_2019_variables_are_honoured() {
        assert_eq!(files(None, env(&[])).unwrap(), None);
        let f = files(
            None,
            env(&[(ENV_CERT, "/c"), (ENV_KEY, "/k"), (ENV_CLIENT_CA, "/ca")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.client_ca, Some((ENV_CLIENT_CA, PathBuf::from("/ca"))));
        assert!(matches!(
            files(None, env(&[(ENV_CERT, "/c")])),
            Err(TlsError::MissingKey)
        ));
    }

    #[test]
    fn unreadable_and_non_pem_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let f = TlsFiles {
            cert: ("adapter.tls.cert", dir.path().join("missing.pem")),
            key: ("adapter.tls.key", junk.clone()),
            client_ca: None,
        };
        let err = server_config(&f).unwrap_err().to_string();
        assert!(
            err.contains("adapter.tls.cert") && err.contains("missing.pem"),
            "{err}"
        );
        let f = TlsFiles {
            cert: ("adapter.tls.cert", junk.clone()),
            ..f
        };
        let err = server_config(&f).unwrap_err().to_string();
        assert!(
            err.contains("junk.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
    }
}
