//! The few pieces of RFC 6455 the benchmark server needs, by hand.
//!
//! A general WebSocket library would copy and re-frame every notification;
//! the server here must cost as little as possible so the client is what is
//! measured. Server-to-client frames are unmasked, so a whole stream can be
//! framed once and written with plain `write_all`. Client frames are small
//! (subscribe requests, pings, close) and are read with a minimal parser.

use std::{io, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Opcodes used here.
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// Largest client frame or HTTP request accepted.
const MAX_INBOUND: usize = 1 << 20;

/// Append one unmasked, final frame to `out`.
pub fn encode(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if len <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Split a buffer of unmasked frames (as produced by [`encode`]) into
/// `(opcode, payload)` pairs. For the in-process decode limit, which must
/// see exactly the bytes the clients see.
pub fn frames(mut buf: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 2 {
            return None;
        }
        let opcode = buf[0] & 0x0F;
        let (len, header) = match buf[1] & 0x7F {
            126 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
            127 => (u64::from_be_bytes(buf[2..10].try_into().ok()?) as usize, 10),
            n => (n as usize, 2),
        };
        let payload = &buf[header..header + len];
        buf = &buf[header + len..];
        Some((opcode, payload))
    })
}

/// Read an HTTP upgrade request and answer it. Returns the request path.
pub async fn accept(stream: &mut TcpStream, timeout: Duration) -> io::Result<String> {
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(timeout, stream.read(&mut chunk))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "upgrade request"))??;
        if n == 0 || request.len() + n > MAX_INBOUND {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad request"));
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&request);
    let path = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/")
        .to_string();
    let key = text
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_string())
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Sec-WebSocket-Key"))?;
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    Ok(path)
}

/// Reads whole client frames (masked; fragments are not used by the
/// clients measured here and are refused).
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// The next `(opcode, payload)`; `None` at end of stream.
    pub async fn next<R: AsyncReadExt + Unpin>(
        &mut self,
        stream: &mut R,
    ) -> io::Result<Option<(u8, Vec<u8>)>> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(Some(frame));
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if self.buf.len() > MAX_INBOUND {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too big"));
            }
        }
    }

    fn parse(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        if b[0] & 0x80 == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "fragmented"));
        }
        let opcode = b[0] & 0x0F;
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap_or_default()) as usize,
                10,
            ),
            126 | 127 => return Ok(None),
            n => (n as usize, 2),
        };
        if len > MAX_INBOUND {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too big"));
        }
        let mask = if masked {
            if b.len() < at + 4 {
                return Ok(None);
            }
            let m = [b[at], b[at + 1], b[at + 2], b[at + 3]];
            at += 4;
            Some(m)
        } else {
            None
        };
        if b.len() < at + len {
            return Ok(None);
        }
        let mut payload = b[at..at + len].to_vec();
        if let Some(m) = mask {
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= m[i % 4];
            }
        }
        self.buf.drain(..at + len);
        Ok(Some((opcode, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_and_split_round_trip() {
        let mut out = Vec::new();
        encode(TEXT, b"hi", &mut out);
        encode(BINARY, &vec![7u8; 300], &mut out);
        encode(TEXT, &vec![b'x'; 70_000], &mut out);
        let got: Vec<_> = frames(&out).map(|(op, p)| (op, p.len())).collect();
        assert_eq!(got, vec![(TEXT, 2), (BINARY, 300), (TEXT, 70_000)]);
    }
}
