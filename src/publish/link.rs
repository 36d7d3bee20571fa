//! The broker connection under minimq: plain TCP, TLS or WebSocket, with
//! outgoing packets coalesced into few `send(2)` calls and incoming bytes
//! read in gulps, and what the broker sends followed by `heard`.
//!
//! What it does not do: decide what to publish or when (`publish`).

use super::heard::{Heard, Listener};
use core::cell::Cell;
use std::os::fd::OwnedFd;
use std::rc::Rc;

/// Bytes of outgoing MQTT packets gathered into one `send(2)`.
const SEND_BATCH_BYTES: usize = 64 * 1024;
/// Bytes taken from the socket in one `recv(2)`: about a thousand PUBACKs.
const RECEIVE_BATCH_BYTES: usize = 4096;

/// The broker connection, with outgoing packets coalesced.
///
/// minimq writes and flushes every packet; on a socket that is a system
/// call (and a TCP segment) per message, which measured most of the agent's
/// CPU time (see docs/performance.md). Here `flush` only marks the bytes
/// ready, and they go out in one `send` when the buffer is full or when
/// minimq waits to read and nothing has arrived — so while acknowledgements
/// stream in, the publishes they make room for are gathered, and nothing
/// stays in the buffer while the client waits for an answer.
/// [`Coalescing::drain`] sends what is left before the connection is closed.
///
/// Reads are buffered too: minimq reads a packet's fixed header a byte at a
/// time, which made three `recv` calls of every 4-byte PUBACK.
///
/// While the publisher can send nothing until PUBACKs come (`blocked`), it
/// acknowledges what it read at once (`TCP_QUICKACK`) rather than after the
/// delayed-ACK timer: a broker with Nagle's algorithm on (mosquitto's
/// default) holds each PUBACK after the first until that first is
/// acknowledged, and with no PUBLISH of ours to carry the ACK each round of
/// PUBACKs waited 40 ms (docs/performance.md). Otherwise the ACK waits for
/// our next segment, and the broker's PUBACKs come in fewer segments.
pub(super) struct Coalescing {
    stream: Link,
    /// The TCP socket under any TLS and WebSocket, for `TCP_QUICKACK`; `None`
    /// when it could not be duplicated (the ACKs are then delayed as usual).
    socket: Option<OwnedFd>,
    /// Bytes were read since the last segment of ours, which would have
    /// carried their ACK.
    ack_pending: bool,
    /// Set by the publisher while it waits for PUBACKs with nothing to send.
    blocked: Rc<Cell<bool>>,
    /// Follows what the broker sends, for what minimq does not tell.
    listener: Listener,
    heard: Rc<Cell<Heard>>,
    out: Vec<u8>,
    sent: usize,
    /// Received bytes not yet handed to minimq: `input[taken..filled]`.
    input: Box<[u8]>,
    taken: usize,
    filled: usize,
}

/// The broker connection: plain TCP or TLS over it, boxed once a connection.
pub(super) type Link = Box<dyn Transport>;

pub(super) trait Transport: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Transport for T {}

impl Coalescing {
    pub(super) fn new(
        stream: Link,
        socket: Option<OwnedFd>,
        heard: Rc<Cell<Heard>>,
        blocked: Rc<Cell<bool>>,
    ) -> Coalescing {
        Coalescing {
            stream,
            socket,
            ack_pending: false,
            blocked,
            listener: Listener::default(),
            heard,
            out: Vec::with_capacity(SEND_BATCH_BYTES),
            sent: 0,
            input: vec![0; RECEIVE_BATCH_BYTES].into_boxed_slice(),
            taken: 0,
            filled: 0,
        }
    }

