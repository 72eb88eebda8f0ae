//! Building a [`SessionSupervisor`]: the session to create, where events
//! go, and the connection policy.

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use actix::{Actor, Addr, Recipient};
use simulator_api::CreateBacktestSessionRequest;

use crate::{
    SessionSupervisor, backoff::ReconnectPolicy, drain::DEFAULT_DRAIN_IDLE_TIMEOUT,
    events::ManagedEvent, url::ApiKey, ws::ConnectOptions,
};

/// Connect timeout (TCP + TLS + upgrade).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one handshake response (create, attach, resume, ack).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(120);
/// Keepalive ping interval.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// A connection with no inbound frame for this long is dead.
pub const KEEPALIVE_DEAD_AFTER: Duration = Duration::from_secs(45);
/// Budget for the graceful close (close request + close frame).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest frame (and decompressed notification) accepted.
pub const MAX_FRAME_BYTES: usize = 16 << 20;
/// Control responses in flight between the control connection and the
/// consumer.
pub const CONTROL_CREDIT: usize = 256;
/// Notifications in flight per data connection between its socket and the
/// consumer. Bounds memory whatever the consumer's speed.
pub const DATA_CREDIT: usize = 256;

/// Builder of a [`SessionSupervisor`]; see [`SessionSupervisor::builder`].
pub struct SupervisorBuilder {
    pub(crate) url: String,
    pub(crate) create: CreateBacktestSessionRequest,
    pub(crate) events: Option<Recipient<ManagedEvent>>,
    pub(crate) drain_idle_timeout: Duration,
    pub(crate) policy: ReconnectPolicy,
    pub(crate) options: ConnectOptions,
    pub(crate) control_credit: usize,
    pub(crate) data_credit: usize,
    pub(crate) extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub(crate) continue_resend_after: Duration,
}

impl std::fmt::Debug for SupervisorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorBuilder")
            .field("url", &self.url)
            .field("drain_idle_timeout", &self.drain_idle_timeout)
            .field("policy", &self.policy)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SupervisorBuilder {
    pub(crate) fn new(
        url: impl Into<String>,
        api_key: impl Into<ApiKey>,
        create: CreateBacktestSessionRequest,
    ) -> Self {
        Self {
            url: url.into(),
            create,
            events: None,
            drain_idle_timeout: DEFAULT_DRAIN_IDLE_TIMEOUT,
            policy: ReconnectPolicy::default(),
            options: ConnectOptions {
                api_key: api_key.into(),
                headers: Vec::new(),
                connect_timeout: CONNECT_TIMEOUT,
                handshake_timeout: HANDSHAKE_TIMEOUT,
                keepalive_interval: KEEPALIVE_INTERVAL,
                keepalive_dead_after: KEEPALIVE_DEAD_AFTER,
                max_frame_bytes: MAX_FRAME_BYTES,
                close_timeout: CLOSE_TIMEOUT,
                bytes_in: Arc::new(AtomicU64::new(0)),
                tls: None,
            },
            control_credit: CONTROL_CREDIT,
            data_credit: DATA_CREDIT,
            extra_roots: Vec::new(),
            continue_resend_after: crate::supervisor::CONTINUE_RESEND_AFTER,
        }
    }

    /// After the control connection comes back, how long a continue sent
    /// just before the drop may go unanswered before it is presumed lost
    /// with the socket and sent again (default 5 s).
    pub fn continue_resend_after(mut self, after: Duration) -> Self {
        self.continue_resend_after = after;
        self
    }

    /// Trust this root certificate (DER) for `wss://`, besides the webpki
    /// (Mozilla) roots and the operating system's: for a service behind a
    /// private certificate authority, or a self-signed certificate. A
    /// certificate that does not parse fails the session with
    /// [`crate::ManagedSessionError::Create`].
    pub fn add_root_certificate(mut self, der: Vec<u8>) -> Self {
        self.extra_roots
            .push(rustls::pki_types::CertificateDer::from(der));
        self
    }

    /// [`Self::add_root_certificate`] for every `CERTIFICATE` block of a PEM
    /// text (a CA file, `ca.pem`). Fails, with a one-line reason, on
    /// malformed PEM or a text without any certificate.
    pub fn add_root_certificate_pem(mut self, pem: &[u8]) -> Result<Self, String> {
        for der in crate::tls::certificates_from_pem(pem)? {
            self = self.add_root_certificate(der);
        }
        Ok(self)
    }

    /// Push every event to `recipient` (awaiting each delivery: a slow
    /// recipient slows the session down). Without one, pull with
    /// [`crate::NextEvent`].
    pub fn events(mut self, recipient: Recipient<ManagedEvent>) -> Self {
        self.events = Some(recipient);
        self
    }

    /// Completion-drain idle timeout: how long a connected subscription may
    /// stay silent after `completed` before the capture is declared
    /// incomplete. Bounds the gap between notifications, not the total.
    pub fn drain_idle_timeout(mut self, timeout: Duration) -> Self {
        self.drain_idle_timeout = timeout;
        self
    }

    /// Reconnect policy (backoff, budget, uptime reset) for every connection.
    pub fn reconnect_policy(mut self, policy: ReconnectPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// An extra header on every control-plane request (values are never
    /// logged).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.headers.push((name.into(), value.into()));
        self
    }

    /// Keepalive: ping every `interval`; a connection silent for
    /// `dead_after` is lost.
    pub fn keepalive(mut self, interval: Duration, dead_after: Duration) -> Self {
        self.options.keepalive_interval = interval;
        self.options.keepalive_dead_after = dead_after;
        self
    }

    /// Connect and handshake timeouts.
    pub fn timeouts(mut self, connect: Duration, handshake: Duration) -> Self {
        self.options.connect_timeout = connect;
        self.options.handshake_timeout = handshake;
        self
    }

    /// Largest frame, and largest decompressed notification, accepted.
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.options.max_frame_bytes = bytes;
        self
    }

    /// Flow-control window: events in flight between a connection and the
    /// consumer (control, and per data connection).
    pub fn credit(mut self, control: usize, data: usize) -> Self {
        self.control_credit = control.max(1);
        self.data_credit = data.max(1);
        self
    }

    /// Start the supervisor on the current actix arbiter (an actix system
    /// must be running; [`crate::ManagedBacktestSession`] works from any
    /// async context). A bad URL fails the session with
    /// [`crate::ManagedSessionError::Create`].
    pub fn start(self) -> Addr<SessionSupervisor> {
        SessionSupervisor::from_builder(self).start()
    }
}
