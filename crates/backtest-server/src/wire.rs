//! Writing frames to one WebSocket with the faults that apply to every
//! connection: random drops, garbage frames and a throttled link.

use std::sync::Arc;

use actix_ws::{CloseCode, CloseReason};
use tracing::info;

use crate::{faults::DropDice, state::ServerState};

/// Why a connection's writer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The peer is gone.
    Closed,
    /// A fault cut the connection; the handler must drop it without a
    /// close frame.
    Dropped,
}

/// Which plane a connection serves (for logs and fault counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    Control,
    Data,
}

impl Plane {
    pub fn name(self) -> &'static str {
        match self {
            Plane::Control => "control",
            Plane::Data => "data",
        }
    }
}

/// One connection's writer.
pub struct Wire {
    ws: actix_ws::Session,
    state: Arc<ServerState>,
    plane: Plane,
    session_id: Option<String>,
    frames: u64,
    dice: Option<DropDice>,
    /// The link throttle has been reported for this connection.
    throttle_reported: bool,
}

impl Wire {
    pub fn new(ws: actix_ws::Session, state: Arc<ServerState>, plane: Plane) -> Self {
        Self {
            ws,
            state,
            plane,
            session_id: None,
            frames: 0,
            dice: None,
            throttle_reported: false,
        }
    }

    /// Attribute the connection to a session: faults are logged with its
    /// id, and random drops start (seeded by the session and `connection`).
    pub fn bind(&mut self, session_id: &str, connection: u64) {
        self.session_id = Some(session_id.to_string());
        self.dice = DropDice::new(&self.state.config.faults, session_id, connection);
    }

    /// Frames sent so far (garbage frames not counted).
    pub fn frames(&self) -> u64 {
        self.frames
    }

    pub fn session_id(&self) -> &str {
        self.session_id.as_deref().unwrap_or("-")
    }

    /// Log and count a fault that fires on this connection.
    pub fn fault(&self, kind: &'static str) {
        info!(
            session_id = self.session_id(),
            plane = self.plane.name(),
            frame = self.frames,
            fault = kind,
            "fault injected"
        );
        self.state.fault_fired(kind);
    }

    async fn before_frame(&mut self) -> Result<(), Cut> {
        if self.dice.as_mut().is_some_and(DropDice::roll) {
            // Counted per plane: tests hold each plane's recoveries to its
            // own drops.
            self.fault(match self.plane {
                Plane::Control => "random-drop:control",
                Plane::Data => "random-drop:data",
            });
            return Err(Cut::Dropped);
        }
        let every = self.state.config.faults.garbage_every;
        if every.is_some_and(|n| (self.frames + 1).is_multiple_of(n)) {
            self.fault("garbage");
            self.ws
                .text("<<garbage frame: not JSON>>")
                .await
                .map_err(|_| Cut::Closed)?;
        }
        Ok(())
    }

    async fn after_frame(&mut self, bytes: usize) {
        self.frames += 1;
        if let Some(delay) = self.state.config.faults.throttle_delay(bytes) {
            // A throttle acts on every frame; it is reported (logged and
            // counted) once per connection so the log says it was on without
            // a line per frame.
            if !self.throttle_reported {
                self.throttle_reported = true;
                self.fault("link-throttle");
            }
            actix_rt::time::sleep(delay).await;
        }
    }

    pub async fn text(&mut self, text: String) -> Result<(), Cut> {
        self.before_frame().await?;
        let len = text.len();
        self.ws.text(text).await.map_err(|_| Cut::Closed)?;
        self.after_frame(len).await;
        Ok(())
    }

    pub async fn binary(&mut self, bytes: Vec<u8>) -> Result<(), Cut> {
        self.before_frame().await?;
        let len = bytes.len();
        self.ws.binary(bytes).await.map_err(|_| Cut::Closed)?;
        self.after_frame(len).await;
        Ok(())
    }

    pub async fn pong(&mut self, payload: &[u8]) -> Result<(), Cut> {
        self.ws.pong(payload).await.map_err(|_| Cut::Closed)
    }

    /// Send a close frame and give the connection up.
    pub async fn close(self, code: CloseCode, description: &str) {
        let _ = self
            .ws
            .close(Some(CloseReason {
                code,
                description: Some(description.to_string()),
            }))
            .await;
    }
}
