//! Output shipping bookkeeping for one job: per stream, how far the agent has
//! sent and how far the coordinator has acknowledged, a bound on unacknowledged
//! bytes (backpressure), which stream to read next, and the spool reads
//! themselves (large positioned reads off the runtime's threads).
//!
//! Invariants: `acked <= sent`; bytes are sent in order from `sent`; the
//! unacknowledged total of a job never exceeds `max_unacked_bytes` by more than
//! one chunk's worth of rounding (a read never asks past the window).

use crate::config::ShipConfig;
use crate::model::{STREAMS, Stream};
use std::fs::File;
use std::io;
use std::io::{Read as _, Seek, SeekFrom};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// If acknowledgements stop advancing for this long while bytes are in
/// flight, the agent re-sends from the last acknowledged offset (the
/// coordinator drops chunks past a gap and answers with the length it has).
pub const STALL_REWIND: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    sent: u64,
    acked: u64,
}

/// One read to do: `len` bytes of `stream` from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Read {
    pub stream: Stream,
    pub offset: u64,
    pub len: usize,
}

/// Send/ack offsets of a job's three streams.
#[derive(Clone, Debug)]
pub struct Shipper {
    cfg: ShipConfig,
    cursors: [Cursor; STREAMS],
    next: usize,
    last_progress: Instant,
}

impl Shipper {
    pub fn new(cfg: ShipConfig) -> Self {
        Self {
            cfg,
            cursors: [Cursor { sent: 0, acked: 0 }; STREAMS],
            next: 0,
            last_progress: Instant::now(),
        }
    }

    /// Starts over from the coordinator's durable lengths (a new session).
    pub fn resume(&mut self, offsets: [u64; STREAMS], now: Instant) {
        self.cursors = offsets.map(|o| Cursor { sent: o, acked: o });
        self.last_progress = now;
    }

    /// Records that every byte of `stream` before `offset` is durable.
    pub fn ack(&mut self, stream: Stream, offset: u64, now: Instant) {
        let c = &mut self.cursors[stream.index()];
        if offset > c.acked {
            c.acked = offset;
            c.sent = c.sent.max(offset);
            self.last_progress = now;
        }
    }

    pub fn sent(&self, stream: Stream) -> u64 {
        self.cursors[stream.index()].sent
    }

    pub fn acked(&self, stream: Stream) -> u64 {
        self.cursors[stream.index()].acked
    }

    /// Bytes sent and not yet acknowledged, over all streams.
    pub fn unacked(&self) -> u64 {
        self.cursors.iter().map(|c| c.sent - c.acked).sum()
    }

    /// The next read, given how long each spool file is now, or `None` when
    /// everything available is sent or the window is full. Streams take turns.
    pub fn next_read(&mut self, lengths: &[u64; STREAMS]) -> Option<Read> {
        let room = self.cfg.max_unacked_bytes.saturating_sub(self.unacked());
        if room == 0 {
            return None;
        }
        for i in 0..STREAMS {
            let idx = (self.next + i) % STREAMS;
            let c = self.cursors[idx];
            let avail = lengths[idx].saturating_sub(c.sent);
            if avail > 0 {
                self.next = (idx + 1) % STREAMS;
                let len = avail.min(room).min(self.cfg.chunk_bytes as u64) as usize;
                return Some(Read {
                    stream: Stream::ALL[idx],
                    offset: c.sent,
                    len,
                });
            }
        }
        None
    }

    /// Records that `n` bytes of `stream` were sent from its `sent` offset.
    pub fn advance(&mut self, stream: Stream, n: u64, now: Instant) {
        let c = &mut self.cursors[stream.index()];
        if c.sent == c.acked {
            // The first byte in flight starts the stall clock.
            self.last_progress = now;
        }
        c.sent += n;
    }

    /// Whether every byte up to `lengths` has been sent.
    pub fn caught_up(&self, lengths: &[u64; STREAMS]) -> bool {
        self.cursors
            .iter()
            .zip(lengths)
            .all(|(c, len)| c.sent >= *len)
    }

