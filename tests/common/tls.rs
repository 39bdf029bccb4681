//! Throwaway certificates for the TLS tests (rcgen): a CA, and certificates
//! it signs for the names a peer must prove, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A test CA and the folder its files go in.
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The CA's certificate (PEM): what a client that trusts it is given.
    pub ca_file: PathBuf,
}

/// A certificate the CA signed.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Key and certificate in one file (baresip's `sip_certificate`).
    pub combined: PathBuf,
}

impl Pki {
    /// A new CA named `name`, its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, ca.pem()).unwrap();
        Pki { dir: dir.to_path_buf(), ca, ca_file }
    }

    /// A certificate for `names` (DNS names or IP addresses), files named after `label`.
    pub fn issue(&self, label: &str, names: &[&str]) -> Issued {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or(label));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{label}-cert.pem")),
            key: self.dir.join(format!("{label}-key.pem")),
            combined: self.dir.join(format!("{label}-combined.pem")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        std::fs::write(&issued.combined, format!("{}{}", key.serialize_pem(), cert.pem())).unwrap();
        issued
    }
}
