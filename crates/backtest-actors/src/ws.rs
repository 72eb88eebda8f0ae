//! Opening a WebSocket with awc, and reading whole messages from it.
//!
//! Shared by the control and subscription actors: the connect timeout, the
//! API key header, extra headers, the frame size bound, and reassembly of
//! fragmented messages (bounded too).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use actix_codec::Framed;
use actix_http::ws::Item;
use awc::{
    BoxedSocket,
    ws::{Codec, Frame, Message},
};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt as _, StreamExt as _};

use crate::url::ApiKey;

/// A connected WebSocket.
pub(crate) type Socket = Framed<BoxedSocket, Codec>;

/// How connections are opened and kept alive. One per session, shared by
/// its connection actors.
#[derive(Clone)]
pub(crate) struct ConnectOptions {
    pub api_key: ApiKey,
    /// Extra request headers (values may be secrets: never logged).
    pub headers: Vec<(String, String)>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_dead_after: Duration,
    pub max_frame_bytes: usize,
    pub close_timeout: Duration,
    /// Bytes received on every connection of the session.
    pub bytes_in: Arc<AtomicU64>,
    /// TLS settings for `wss://` (set when the supervisor starts).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("api_key", &self.api_key)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_dead_after", &self.keepalive_dead_after)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .finish_non_exhaustive()
    }
}

/// Why a connect failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnectError {
    /// The server refused the API key (HTTP 401/403): retrying won't help.
    Unauthorized(u16),
    /// The server answered the upgrade with another status.
    Status(u16),
    /// The server's certificate is not trusted (or not valid for the
    /// host): retrying won't help.
    Certificate(String),
    /// No connection (refused, reset, timed out, TLS, ...).
    Io(String),
}

impl ConnectError {
    /// How the connection attempt ended: refused credentials and untrusted
    /// certificates are fatal, the rest may pass.
    pub fn into_end(self) -> crate::connection::ConnEnd {
        match self {
            Self::Unauthorized(_) | Self::Certificate(_) => {
                crate::connection::ConnEnd::Fatal(self.to_string())
            }
            other => crate::connection::ConnEnd::Lost(format!("connect: {other}")),
        }
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unauthorized(code) => write!(f, "the server refused the API key (HTTP {code})"),
            Self::Status(code) => write!(f, "upgrade refused with HTTP {code}"),
            Self::Certificate(e) => write!(f, "TLS: {e}"),
            Self::Io(e) => f.write_str(e),
        }
    }
}

/// Open a WebSocket to `url`, sending the API key when `with_key`.
pub(crate) async fn connect(
    url: &str,
    options: &ConnectOptions,
    with_key: bool,
) -> Result<Socket, ConnectError> {
    let mut connector = awc::Connector::new().timeout(options.connect_timeout);
    if let Some(tls) = &options.tls {
        connector = connector.rustls_0_23(tls.clone());
    }
    let client = awc::Client::builder()
        .connector(connector)
        .timeout(options.connect_timeout)
        .finish();
    let mut request = client.ws(url).max_frame_size(options.max_frame_bytes);
    if with_key {
        request = request.header("X-API-Key", options.api_key.expose());
    }
    for (name, value) in &options.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let connecting = tokio::time::timeout(options.connect_timeout, request.connect());
    match connecting.await {
        Err(_) => Err(ConnectError::Io(format!(
            "connect timed out after {:?}",
            options.connect_timeout
        ))),
        Ok(Ok((_, socket))) => Ok(socket),
        Ok(Err(awc::error::WsClientError::InvalidResponseStatus(status))) => {
            let code = status.as_u16();
            if code == 401 || code == 403 {
                Err(ConnectError::Unauthorized(code))
            } else {
                Err(ConnectError::Status(code))
            }
        }
        // awc's errors never include header values, so the key cannot leak.
        Ok(Err(e)) => {
            let text = e.to_string();
            if text.contains("invalid peer certificate") {
                Err(ConnectError::Certificate(text))
            } else {
                Err(ConnectError::Io(text))
            }
        }
    }
}

/// A whole message read from a socket.
#[derive(Debug)]
pub(crate) enum Inbound {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    /// A keepalive answer: the peer is alive.
    Pong,
    /// The peer closed, with its close code if any.
    Close(Option<u16>, String),
}