    /// Whether every byte up to `lengths` has been acknowledged.
    pub fn all_acked(&self, lengths: &[u64; STREAMS]) -> bool {
        self.cursors
            .iter()
            .zip(lengths)
            .all(|(c, len)| c.acked >= *len)
    }

    /// When [`Self::rewind_if_stalled`] would rewind if no ack comes: only
    /// while bytes are in flight, so a caught-up job sets no timer.
    pub fn stall_deadline(&self) -> Option<Instant> {
        (self.unacked() > 0).then(|| self.last_progress + STALL_REWIND)
    }

    /// Rewinds to the acknowledged offsets when acknowledgements have stalled
    /// for `STALL_REWIND` with bytes in flight; returns whether it did.
    pub fn rewind_if_stalled(&mut self, now: Instant) -> bool {
        if self.unacked() == 0 || now.duration_since(self.last_progress) < STALL_REWIND {
            return false;
        }
        for c in &mut self.cursors {
            c.sent = c.acked;
        }
        self.last_progress = now;
        true
    }
}

/// Reads `reads` in order on one blocking thread (one hand-off for several
/// chunks). Each result holds fewer bytes than asked only at end of file;
/// reading stops after the first short read or error, so the results are a
/// prefix of `reads` (an error is returned only when nothing was read).
pub async fn read_batch(reads: Vec<(Arc<File>, Read)>) -> io::Result<Vec<Vec<u8>>> {
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(reads.len());
        for (file, r) in &reads {
            match read_range(file, r.offset, r.len) {
                Ok(buf) => {
                    let short = buf.len() < r.len;
                    out.push(buf);
                    if short {
                        break;
                    }
                }
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        Ok(out)
    })
    .await
    .map_err(io::Error::other)?
}

