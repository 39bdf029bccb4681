//! TLS for SIP (RFC 3261 §26, RFC 5630) with rustls and its ring provider:
//! the peer's certificate is checked against the system's roots or a
//! configured CA, and its name against the host the call was sent to.
//! A node that listens (the simulated phone) presents a certificate; a
//! client presents one only for trunks that ask for mutual TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::NetError;

/// Where the TLS files are (`sip.tls_ca`, `sip.tls_cert`, `sip.tls_key`;
/// `--tls-ca`, `--tls-cert`, `--tls-key`), all PEM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates that must sign the peer's certificate; none: the system's roots.
    pub ca: Option<PathBuf>,
    /// Our certificate chain: the client certificate for mutual TLS, or a
    /// listener's server certificate.
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
}

/// What an endpoint needs to speak TLS: a connector for the connections it
/// opens, and an acceptor when it listens.
pub struct Tls {
    pub(super) connector: TlsConnector,
    pub(super) acceptor: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("listens", &self.acceptor.is_some()).finish()
    }
}

impl Tls {
    /// A client: opens connections, verifies the peer, and presents the
    /// certificate in `files` when one is given.
    pub fn client(files: &TlsFiles) -> Result<Arc<Tls>, NetError> {
        Ok(Arc::new(Tls { connector: connector(files)?, acceptor: None }))
    }

    /// A listener (and client): needs `files.cert` and `files.key`, which it
    /// presents to whoever connects; it asks for no client certificate.
    pub fn server(files: &TlsFiles) -> Result<Arc<Tls>, NetError> {
        let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
            return Err(NetError::Tls(
                "listening on TLS needs a certificate and its key (--tls-cert, --tls-key)".into(),
            ));
        };
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| NetError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| NetError::Tls(format!("{}: {e}", cert.display())))?;
        Ok(Arc::new(Tls { connector: connector(files)?, acceptor: Some(TlsAcceptor::from(Arc::new(config))) }))
    }
}

/// The name a peer's certificate must carry for `host` (a DNS name or an IP
/// literal, IPv6 with or without brackets).
pub(super) fn server_name(host: &str) -> std::io::Result<ServerName<'static>> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    ServerName::try_from(bare.to_string()).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host:?} cannot name a TLS peer: {e}"))
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn connector(files: &TlsFiles) -> Result<TlsConnector, NetError> {
    let own = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => Some((cert, certificates(cert)?, private_key(key)?)),
        (None, None) => None,
        _ => return Err(NetError::Tls("a TLS certificate needs its key, and a key its certificate".into())),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_root_certificates(roots(files.ca.as_deref())?);
    let config = match own {
        Some((path, chain, key)) => {
            builder.with_client_auth_cert(chain, key).map_err(|e| NetError::Tls(format!("{}: {e}", path.display())))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The trust anchors: every certificate in `ca`, or the system's store.
fn roots(ca: Option<&Path>) -> Result<RootCertStore, NetError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(ca) => {
            for certificate in certificates(ca)? {
                roots.add(certificate).map_err(|e| NetError::Tls(format!("{}: {e}", ca.display())))?;
            }
        }
        None => {
            let bundle = system_bundle().ok_or_else(|| {
                NetError::Tls("no system CA bundle found (set SSL_CERT_FILE or give --tls-ca)".into())
            })?;
            let (added, ignored) = roots.add_parsable_certificates(certificates(&bundle)?);
            tracing::debug!(bundle = %bundle.display(), added, ignored, "system CA certificates loaded");
            if added == 0 {
                return Err(NetError::Tls(format!("{}: no usable CA certificate", bundle.display())));
            }
        }
    }
    Ok(roots)
}

/// The system's CA bundle: `SSL_CERT_FILE`, else where the common Linux
/// distributions keep it (a file, not a crate: rustls-native-certs would
/// bring macOS-only `-sys` crates into the lock file).
fn system_bundle() -> Option<PathBuf> {
    let configured = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let known = [
        "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Arch
        "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
        "/etc/ssl/ca-bundle.pem",             // openSUSE
        "/etc/ssl/cert.pem",                  // Alpine, macOS
    ];
    configured.into_iter().chain(known.iter().map(PathBuf::from)).find(|path| path.is_file())
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let unusable = |e: &dyn std::fmt::Display| NetError::Tls(format!("{}: {e}", path.display()));
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| unusable(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(&e))?;
    if certificates.is_empty() {
        return Err(unusable(&"no PEM certificate in it"));
    }
    Ok(certificates)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, NetError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| NetError::Tls(format!("{}: no usable private key: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_peers_by_dns_name_or_address() {
        assert!(matches!(server_name("sip.example.com").unwrap(), ServerName::DnsName(_)));
        assert!(matches!(server_name("127.0.0.1").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("[::1]").unwrap(), ServerName::IpAddress(_)));
        assert!(server_name("bad name").is_err());
    }

    #[test]
    fn the_system_bundle_gives_a_client() {
        // Debian's ca-certificates, on this machine and in the container image.
        if system_bundle().is_some() {
            Tls::client(&TlsFiles::default()).unwrap();
        }
    }

    #[test]
    fn missing_or_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsFiles { ca: Some(dir.path().join("nope.pem")), ..TlsFiles::default() };
        assert!(Tls::client(&missing).unwrap_err().to_string().contains("nope.pem"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = Tls::client(&TlsFiles { ca: Some(empty), ..TlsFiles::default() }).unwrap_err().to_string();
        assert!(error.contains("empty.pem") && error.contains("no PEM certificate"), "{error}");
        assert!(Tls::server(&TlsFiles::default()).unwrap_err().to_string().contains("--tls-cert"));
        let half = TlsFiles { cert: Some(dir.path().join("c.pem")), ..TlsFiles::default() };
        assert!(Tls::client(&half).unwrap_err().to_string().contains("needs its key"));
    }
}
