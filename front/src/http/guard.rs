//! The HTTP/1.1 connection's guard: a wrapper of the socket that hyper reads through, holding the limits
//! hyper keeps differently or not at all (`http.py`'s `_GuardedProtocol` holds the same ones on the
//! Python front).
//!
//! hyper's `header_read_timeout` starts as soon as the connection can read a head, so on a kept-alive
//! connection it also counts the idle wait for the next request (one timeout for two settings), and
//! hyper answers a malformed or oversized head with a bare status of its own. The guard follows the
//! request framing as the bytes go by (each head through `httparse`, hyper's own parser, then
//! `Content-Length` bytes of body) and so knows which wait it is in:
//! - a head must be complete within `header_timeout` of the connection opening or of its first byte
//!   (past it: `408` when part of it had arrived, else a silent close);
//! - a head is at most `max_head_bytes` (`431`), and one `httparse` refuses is `400`;
//! - between requests, once the last reply is done, the connection may idle `idle_timeout`.
//!
//! A refused connection ends with an I/O error towards hyper (which then writes nothing); the refusal,
//! in the API's error JSON, is written when hyper drops the socket, followed by a lingering close.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::HttpLimits;

/// Header fields a head may have (hyper is set to the same).
pub const MAX_HEADERS: usize = 128;

/// Whether a reply is being worked on, shared by a connection's guard and its service.
#[derive(Debug, Default)]
pub struct Busy(Mutex<BusyState>);

#[derive(Debug, Default)]
struct BusyState {
    calls: usize,
    done: Option<Instant>,
}

/// A call in the service, from its start until dropped (its reply ready, or the call given up).
#[derive(Debug)]
pub struct Turn(Arc<Busy>);

impl Drop for Turn {
    fn drop(&mut self) {
        self.0.end();
    }
}

impl Busy {
    /// A request reached the service: no idle time until the returned turn is dropped.
    pub fn begin(self: &Arc<Self>) -> Turn {
        self.0.lock().expect("busy lock").calls += 1;
        Turn(Arc::clone(self))
    }

    /// A reply is ready: the idle time starts now, if no other call is running.
    fn end(&self) {
        let mut state = self.0.lock().expect("busy lock");
        state.calls = state.calls.saturating_sub(1);
        state.done = Some(Instant::now());
    }

    /// When the connection has idled too long, its last request having been read at `read`; None while
    /// a call runs.
    fn idle_deadline(&self, read: Instant, idle: Duration) -> Option<Instant> {
        let state = self.0.lock().expect("busy lock");
        // A request read but not yet begun counts from its reading, not from an earlier reply.
        (state.calls == 0).then(|| state.done.map_or(read, |done| done.max(read)) + idle)
    }
}

#[derive(Debug)]
enum Framing {
    /// Reading a head: its bytes so far, since when.
    Head { head: Vec<u8>, since: Instant },
    /// Reading a body: bytes left.
    Body(u64),
    /// Between requests (or waiting for the reply of the last one, whose head was read then).
    Between(Instant),
    /// A chunked body: framing no longer followed (the service refuses it and closes).
    Opaque,
}

/// The socket as hyper sees it.
#[derive(Debug)]
pub struct Guarded {
    stream: Option<TcpStream>,
    limits: Arc<HttpLimits>,
    busy: Arc<Busy>,
    framing: Framing,
    timer: Pin<Box<Sleep>>,
    /// Set when the guard ended the connection: what to send before closing (empty: nothing).
    refusal: Option<Bytes>,
}

impl Guarded {
    pub fn new(stream: TcpStream, limits: Arc<HttpLimits>, busy: Arc<Busy>) -> Guarded {
        let now = Instant::now();
        let timer = Box::pin(tokio::time::sleep_until((now + limits.header_timeout).into()));
        Guarded {
            stream: Some(stream),
            limits,
            busy,
            framing: Framing::Head { head: Vec::new(), since: now },
            timer,
            refusal: None,
        }
    }

    /// The instant the current wait ends the connection (None: no limit right now).
    fn deadline(&self) -> Option<Instant> {
        match &self.framing {
            Framing::Head { since, .. } => Some(*since + self.limits.header_timeout),
            Framing::Between(read) => self.busy.idle_deadline(*read, self.limits.idle_timeout),
            Framing::Body(_) | Framing::Opaque => None,
        }
    }

    fn refuse(&mut self, answer: Bytes) -> io::Error {
        self.refusal = Some(answer);
        io::Error::new(io::ErrorKind::ConnectionAborted, "refused by the HTTP limits")
    }

    fn expired(&mut self) -> io::Error {
        let answer = match &self.framing {
            Framing::Head { head, .. } if !head.is_empty() => {
                let message = format!("request head not received within {} s", seconds(self.limits.header_timeout));
                super::raw_error(408, "DEADLINE_EXCEEDED", &message)
            }
            _ => Bytes::new(),
        };
        self.refuse(answer)
    }

