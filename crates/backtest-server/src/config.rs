//! Server configuration: the data set, who may connect, pacing, limits and
//! faults. One struct serves the binary's flags and in-process embedding.

use std::{fmt, io, path::Path, sync::Arc, time::Duration};

use backtest_ledger::LedgerConfig;
use simulator_api::AvailableRange;

use crate::faults::FaultPlan;

/// Bounds on what one client may make the server hold. Every input that
/// arrives is bounded by one of these.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest inbound WebSocket frame, in bytes.
    pub max_frame_bytes: usize,
    /// Largest number of live sessions (parallel sub-sessions included).
    pub max_sessions: usize,
    /// Largest number of subscriptions on one data connection.
    pub max_subscriptions_per_connection: usize,
    /// Largest number of responses a session keeps for attach replay; older
    /// ones are forgotten (an attach asking for them gets what is left).
    pub replay_buffer_frames: usize,
    /// Largest number of sub-sessions one parallel create may produce.
    pub max_parallel_sessions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 1 << 20,
            max_sessions: 1024,
            max_subscriptions_per_connection: 64,
            replay_buffer_frames: 1 << 16,
            max_parallel_sessions: 64,
        }
    }
}

/// Everything the reference server needs to run.
#[derive(Clone)]
pub struct ServerConfig {
    /// The synthetic data set.
    pub ledger: LedgerConfig,
    /// Accepted API keys; empty means any key (development mode).
    pub api_keys: Vec<String>,
    /// Slots per bundle advertised by `/available-ranges` (and used to split
    /// parallel runs).
    pub bundle_slots: u64,
    /// Pause between executed slots, to make runs observable in real time.
    pub slot_interval: Duration,
    /// Faults to inject, off by default.
    pub faults: FaultPlan,
    /// Input bounds.
    pub limits: Limits,
    /// actix-web worker threads.
    pub workers: usize,
    /// Serve TLS (`wss://`, `https://`) with this certificate; plain
    /// `ws://` without it.
    pub tls: Option<TlsConfig>,
}

/// The listener's certificate chain and private key, both PEM.
#[derive(Clone)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (PEM `CERTIFICATE` blocks).
    pub cert_chain_pem: Vec<u8>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Vec<u8>,
}

impl TlsConfig {
    /// Read the chain and the key from PEM files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> io::Result<Self> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        };
        Ok(Self {
            cert_chain_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }

    /// The rustls server configuration: ring provider (chosen explicitly,
    /// never the process default), safe default protocol versions, no client
    /// authentication. Fails on an empty chain, a missing key or a key that
    /// does not match the certificate.
    pub fn server_config(&self) -> io::Result<rustls::ServerConfig> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
        let chain = CertificateDer::pem_slice_iter(&self.cert_chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("bad TLS certificate PEM: {e}")))?;
        if chain.is_empty() {
            return Err(invalid(
                "no CERTIFICATE block in the TLS certificate PEM".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| invalid(format!("bad TLS private key PEM: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS setup: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| invalid(format!("TLS certificate or key rejected: {e}")))
    }
}

impl fmt::Debug for TlsConfig {
    /// The key is a secret: only the chain's size is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field(
                "cert_chain_pem",
                &format_args!("<{} bytes>", self.cert_chain_pem.len()),
            )
            .field("key_pem", &format_args!("<redacted>"))
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            ledger: LedgerConfig::default(),
            api_keys: Vec::new(),
            bundle_slots: 10_000,
            slot_interval: Duration::ZERO,
            faults: FaultPlan::default(),
            limits: Limits::default(),
            workers: 2,
            tls: None,
        }
    }
}

impl fmt::Debug for ServerConfig {
    /// API keys are secrets: only their number is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("ledger", &self.ledger)
            .field(
                "api_keys",
                &format_args!("<{} redacted>", self.api_keys.len()),
            )
            .field("bundle_slots", &self.bundle_slots)
            .field("slot_interval", &self.slot_interval)
            .field("faults", &self.faults)
            .field("limits", &self.limits)
            .field("workers", &self.workers)
            .field("tls", &self.tls)
            .finish()
    }
}

impl ServerConfig {
    /// The bundles the data set is cut into, as `/available-ranges` reports
    /// them: consecutive runs of `bundle_slots` slots from the first slot,
    /// the last one cut at the data set's end.
    pub fn available_ranges(&self) -> Vec<AvailableRange> {
        let step = self.bundle_slots.max(1);
        let (first, last) = (self.ledger.first_slot, self.ledger.last_slot);
        let mut ranges = Vec::new();
        let mut start = first;
        while start <= last {
            let end = start.saturating_add(step - 1).min(last);
            ranges.push(AvailableRange {
                bundle_start_slot: start,
                bundle_start_slot_utc: None,
                max_bundle_end_slot: Some(end),
                max_bundle_end_slot_utc: None,
                max_bundle_size: Some(end - start + 1),
            });
            match end.checked_add(1) {
                Some(next) => start = next,
                None => break,
            }
        }
        ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_tile_the_data_set() {
        let mut config = ServerConfig::default();
        config.ledger.first_slot = 1000;
        config.ledger.last_slot = 1249;
        config.bundle_slots = 100;
        let ranges: Vec<_> = config
            .available_ranges()
            .iter()
            .map(|r| (r.bundle_start_slot, r.max_bundle_end_slot.unwrap()))
            .collect();
        assert_eq!(ranges, vec![(1000, 1099), (1100, 1199), (1200, 1249)]);
    }

    #[test]
    fn debug_hides_api_keys() {
        let config = ServerConfig {
            api_keys: vec!["super-secret-key".into()],
            ..ServerConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("super-secret-key"), "{shown}");
        assert!(shown.contains("<1 redacted>"));
    }

    #[test]
    fn tls_rejects_pem_without_certificate_or_key() {
        let no_cert = TlsConfig {
            cert_chain_pem: b"not a certificate".to_vec(),
            key_pem: Vec::new(),
        };
        let err = no_cert.server_config().unwrap_err().to_string();
        assert_eq!(err, "no CERTIFICATE block in the TLS certificate PEM");
        let shown = format!("{no_cert:?}");
        assert_eq!(
            shown,
            "TlsConfig { cert_chain_pem: <17 bytes>, key_pem: <redacted> }"
        );
    }
}
