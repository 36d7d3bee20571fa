//! MQTT over WebSocket (`ws://`, `wss://`): the broker link wrapped in
//! RFC 6455 frames, for sites where only HTTPS leaves the network (AWS IoT
//! Core, EMQX, HiveMQ and mosquitto serve MQTT this way; MQTT 5.0 §6).
//!
//! The opening handshake asks for the subprotocol `mqtt` on the URL's path
//! (`/mqtt` when the URL has none). Outgoing MQTT bytes go in masked binary
//! frames, one per write the publisher gathers; incoming binary frames are
//! unwrapped into a byte stream, since frame boundaries mean nothing to MQTT
//! (§6: a packet may span frames). Pings are answered; a close frame ends
//! the link like a closed socket. Frames are encoded and decoded by
//! embedded-websocket into buffers allocated once per connection, so no
//! message allocates.
//!
//! What it does not do: permessage-deflate, HTTP proxies, or text frames
//! (MQTT over WebSocket is binary; a text frame is a protocol error).

use embedded_websocket::{
    Error as WsError, WebSocketClient, WebSocketOptions, WebSocketReceiveMessageType,
    WebSocketSendMessageType,
};
use std::io::{Error, ErrorKind};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The largest payload of one outgoing frame: a write of more is split.
const FRAME_PAYLOAD_BYTES: usize = 16 * 1024;
/// A frame header: 2 bytes, 8 of extended length, 4 of mask.
const FRAME_HEADER_BYTES: usize = 14;
/// Received bytes buffered before they are unwrapped.
const RECEIVE_BYTES: usize = 16 * 1024;
/// The handshake request and the broker's answer must fit in this.
const HANDSHAKE_BYTES: usize = 4096;
/// The path asked for when the URL has none: what AWS IoT Core, EMQX,
/// HiveMQ and VerneMQ serve.
pub const DEFAULT_PATH: &str = "/mqtt";

/// Masking keys (RFC 6455 §5.3: from a strong source of entropy), from the
/// operating system's generator.
struct MaskKeys;

impl rand_core::RngCore for MaskKeys {
    fn next_u32(&mut self) -> u32 {
        let mut bytes = [0; 4];
        self.fill_bytes(&mut bytes);
        u32::from_ne_bytes(bytes)
    }