    /// Follows the framing over bytes just read; an error ends the connection.
    fn observe(&mut self, mut bytes: &[u8]) -> Result<(), io::Error> {
        while !bytes.is_empty() {
            match &mut self.framing {
                Framing::Between(_) => self.framing = Framing::Head { head: Vec::new(), since: Instant::now() },
                Framing::Head { head, .. } => {
                    let before = head.len();
                    head.extend_from_slice(bytes);
                    match parse_head(head, self.limits.max_head_bytes) {
                        Ok(Some((len, body))) => {
                            bytes = &bytes[len.saturating_sub(before)..];
                            self.framing = match body {
                                Some(0) => Framing::Between(Instant::now()),
                                Some(n) => Framing::Body(n),
                                None => Framing::Opaque,
                            };
                        }
                        Ok(None) => bytes = &[],
                        Err(answer) => return Err(self.refuse(answer)),
                    }
                }
                Framing::Body(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.framing = Framing::Between(Instant::now());
                    }
                }
                Framing::Opaque => return Ok(()),
            }
        }
        Ok(())
    }
}

/// A head's length and its body's (None: chunked) once complete; Ok(None) while incomplete; the
/// refusal when it is malformed or over `max` bytes.
fn parse_head(head: &[u8], max: usize) -> Result<Option<(usize, Option<u64>)>, Bytes> {
    let too_large = || super::raw_error(431, "RESOURCE_EXHAUSTED", &format!("request head over {max} bytes"));
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    match request.parse(head) {
        Ok(httparse::Status::Complete(len)) if len <= max => {
            let mut body = Some(0);
            for field in request.headers.iter() {
                if field.name.eq_ignore_ascii_case("transfer-encoding") {
                    body = None;
                    break;
                }
                if field.name.eq_ignore_ascii_case("content-length") {
                    // A bad value is hyper's to refuse (`400`); the framing is not followed past it.
                    body = std::str::from_utf8(field.value).ok().and_then(|v| v.trim().parse().ok());
                }
            }
            Ok(Some((len, body)))
        }
        Ok(httparse::Status::Partial) if head.len() <= max => Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => Err(too_large()),
        Err(e) => Err(super::raw_error(400, "INVALID_ARGUMENT", &format!("malformed HTTP request: {e}"))),
    }
}

/// A duration as `http.py` prints one (`{:g}` of its seconds: `1`, `2.5`).
pub fn seconds(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.refusal.is_some() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        if let Some(deadline) = this.deadline() {
            let deadline = tokio::time::Instant::from(deadline);
            if this.timer.deadline() != deadline {
                this.timer.as_mut().reset(deadline);
            }
            if this.timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(this.expired()));
            }
        }
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        let before = buf.filled().len();
        ready!(Pin::new(stream).poll_read(cx, buf))?;
        let (start, end) = (before, buf.filled().len());
        Poll::Ready(this.observe(&buf.filled()[start..end]))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.stream.as_mut() {
            Some(stream) => Pin::new(stream).poll_write(cx, data),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream.as_mut() {
            Some(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream.as_mut() {
            Some(stream) => Pin::new(stream).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.refusal.is_some() {
            return Poll::Ready(Ok(())); // the refusal is written first, on drop
        }
        match self.stream.as_mut() {
            Some(stream) => Pin::new(stream).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let (Some(stream), Some(answer)) = (self.stream.take(), self.refusal.take()) {
            // Dropped on the runtime (the connection's task); a runtime shutting down has no one to answer.
            if let (false, Ok(rt)) = (answer.is_empty(), tokio::runtime::Handle::try_current()) {
                rt.spawn(refuse(stream, answer, self.limits.linger));
            }
        }
    }
}

/// Sends `answer`, ends our side, then reads and drops what the client still sends for up to `linger`
/// before closing: closing with unread bytes makes the kernel reset the connection, and a reset can
/// reach the client before it has read the answer (`http.py`'s lingering close, the same bounds).
pub async fn refuse(mut stream: TcpStream, answer: Bytes, linger: (usize, Duration)) {
    let (max_bytes, max_time) = linger;
    let _ = tokio::time::timeout(max_time, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 8192];
        let mut seen = 0;
        while seen <= max_bytes {
            match stream.read(&mut sink).await? {
                0 => break,
                n => seen += n,
            }
        }
        Ok::<(), io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_framed_and_checked() {
        let head = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n{\"a\": 1}";
        assert_eq!(parse_head(head, 1024), Ok(Some((head.len() - 8, Some(12)))));
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1024), Ok(Some((27, Some(0)))));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_head(chunked, 1024), Ok(Some((chunked.len(), None))));
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost:", 1024), Ok(None));
        let err = |r: Result<_, Bytes>| String::from_utf8(r.unwrap_err().to_vec()).unwrap();
        assert!(err(parse_head(b"GET / HTTP/1.1\r\nHost: aaaa", 20)).starts_with("HTTP/1.1 431 "));
        assert!(err(parse_head(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n", 1024)).contains("malformed HTTP request: "));
        assert_eq!(seconds(Duration::from_secs(1)), "1");
        assert_eq!(seconds(Duration::from_millis(2500)), "2.5");
    }

    #[test]
    fn idle_time_counts_from_the_last_reply_or_request() {
        let (busy, idle, read) = (Arc::new(Busy::default()), Duration::from_secs(5), Instant::now());
        assert_eq!(busy.idle_deadline(read, idle), Some(read + idle));
        let turn = busy.begin();
        assert_eq!(busy.idle_deadline(read, idle), None, "no idle time while a call runs");
        drop(turn);
        let done = busy.idle_deadline(read, idle).unwrap();
        assert!(done >= read + idle);
        // A request read after that reply, not yet begun: its reading counts.
        let later = Instant::now() + Duration::from_secs(1);
        assert_eq!(busy.idle_deadline(later, idle), Some(later + idle));
    }
}
