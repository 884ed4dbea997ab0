//! Reading the leaf certificate of a PEM file (`tls.mode = "files"`): when it
//! expires and which host names it is for. `docket doctor` warns before
//! expiry; the plain-HTTP redirect sends browsers only to certified names.
use std::path::Path;

/// What docket needs to know of a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Unix seconds.
    pub not_after: i64,
    /// DNS names from the subject alternative names, lowercased.
    pub dns_names: Vec<String>,
}

/// The first certificate of the PEM file at `path`; the error names the file.
pub fn leaf(path: &Path) -> Result<Leaf, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .ok_or_else(|| format!("{} holds no certificate", path.display()))?
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| format!("{}: {e}", path.display()))?;
    let names = cert.subject_alternative_name().ok().flatten().map(|san| san.value.general_names.clone());
    let dns_names = names
        .unwrap_or_default()
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    Ok(Leaf { not_after: cert.validity().not_after.timestamp(), dns_names })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_expiry_and_names_and_names_the_file_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["Docket.Example.com".into(), "127.0.0.1".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 1, 2);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let path = dir.path().join("cert.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        let leaf = leaf(&path).unwrap();
        assert_eq!(leaf.dns_names, ["docket.example.com"], "IP addresses are not DNS names");
        assert_eq!(leaf.not_after, 1_925_078_400); // 2031-01-02T00:00:00Z
        std::fs::write(&path, "not a certificate").unwrap();
        assert!(super::leaf(&path).unwrap_err().contains("cert.pem"));
        assert!(super::leaf(&dir.path().join("missing.pem")).unwrap_err().contains("missing.pem"));
    }
}
