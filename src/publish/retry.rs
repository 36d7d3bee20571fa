//! How the publisher retries and what it logs while it does: reconnect
//! delays with exponential backoff and jitter, and warnings rate-limited
//! per cause.
//!
//! What it does not do: decide when a connection counts as healthy, or
//! what to retry (`publish`).

use core::fmt;
use std::time::Duration;
use tokio::time::Instant;

/// Reconnect delays grow from this to [`BACKOFF_MAX`], doubling per try.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Log lines about one cause: the first is logged, repeats within this
/// interval are counted and left out, and the first repeat after it is
/// logged with that count.
const LOG_REPEAT_INTERVAL: Duration = Duration::from_secs(60);
/// Causes the log throttle remembers; the least recent is forgotten beyond.
const LOG_CAUSES: usize = 8;
/// Reconnect delays: exponential from [`BACKOFF_FIRST`] to [`BACKOFF_MAX`],
/// each jittered between half and all of it so that sensors restarted
/// together do not reconnect in lockstep. The jitter is a small xorshift
/// generator seeded from the clock and the process id: it only has to
/// differ between sensors.
pub(super) struct Backoff {
    next: Duration,
    state: u64,
}

impl Backoff {
    pub(super) fn new() -> Backoff {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Backoff {
            next: BACKOFF_FIRST,
            state: u64::from(nanos) << 32 | u64::from(std::process::id()) | 1,
        }
    }

    /// The delay before the next attempt; the one after is twice as long.
    pub(super) fn wait(&mut self) -> Duration {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let unit = (self.state >> 11) as f64 / (1u64 << 53) as f64;
        let wait = self.next.mul_f64(0.5 + 0.5 * unit);
        self.next = (self.next * 2).min(BACKOFF_MAX);
        wait
    }

    pub(super) fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

/// Rate-limited warnings, per cause: the first line about a cause is
/// logged; repeats within [`LOG_REPEAT_INTERVAL`] of it are counted and
/// left out; the first repeat after the interval is logged with how many
/// were left out, and starts a new interval. So one cause writes at most
/// one line a minute however often it happens.
pub(super) struct Throttle {
    causes: Vec<Cause>,
}

struct Cause {
    key: String,
    since: Instant,
    left_out: u64,
}

impl Throttle {
    pub(super) fn new() -> Throttle {
        Throttle {
            causes: Vec::with_capacity(LOG_CAUSES),
        }
    }

    /// Log `line` unless a line about `cause` was logged less than
    /// [`LOG_REPEAT_INTERVAL`] ago.
    pub(super) fn log(&mut self, level: log::Level, cause: &str, line: impl fmt::Display) {
        let now = Instant::now();
        let Some(known) = self.causes.iter_mut().find(|c| c.key == cause) else {
            if self.causes.len() == LOG_CAUSES {
                self.causes.remove(0);
            }
            self.causes.push(Cause {
                key: cause.to_string(),
                since: now,
                left_out: 0,
            });
            return log::log!(level, "{line}");
        };
        if now < known.since + LOG_REPEAT_INTERVAL {
            known.left_out += 1;
            return;
        }
        match std::mem::take(&mut known.left_out) {
            0 => log::log!(level, "{line}"),
            n => log::log!(
                level,
                "{line} ({n} more like it in the last {} s)",
                (now - known.since).as_secs()
            ),
        }
        known.since = now;
    }
}