    /// Send every gathered byte. Progress is kept in `self`, so a cancelled
    /// call resumes where it stopped.
    pub(super) async fn drain(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]).await? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n => {
                    self.sent += n;
                    self.ack_pending = false;
                }
            }
        }
        if !self.out.is_empty() {
            // TLS holds records until flushed; plain TCP flushes as a no-op.
            self.stream.flush().await?;
        }
        self.out.clear();
        self.sent = 0;
        Ok(())
    }

    /// While blocked, acknowledge what was read if no segment of ours has:
    /// the kernel sends a pending ACK when `TCP_QUICKACK` is set (tcp(7)),
    /// and clears the flag itself later, so this is asked each time.
    fn acknowledge_if_blocked(&mut self) {
        if !(self.ack_pending && self.blocked.get()) {
            return;
        }
        if let Some(socket) = &self.socket {
            // An error leaves the ACK delayed, as without this.
            let _ = rustix::net::sockopt::set_tcp_quickack(socket, true);
        }
        self.ack_pending = false;
    }

    /// Take what can be read without waiting: `None` when nothing can.
    async fn read_now(&mut self) -> Option<std::io::Result<usize>> {
        use std::pin::Pin;
        use std::task::Poll;
        use tokio::io::AsyncRead;
        std::future::poll_fn(|cx| {
            let mut buf = tokio::io::ReadBuf::new(&mut self.input);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(result) => Poll::Ready(Some(result.map(|()| buf.filled().len()))),
                Poll::Pending => Poll::Ready(None),
            }
        })
        .await
    }
}

impl embedded_io_async::ErrorType for Coalescing {
    type Error = std::io::Error;
}

impl embedded_io_async::Write for Coalescing {
    async fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() == self.out.capacity() {
            self.drain().await?;
        }
        let n = buf.len().min(self.out.capacity() - self.out.len());
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl embedded_io_async::Read for Coalescing {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        if buf.is_empty() {
            return Ok(0);
        }
        if self.taken == self.filled {
            let got = match self.read_now().await {
                Some(result) => result?,
                None => {
                    // Nothing to read now: send what has gathered, then wait.
                    self.drain().await?;
                    self.acknowledge_if_blocked();
                    self.stream.read(&mut self.input).await?
                }
            };
            if got == 0 {
                return Ok(0);
            }
            self.ack_pending = true;
            self.listener.feed(&self.input[..got]);
            self.heard.set(self.listener.heard);
            (self.taken, self.filled) = (0, got);
        }
        let n = buf.len().min(self.filled - self.taken);
        buf[..n].copy_from_slice(&self.input[self.taken..self.taken + n]);
        self.taken += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_io_async::Read as _;
    use rustix::net::sockopt::{set_tcp_quickack, tcp_quickack};
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    /// A link on a real loopback connection in delayed-ACK mode reads a
    /// PUBACK and goes back to waiting. Returns whether the kernel was told
    /// to acknowledge at once, and whether the link still counts the ACK
    /// as owed.
    fn read_a_puback_and_wait(blocked: bool) -> (bool, bool) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut broker = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (ours, _) = listener.accept().await.unwrap();
            let socket = rustix::io::dup(&ours).unwrap();
            // Delayed ACKs, as on a connection carrying data both ways
            // (a new one acknowledges its first segments at once).
            set_tcp_quickack(&socket, false).unwrap();
            let mut link = Coalescing::new(
                Box::new(ours),
                rustix::io::dup(&socket).ok(),
                Rc::default(),
                Rc::new(Cell::new(blocked)),
            );
            broker.write_all(&[0x40, 2, 0, 1]).await.unwrap();
            let mut puback = [0u8; 4];
            link.read_exact(&mut puback).await.unwrap();
            // Nothing more comes: the link waits. 10 ms is well within the
            // kernel's 40 ms delayed-ACK timer, which would also leave
            // delayed-ACK mode.
            let waited = tokio::time::timeout(Duration::from_millis(10), link.read(&mut puback)).await;
            assert!(waited.is_err(), "nothing more was sent");
            (tcp_quickack(&socket).unwrap(), link.ack_pending)
        })
    }

    #[test]
    fn a_blocked_publisher_acknowledges_what_it_read_at_once() {
        assert_eq!(read_a_puback_and_wait(true), (true, false));
    }

    #[test]
    fn a_publisher_with_room_leaves_the_ack_to_its_next_segment() {
        let (_, owed) = read_a_puback_and_wait(false);
        assert!(owed, "the ACK is left for the next PUBLISH to carry");
    }
}
