//! Metrics: an optional Prometheus text endpoint, `GET /metrics` on
//! METRICS_ADDR. Off by default: without METRICS_ADDR no socket listens.
//!
//! Every counter of [`Counters`] as `sip_capture_<name>_total` (the levels
//! without `_total`, as gauges), plus `sip_capture_uptime_seconds` and
//! `sip_capture_build_info{version=...}`. One request at a time, each with
//! a deadline, so a stuck scraper cannot hold the agent.
//!
//! What it does not do: accept anything but `GET /metrics`, or change
//! anything in the agent.

use crate::counters::Counters;
use core::fmt::Write as _;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long one scrape may take, request and response.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// The longest request head read.
const MAX_REQUEST: usize = 2048;

/// The Prometheus text exposition of `counters`.
pub fn exposition(counters: &Counters, uptime: Duration) -> String {
    let mut text = String::with_capacity(8192);
    let _ = write!(
        text,
        "# HELP sip_capture_build_info The agent's version.\n# TYPE sip_capture_build_info gauge\n\
sip_capture_build_info{{version=\"{}\"}} 1\n\
# HELP sip_capture_uptime_seconds Seconds since the agent started.\n# TYPE sip_capture_uptime_seconds gauge\n\
sip_capture_uptime_seconds {}\n",
        env!("CARGO_PKG_VERSION"),
        uptime.as_secs()
    );
    for r in counters.snapshot() {
        let (name, kind) = if r.gauge {
            (format!("sip_capture_{}", r.name), "gauge")
        } else {
            (format!("sip_capture_{}_total", r.name), "counter")
        };
        let _ = write!(
            text,
            "# HELP {name} {}\n# TYPE {name} {kind}\n{name} {}\n",
            r.help, r.value
        );
    }
    text
}

/// Answer scrapes on `listener` until the task is dropped.
pub async fn serve(listener: std::net::TcpListener, counters: &Counters) -> std::io::Result<()> {
    let started = Instant::now();
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = tokio::time::timeout(REQUEST_DEADLINE, respond(stream, counters, started)).await;
            }
            // Out of descriptors and the like: wait and go on.
            Err(e) => {
                log::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn respond(mut stream: TcpStream, counters: &Counters, started: Instant) -> std::io::Result<()> {
    let mut request = [0u8; MAX_REQUEST];
    let mut len = 0;
    while !request[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < MAX_REQUEST {
        match stream.read(&mut request[len..]).await? {
            0 => break,
            n => len += n,
        }
    }
    let response = if request[..len].starts_with(b"GET /metrics ")
        || request[..len].starts_with(b"GET /metrics?")
    {
        let body = exposition(counters, started.elapsed());
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