/// Reads up to `len` bytes at `offset` into a fresh buffer that is not
/// zero-filled first (`read_to_end` reads into the spare capacity).
fn read_range(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len);
    f.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(chunk: usize, window: u64) -> ShipConfig {
        ShipConfig {
            chunk_bytes: chunk,
            max_unacked_bytes: window,
        }
    }

    fn drain(s: &mut Shipper, lengths: &[u64; STREAMS], now: Instant) -> Vec<Read> {
        let mut out = Vec::new();
        while let Some(r) = s.next_read(lengths) {
            s.advance(r.stream, r.len as u64, now);
            out.push(r);
        }
        out
    }

    #[test]
    fn reads_are_chunked_contiguous_and_windowed() {
        let now = Instant::now();
        let mut s = Shipper::new(cfg(10, 25));
        let reads = drain(&mut s, &[40, 0, 0, 0, 0], now);
        assert_eq!(
            reads.iter().map(|r| (r.offset, r.len)).collect::<Vec<_>>(),
            [(0, 10), (10, 10), (20, 5)]
        );
        assert_eq!(s.unacked(), 25);
        assert!(s.next_read(&[40, 0, 0, 0, 0]).is_none(), "window full");
        s.ack(Stream::Stdout, 20, now);
        let reads = drain(&mut s, &[40, 0, 0, 0, 0], now);
        assert_eq!(
            reads.iter().map(|r| (r.offset, r.len)).collect::<Vec<_>>(),
            [(25, 10), (35, 5)]
        );
        assert!(s.caught_up(&[40, 0, 0, 0, 0]));
        assert!(!s.all_acked(&[40, 0, 0, 0, 0]));
        s.ack(Stream::Stdout, 40, now);
        assert!(s.all_acked(&[40, 0, 0, 0, 0]));
        assert_eq!(s.unacked(), 0);
    }

    #[test]
    fn streams_take_turns() {
        let now = Instant::now();
        let mut s = Shipper::new(cfg(4, 100));
        let reads = drain(&mut s, &[8, 8, 4, 0, 0], now);
        let order: Vec<Stream> = reads.iter().map(|r| r.stream).collect();
        assert_eq!(
            order,
            [
                Stream::Stdout,
                Stream::Stderr,
                Stream::ExecutionLog,
                Stream::Stdout,
                Stream::Stderr
            ]
        );
    }

    #[test]
    fn job_preparation_streams_are_shipped_too() {
        let now = Instant::now();
        let mut s = Shipper::new(cfg(4, 100));
        let lengths = [4, 0, 0, 8, 4];
        let reads = drain(&mut s, &lengths, now);
        let order: Vec<(Stream, u64)> = reads.iter().map(|r| (r.stream, r.offset)).collect();
        assert_eq!(
            order,
            [
                (Stream::Stdout, 0),
                (Stream::JobPrepStdout, 0),
                (Stream::JobPrepStderr, 0),
                (Stream::JobPrepStdout, 4),
            ]
        );
        assert!(s.caught_up(&lengths));
    }

    #[test]
    fn resume_restarts_from_durable_offsets_and_old_acks_are_ignored() {
        let now = Instant::now();
        let mut s = Shipper::new(cfg(10, 100));
        drain(&mut s, &[30, 5, 0, 0, 0], now);
        s.resume([12, 0, 0, 0, 0], now);
        assert_eq!((s.sent(Stream::Stdout), s.acked(Stream::Stdout)), (12, 12));
        s.ack(Stream::Stdout, 3, now);
        assert_eq!(s.acked(Stream::Stdout), 12, "acks never go backwards");
        let r = s.next_read(&[30, 0, 0, 0, 0]).unwrap();
        assert_eq!((r.stream, r.offset, r.len), (Stream::Stdout, 12, 10));
    }

    #[test]
    fn ack_past_sent_moves_sent() {
        let now = Instant::now();
        let mut s = Shipper::new(cfg(10, 100));
        s.ack(Stream::Stderr, 50, now);
        assert_eq!(s.sent(Stream::Stderr), 50);
        assert!(s.next_read(&[0, 50, 0, 0, 0]).is_none());
    }

    #[test]
    fn stalled_acks_rewind_to_the_acked_offset() {
        let t0 = Instant::now();
        let mut s = Shipper::new(cfg(10, 100));
        drain(&mut s, &[30, 0, 0, 0, 0], t0);
        s.ack(Stream::Stdout, 10, t0);
        assert_eq!(s.stall_deadline(), Some(t0 + STALL_REWIND));
        assert!(!s.rewind_if_stalled(t0 + Duration::from_secs(1)));
        assert!(s.rewind_if_stalled(t0 + STALL_REWIND + Duration::from_millis(1)));
        assert_eq!(s.sent(Stream::Stdout), 10);
        assert_eq!(s.unacked(), 0);
        assert!(
            !s.rewind_if_stalled(t0 + STALL_REWIND * 3),
            "nothing in flight"
        );
        assert_eq!(
            s.stall_deadline(),
            None,
            "no timer while nothing is in flight"
        );
    }

    #[tokio::test]
    async fn read_batch_reads_exact_ranges_and_stops_at_a_short_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        std::fs::write(&p, &data).unwrap();
        let f = Arc::new(File::open(&p).unwrap());
        let read = |offset, len| {
            (
                f.clone(),
                Read {
                    stream: Stream::Stdout,
                    offset,
                    len,
                },
            )
        };
        let got = read_batch(vec![
            read(100, 1000),
            read(1100, 1000),
            read(4900, 1000),
            read(0, 10),
        ])
        .await
        .unwrap();
        assert_eq!(got.len(), 3, "nothing read after the short read");
        assert_eq!(got[0], data[100..1100]);
        assert_eq!(got[1], data[1100..2100]);
        assert_eq!(got[2], data[4900..]);
        let got = read_batch(vec![read(6000, 10)]).await.unwrap();
        assert_eq!(got, [Vec::<u8>::new()]);
    }
}
