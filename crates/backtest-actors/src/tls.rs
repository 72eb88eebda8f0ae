//! TLS for `wss://`: rustls with the ring provider chosen explicitly (so the
//! process-wide default provider never has to be guessed).
//!
//! Trusted roots: the webpki roots (Mozilla's list, compiled in, so TLS works
//! the same on a bare container), plus the operating system's store (read
//! once per process through `rustls-native-certs`: `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` or the platform's usual locations, so an enterprise CA
//! installed system-wide is trusted too; an unreadable or missing store is
//! logged and skipped), plus any extra roots the user adds.

use std::sync::{Arc, OnceLock};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject},
};

/// A client TLS configuration trusting the webpki roots, the system roots
/// and `extra_roots`.
pub fn client_config(extra_roots: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Parsable system roots only: one odd certificate in the system store
    // must not break every connection.
    roots.add_parsable_certificates(system_roots().iter().cloned());
    for cert in extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| format!("bad root certificate: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The operating system's root certificates, loaded once.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::debug!(%error, "skipping part of the system root store");
        }
        tracing::debug!(count = loaded.certs.len(), "system root certificates");
        loaded.certs
    })
}

/// Every `CERTIFICATE` block of a PEM text, as DER. Fails on malformed PEM
/// or when there is no certificate at all.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|cert| cert.map(|cert| cert.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM root certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block in the PEM root certificate".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_certificate_is_refused() {
        assert_eq!(
            certificates_from_pem(b"hello").unwrap_err(),
            "no CERTIFICATE block in the PEM root certificate"
        );
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let err = certificates_from_pem(broken).unwrap_err();
        assert!(err.starts_with("bad PEM root certificate: "), "{err}");
    }

    #[test]
    fn garbage_der_root_is_refused() {
        let err = client_config(&[CertificateDer::from(vec![1, 2, 3])]).unwrap_err();
        assert!(err.starts_with("bad root certificate: "), "{err}");
    }
}