/// Why reading stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The stream ended without a close frame.
    Ended,
    Protocol(String),
    /// A (reassembled) message over the size bound.
    TooLarge(usize),
}

impl ReadError {
    /// How the connection ended: a message over the bound will not shrink
    /// on a retry, so it is fatal; the rest is a lost connection.
    pub fn into_end(self) -> crate::connection::ConnEnd {
        match self {
            Self::TooLarge(_) => crate::connection::ConnEnd::Fatal(self.to_string()),
            other => crate::connection::ConnEnd::Lost(other.to_string()),
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ended => f.write_str("connection ended without a close frame"),
            Self::Protocol(e) => write!(f, "websocket protocol error: {e}"),
            Self::TooLarge(limit) => write!(f, "message larger than {limit} bytes"),
        }
    }
}

/// Reads whole messages, reassembling continuation frames up to the bound,
/// and counts bytes in.
pub(crate) struct Reader {
    partial: Option<(bool, BytesMut)>,
    limit: usize,
    bytes_in: Arc<AtomicU64>,
}

impl Reader {
    pub fn new(options: &ConnectOptions) -> Self {
        Self {
            partial: None,
            limit: options.max_frame_bytes,
            bytes_in: options.bytes_in.clone(),
        }
    }

    /// The next message.
    pub async fn next(&mut self, socket: &mut Socket) -> Result<Inbound, ReadError> {
        loop {
            let frame = match socket.next().await {
                None => return Err(ReadError::Ended),
                Some(Err(e)) => {
                    return Err(match e {
                        awc::error::WsProtocolError::Overflow => ReadError::TooLarge(self.limit),
                        other => ReadError::Protocol(other.to_string()),
                    });
                }
                Some(Ok(frame)) => frame,
            };
            if let Some(message) = self.accept(frame)? {
                return Ok(message);
            }
        }
    }

    /// Feed one frame; a whole message when one is complete.
    pub fn accept(&mut self, frame: Frame) -> Result<Option<Inbound>, ReadError> {
        let counted = |len: usize| self.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
        Ok(match frame {
            Frame::Text(bytes) => {
                counted(bytes.len());
                Some(Inbound::Text(bytes))
            }
            Frame::Binary(bytes) => {
                counted(bytes.len());
                Some(Inbound::Binary(bytes))
            }
            Frame::Ping(payload) => Some(Inbound::Ping(payload)),
            Frame::Pong(_) => Some(Inbound::Pong),
            Frame::Close(reason) => Some(Inbound::Close(
                reason.as_ref().map(|r| u16::from(r.code)),
                reason.and_then(|r| r.description).unwrap_or_default(),
            )),
            Frame::Continuation(item) => {
                let (text, chunk, last) = match item {
                    Item::FirstText(b) => (Some(true), b, false),
                    Item::FirstBinary(b) => (Some(false), b, false),
                    Item::Continue(b) => (None, b, false),
                    Item::Last(b) => (None, b, true),
                };
                counted(chunk.len());
                if let Some(text) = text {
                    self.partial = Some((text, BytesMut::new()));
                }
                let Some((is_text, buf)) = self.partial.as_mut() else {
                    return Err(ReadError::Protocol(
                        "continuation without a first frame".into(),
                    ));
                };
                if buf.len() + chunk.len() > self.limit {
                    return Err(ReadError::TooLarge(self.limit));
                }
                buf.extend_from_slice(&chunk);
                if !last {
                    return Ok(None);
                }
                let is_text = *is_text;
                let (_, buf) = self.partial.take().unwrap_or_default();
                let bytes = buf.freeze();
                Some(if is_text {
                    Inbound::Text(bytes)
                } else {
                    Inbound::Binary(bytes)
                })
            }
        })
    }
}

/// Send a text message.
pub(crate) async fn send_text(socket: &mut Socket, text: String) -> Result<(), String> {
    socket
        .send(Message::Text(text.into()))
        .await
        .map_err(|e| format!("send failed: {e}"))
}

/// Best-effort close frame, bounded by `timeout`.
pub(crate) async fn close(socket: &mut Socket, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, socket.send(Message::Close(None))).await;
}
