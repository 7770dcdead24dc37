//! The TLS flags every control-plane binary takes, beside its Redis URL.

use std::path::{Path, PathBuf};

use spool_broker::TlsConfig;

/// Certificates for a `rediss://` URL: a CA to trust instead of the
/// system roots, and a client certificate for servers that require one.
/// Flatten it into a binary's arguments.
///
/// # Examples
///
/// ```
/// use clap::Parser;
/// use spool_cli_common::TlsArgs;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     tls: TlsArgs,
/// }
///
/// let cli = Cli::parse_from(["tool"]);
/// assert!(cli.tls.load()?.is_empty() && cli.tls.env().is_empty());
/// let cli = Cli::parse_from(["tool", "--tls-ca-cert-file", "ca.pem"]);
/// assert_eq!(
///     cli.tls.env(),
///     [("SPOOL_TLS_CA_CERT_FILE", std::path::Path::new("ca.pem"))]
/// );
/// assert!(Cli::try_parse_from(["tool", "--tls-cert-file", "c.pem"]).is_err());
/// # Ok::<(), spool_broker::Error>(())
/// ```
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsArgs {
    /// A PEM file of CA certificates to trust for rediss:// instead of the
    /// system roots (or SSL_CERT_FILE).
    #[arg(
        long,
        global = true,
        env = "SPOOL_TLS_CA_CERT_FILE",
        value_name = "FILE"
    )]
    pub tls_ca_cert_file: Option<PathBuf>,

    /// A PEM client certificate for rediss:// servers that require one
    /// (tls-auth-clients yes); needs --tls-key-file.
    #[arg(
        long,
        global = true,
        env = "SPOOL_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// The PEM private key of --tls-cert-file.
    #[arg(
        long,
        global = true,
        env = "SPOOL_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,
}

impl TlsArgs {
    /// Reads the files given.
    ///
    /// # Errors
    ///
    /// The broker's error naming a file that cannot be read.
    pub fn load(&self) -> Result<TlsConfig, spool_broker::Error> {
        TlsConfig::from_files(
            self.tls_ca_cert_file.as_deref(),
            self.tls_cert_file.as_deref(),
            self.tls_key_file.as_deref(),
        )
    }

    /// The files given, as the environment variables that set them: for
    /// processes started with the same access.
    #[must_use]
    pub fn env(&self) -> Vec<(&'static str, &Path)> {
        [
            ("SPOOL_TLS_CA_CERT_FILE", &self.tls_ca_cert_file),
            ("SPOOL_TLS_CERT_FILE", &self.tls_cert_file),
            ("SPOOL_TLS_KEY_FILE", &self.tls_key_file),
        ]
        .into_iter()
        .filter_map(|(name, path)| Some((name, path.as_deref()?)))
        .collect()
    }
}