    fn next_u64(&mut self) -> u64 {
        let mut bytes = [0; 8];
        self.fill_bytes(&mut bytes);
        u64::from_ne_bytes(bytes)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        // getrandom(2) fails only before the kernel's pool is initialised,
        // long past by the time a broker is reached; a zero key is still a
        // valid frame.
        let _ = getrandom::getrandom(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// A broker link carrying MQTT in WebSocket frames.
pub struct WebSocket<S> {
    inner: S,
    ws: WebSocketClient<MaskKeys>,
    /// Received bytes not yet unwrapped: `received[..received_len]`.
    received: Box<[u8]>,
    received_len: usize,
    /// Unwrapped payload not yet read: `payload[payload_at..payload_len]`.
    payload: Box<[u8]>,
    payload_at: usize,
    payload_len: usize,
    /// An encoded frame being sent: `frame[frame_at..frame_len]`.
    frame: Box<[u8]>,
    frame_at: usize,
    frame_len: usize,
    /// A ping's answer is due, with these payload bytes.
    pong: Option<heapless::Vec<u8, 125>>,
    /// The broker closed the WebSocket.
    closed: bool,
}

/// Open a WebSocket on `inner` (a connected socket, or TLS over it) to
/// `host:port` at `path`, asking for the subprotocol `mqtt`.
///
/// Errors: the broker's answer is not `101 Switching Protocols` with the
/// right accept key, names another subprotocol, or does not arrive.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    mut inner: S,
    host: &str,
    port: u16,
    path: &str,
    tls: bool,
) -> Result<WebSocket<S>, String> {
    let mut ws = WebSocketClient::new_client(MaskKeys);
    let authority = format!("{host}:{port}");
    let origin = format!("{}://{authority}", if tls { "https" } else { "http" });
    let options = WebSocketOptions {
        path,
        host: &authority,
        origin: &origin,
        sub_protocols: Some(&["mqtt"]),
        additional_headers: None,
    };
    let mut buffer = vec![0; HANDSHAKE_BYTES];
    let (len, key) = ws
        .client_connect(&options, &mut buffer)
        .map_err(|e| format!("WebSocket handshake: {e:?}"))?;
    inner
        .write_all(&buffer[..len])
        .await
        .and(inner.flush().await)
        .map_err(|e| format!("WebSocket handshake: {e}"))?;
    let mut got = 0;
    let (used, protocol) = loop {
        let n = inner
            .read(&mut buffer[got..])
            .await
            .map_err(|e| format!("WebSocket handshake: {e}"))?;
        if n == 0 {
            return Err("WebSocket handshake: the server closed the connection".into());
        }
        got += n;
        match ws.client_accept(&key, &buffer[..got]) {
            Ok(accepted) => break accepted,
            Err(WsError::HttpHeaderIncomplete) if got < buffer.len() => continue,
            Err(WsError::HttpResponseCodeInvalid(code)) => {
                return Err(format!(
                    "WebSocket handshake: the server answered HTTP {} instead of 101 (is {path} its MQTT path?)",
                    code.map_or("without a status".into(), |c| c.to_string())
                ));
            }
            Err(e) => return Err(format!("WebSocket handshake: {e:?}")),
        }
    };
    // A proxy in front of the broker may choose no subprotocol; a server
    // that chose another one does not speak MQTT here.
    if let Some(protocol) = protocol.filter(|p| !p.eq_ignore_ascii_case("mqtt")) {
        return Err(format!(
            "WebSocket handshake: the server chose subprotocol {protocol:?}, not \"mqtt\""
        ));
    }
    let mut received = vec![0; RECEIVE_BYTES].into_boxed_slice();
    let early = got - used;
    received[..early].copy_from_slice(&buffer[used..got]);
    Ok(WebSocket {
        inner,
        ws,
        received,
        received_len: early,
        payload: vec![0; RECEIVE_BYTES].into_boxed_slice(),
        payload_at: 0,
        payload_len: 0,
        frame: vec![0; FRAME_HEADER_BYTES + FRAME_PAYLOAD_BYTES].into_boxed_slice(),
        frame_at: 0,
        frame_len: 0,
        pong: None,
        closed: false,
    })
}

fn protocol_error(e: WsError) -> Error {
    Error::new(ErrorKind::InvalidData, format!("WebSocket: {e:?}"))
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Send the frame being sent, then a pong that is due.
    fn poll_send_frame(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            while self.frame_at < self.frame_len {
                let n = ready!(
                    Pin::new(&mut self.inner).poll_write(cx, &self.frame[self.frame_at..self.frame_len])
                )?;
                if n == 0 {
                    return Poll::Ready(Err(ErrorKind::WriteZero.into()));
                }
                self.frame_at += n;
            }
            let Some(pong) = self.pong.take() else {
                return Poll::Ready(Ok(()));
            };
            let len = self
                .ws
                .write(WebSocketSendMessageType::Pong, true, &pong, &mut self.frame)
                .map_err(protocol_error)?;
            (self.frame_at, self.frame_len) = (0, len);
        }
    }

    /// Unwrap one frame from the received bytes into the payload buffer;
    /// `false` when a whole frame header has not arrived.
    fn unwrap_frame(&mut self) -> std::io::Result<bool> {
        let result = match self
            .ws
            .read(&self.received[..self.received_len], &mut self.payload)
        {
            Ok(result) => result,
            Err(WsError::ReadFrameIncomplete) => return Ok(false),
            Err(e) => return Err(protocol_error(e)),
        };
        self.received.copy_within(result.len_from..self.received_len, 0);
        self.received_len -= result.len_from;
        match result.message_type {
            WebSocketReceiveMessageType::Binary => (self.payload_at, self.payload_len) = (0, result.len_to),
            WebSocketReceiveMessageType::Ping => {
                self.pong = heapless::Vec::from_slice(&self.payload[..result.len_to.min(125)]).ok();
            }
            WebSocketReceiveMessageType::Pong => {}
            WebSocketReceiveMessageType::CloseMustReply | WebSocketReceiveMessageType::CloseCompleted => {
                self.closed = true;
            }
            WebSocketReceiveMessageType::Text => {
                return Err(Error::new(
                    ErrorKind::InvalidData,
                    "WebSocket: a text frame on an MQTT link",
                ));
            }
        }
        // A frame that made no progress cannot be unwrapped with more data.
        Ok(result.len_from > 0 || result.len_to > 0)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WebSocket<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.payload_at < this.payload_len {
                let n = buf.remaining().min(this.payload_len - this.payload_at);
                buf.put_slice(&this.payload[this.payload_at..this.payload_at + n]);
                this.payload_at += n;
                return Poll::Ready(Ok(()));
            }
            if this.pong.is_some() && this.frame_at == this.frame_len {
                // Answer a ping while nothing else is being sent; a write
                // that cannot go now is finished by the next write or flush.
                let _ = this.poll_send_frame(cx)?;
            }
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            if this.received_len > 0 && this.unwrap_frame()? {
                continue;
            }
            if this.received_len == this.received.len() {
                return Poll::Ready(Err(Error::new(
                    ErrorKind::InvalidData,
                    "WebSocket: frame header too long",
                )));
            }
            let mut read = ReadBuf::new(&mut this.received[this.received_len..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            match read.filled().len() {
                0 => return Poll::Ready(Ok(())),
                n => this.received_len += n,
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WebSocket<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send_frame(cx))?;
        let n = buf.len().min(FRAME_PAYLOAD_BYTES);
        let len = this
            .ws
            .write(WebSocketSendMessageType::Binary, true, &buf[..n], &mut this.frame)
            .map_err(protocol_error)?;
        (this.frame_at, this.frame_len) = (0, len);
        // The frame is this write's: start sending it now, and finish in
        // the next write or flush.
        let _ = this.poll_send_frame(cx)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_frame(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_frame(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
