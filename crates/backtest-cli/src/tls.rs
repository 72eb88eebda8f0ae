//! `--ca-cert`: extra root certificates, and the TLS configuration of the
//! CLI's own HTTP requests (`/available-ranges`).
//!
//! The roots trusted are the same as the session client's: the webpki roots
//! (Mozilla's, compiled in), the operating system's store, and the
//! `--ca-cert` file's certificates. The ring provider is chosen explicitly.

use std::{path::Path, sync::Arc};

use rustls::pki_types::CertificateDer;

use crate::CliError;

/// Every certificate of the PEM file given to `--ca-cert`, as DER.
pub fn read_ca_cert(path: &Path) -> Result<Vec<Vec<u8>>, CliError> {
    let bad =
        |reason: String| CliError::usage(format!("bad --ca-cert {}: {reason}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = backtest_actors::tls::certificates_from_pem(&pem).map_err(bad)?;
    // Check they are usable roots now, so a bad file is a usage error.
    client_config(&certs).map_err(|e| bad(e.to_string()))?;
    Ok(certs)
}

/// The library's client configuration (webpki, system and `extra_roots`).
pub fn client_config(extra_roots: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots: Vec<CertificateDer<'static>> = extra_roots
        .iter()
        .map(|der| CertificateDer::from(der.clone()))
        .collect();
    backtest_actors::tls::client_config(&roots)
}
