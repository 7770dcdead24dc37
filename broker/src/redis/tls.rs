//! Certificates for `rediss://` beyond the system's trust store: a CA of
//! the deployment's own, and a client certificate for servers that demand
//! one (`tls-auth-clients yes`, mutual TLS).

use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};

/// The PEM files a TLS connection uses besides the URL.
///
/// Empty by default: the server's certificate is checked against the
/// system roots (or the file `SSL_CERT_FILE` names) and no client
/// certificate is offered. Its `Debug` output shows which parts are set,
/// never their contents.
///
/// # Examples
///
/// ```no_run
/// use std::path::Path;
/// use spool_broker::{RedisConfig, TlsConfig};
///
/// let tls = TlsConfig::from_files(
///     Some(Path::new("/etc/spool/tls/ca.crt")),
///     Some(Path::new("/etc/spool/tls/client.crt")),
///     Some(Path::new("/etc/spool/tls/client.key")),
/// )?;
/// let config = RedisConfig {
///     tls,
///     ..RedisConfig::from_url("rediss://redis.internal:6380/")
/// };
/// # Ok::<(), spool_broker::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA certificates (PEM) to trust instead of the system roots.
    pub ca_cert: Option<Vec<u8>>,
    /// The client's certificate chain and private key (PEM), for mutual
    /// TLS.
    pub client: Option<ClientCertificate>,
}

/// A client certificate chain and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The certificate, followed by any intermediates.
    pub cert: Vec<u8>,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Vec<u8>,
}

impl TlsConfig {
    /// Reads the files that are given. A client certificate needs its key
    /// and the other way round.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the file that cannot be read, or the flag
    /// missing its pair.
    pub fn from_files(
        ca_cert: Option<&Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<Self> {
        let client = match (client_cert, client_key) {
            (Some(cert), Some(key)) => Some(ClientCertificate {
                cert: read_pem(cert, "client certificate")?,
                key: read_pem(key, "client key")?,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::Config(
                    "a TLS client certificate needs its key file too".to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::Config(
                    "a TLS client key needs its certificate file too".to_owned(),
                ));
            }
        };
        Ok(Self {
            ca_cert: ca_cert
                .map(|ca| read_pem(ca, "CA certificate"))
                .transpose()?,
            client,
        })
    }

    /// Whether nothing is set: system roots, no client certificate.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ca_cert.is_none() && self.client.is_none()
    }

    /// The certificates in the form the Redis client takes, or `None` when
    /// there are none.
    pub(crate) fn certificates(&self) -> Option<redis::TlsCertificates> {
        if self.is_empty() {
            return None;
        }
        Some(redis::TlsCertificates {
            client_tls: self.client.as_ref().map(|client| redis::ClientTlsConfig {
                client_cert: client.cert.clone(),
                client_key: client.key.clone(),
            }),
            root_cert: self.ca_cert.clone(),
        })
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::Config(format!(
            "cannot read the TLS {what} {}: {e}",
            path.display()
        ))
    })
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_cert", &self.ca_cert.as_ref().map(|_| "<set>"))
            .field("client", &self.client)
            .finish()
    }
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientCertificate(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_certificate_needs_its_key() {
        let dir = std::env::temp_dir();
        let err = TlsConfig::from_files(None, Some(&dir.join("c.pem")), None).unwrap_err();
        assert!(err.to_string().contains("needs its key"), "{err}");
        let err = TlsConfig::from_files(None, None, Some(&dir.join("k.pem"))).unwrap_err();
        assert!(err.to_string().contains("needs its certificate"), "{err}");
    }

    #[test]
    fn unreadable_files_are_named_and_contents_never_shown() {
        let missing = Path::new("/nonexistent/spool/ca.pem");
        let err = TlsConfig::from_files(Some(missing), None, None).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/spool/ca.pem"),
            "{err}"
        );

        let tls = TlsConfig {
            ca_cert: Some(b"CA-PEM".to_vec()),
            client: Some(ClientCertificate {
                cert: b"CERT-PEM".to_vec(),
                key: b"SECRET-KEY-PEM".to_vec(),
            }),
        };
        let shown = format!("{tls:?}");
        assert!(!shown.contains("PEM"), "{shown}");
        assert!(TlsConfig::default().is_empty() && !tls.is_empty());
        assert!(TlsConfig::default().certificates().is_none());
        assert!(tls.certificates().is_some());
    }
}
