//! Client connections, from accept to the end of each request head: the part of a
//! connection's life that Pingora 0.9 leaves unbounded. Its head read timeout restarts on every
//! byte (a header trickled a byte a second is read forever), a kept-alive connection's next head
//! has no timeout at all, a TLS handshake gets a fixed 60 s, and a head may grow to 1 MiB.
//!
//! Every public listener is a plain TCP listener to Pingora, and `Connections` is the
//! application it hands each accepted connection to:
//!
//! 1. a listener already holding `max_connections` refuses the connection at once, before
//!    TLS (the cheapest refusal; Envoy's listener limit does the same);
//! 2. the TLS handshake runs here, within `tls_handshake_timeout`;
//! 3. the connection is wrapped in a `HeadGuard`, which holds each request head to
//!    `request_header_timeout` and to the head and line sizes, answering 408, 431 or 414 itself
//!    (HTTP/2: the connection preface and first SETTINGS frame to the same deadline);
//! 4. HTTP/2 goes to Pingora as it is; HTTP/1.1 is driven request after request here, so that
//!    the guard is re-armed before each head. On a cleartext listener with `h2c`, a connection
//!    whose first bytes are HTTP/2's connection preface is HTTP/2 (prior knowledge), and its
//!    preface is then held to the head's deadline as over TLS.
//!
//! The guard also watches the chunk-size lines of a chunked request body for the one thing
//! Pingora's parser (httparse's `parse_chunk_size`) lets through that two parsers read two ways:
//! a bare LF or another control byte inside a chunk extension (`3;x\nabc\r\n0\r\n\r\n` is a
//! 3-byte chunk `abc` to one and a chunk holding `0\r\n` to the other, and the request then
//! hangs). It answers `400 bad_request` and ends the connection; the bytes of that read never
//! reach Pingora.
//!
//! Each request's head is waited for here, before Pingora builds a session for it: the guard
//! reads the head's first bytes itself and hands them to the session it then builds. An idle
//! connection (before its first request, or between two) therefore holds only its stream and
//! this loop, about 4 KiB, and not Pingora's session, its 4 KiB head buffer and the 10 KiB
//! future of its request (about 15 KiB more, measured with DHAT; `load-tests/RESULTS.md`). The
//! idle wait between requests (`keepalive_timeout`) is this wait's; request bodies
//! (`request_body_timeout`, `request_body_min_rate`) are bounded by the proxy over Pingora's
//! own timeouts.

use super::mtls::TlsAcceptor;
use super::proxy::Gateway;
use super::response::{self, ErrorKind};
use crate::config::{ConnectionLimits, Listener};
use crate::metrics::metrics;
use crate::request_id;
use async_trait::async_trait;
use bytes::Bytes;
use memchr::memchr;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use prometheus::IntGauge;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep_until, timeout, Instant, Sleep};

/// The application behind every public listener.
pub struct Connections {
    proxy: Arc<HttpProxy<Gateway>>,
    listeners: Vec<Slot>,
    limits: ConnectionLimits,
    /// How long a kept-alive HTTP/1.1 connection may wait for its next request.
    keepalive_timeout: Duration,
    /// Requests after the first one a connection may carry.
    reuses: Option<u32>,
}

/// One listener's share: its TLS, its connection budget and the connections it holds.
struct Slot {
    address: SocketAddr,
    label: Arc<str>,
    tls: Option<TlsAcceptor>,
    max_connections: usize,
    open: AtomicUsize,
    /// Cleartext HTTP/2 by prior knowledge is taken.
    h2c: bool,
}

impl Connections {
    pub fn new(
        proxy: HttpProxy<Gateway>,
        listeners: Vec<(Listener, Option<TlsAcceptor>)>,
        limits: ConnectionLimits,
        keepalive_timeout: Duration,
        max_requests_per_connection: u32,
    ) -> Self {
        Self {
            proxy: Arc::new(proxy),
            listeners: listeners
                .into_iter()
                .map(|(l, tls)| Slot {
                    address: l.address,
                    label: Arc::from(l.address.to_string()),
                    tls,
                    max_connections: l.max_connections,
                    open: AtomicUsize::new(0),
                    h2c: l.h2c,
                })
                .collect(),
            limits,
            keepalive_timeout,
            reuses: Some(max_requests_per_connection.saturating_sub(1)),
        }
    }

    /// The listener a connection came in on, by the address it was accepted at.
    fn slot_of(&self, stream: &Stream) -> Option<&Slot> {
        let local = stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied())?;
        self.listeners
            .iter()
            .find(|s| s.address == local)
            .or_else(|| {
                // A listener on 0.0.0.0 or [::] sees the address the client connected to.
                self.listeners
                    .iter()
                    .find(|s| s.address.ip().is_unspecified() && s.address.port() == local.port())
            })
    }

    /// HTTP/1.1 request after request, each head under a re-armed guard and each session built
    /// only once its head has begun to arrive; Pingora's own loop, with those two steps added.
    /// The first head's bytes are in (`wait_for_head`).
    async fn serve_http1(self: &Arc<Self>, guard: Box<HeadGuard>, shutdown: &ShutdownWatch) {
        let mut session = ServerSession::new_http1(guard);
        if *shutdown.borrow() {
            session.set_keepalive(None);
        } else {
            // Kept alive with no idle timer of Pingora's: the wait is the guard's.
            session.set_keepalive(Some(0));
        }
        session.set_keepalive_reuses_remaining(self.reuses);
        let mut reused = HttpServerApp::process_new_http(&self.proxy, session, shutdown).await;
        while let Some((stream, settings)) = reused.map(|r| r.consume()) {
            let Some(mut guard) = HeadGuard::next_request(stream) else {
                return;
            };
            if !guard
                .wait_for_head(Some(self.keepalive_timeout), shutdown)
                .await
            {
                return;
            }
            let mut session = ServerSession::new_http1(guard);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            reused = HttpServerApp::process_new_http(&self.proxy, session, shutdown).await;
        }
    }
}

#[async_trait]
impl ServerApp for Connections {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let slot = self.slot_of(&stream)?;
        let Some(_held) = slot.admit() else {
            slot.closed("connection_limit");
            return None;
        };
        let stream: Stream = match &slot.tls {
            None => stream,
            Some(tls) => {
                let _handshaking = slot.open_as("tls");
                let tcp = stream.into_any().downcast::<TcpStream>().ok()?;
                match timeout(self.limits.tls_handshake_timeout, tls.handshake(*tcp)).await {
                    Ok(Ok(tls_stream)) => Box::new(tls_stream),
                    Ok(Err(e)) => {
                        tracing::debug!(listener = %slot.label, error = %e, "TLS handshake failed");
                        return None;
                    }
                    Err(_) => {
                        slot.closed("tls_handshake_timeout");
                        return None;
                    }
                }
            }
        };
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let mut open = slot.open_as(if h2 { "h2" } else { "http/1.1" });
        let mut guarded = Box::new(HeadGuard::new(stream, self.limits, slot.label.clone(), h2));
        if h2 {
            // Pingora serves the HTTP/2 connection (and closes it after `h2_idle_timeout`).
            return ServerApp::process_new(&self.proxy, guarded, shutdown).await;
        }
        // The first head's wait is bounded by the guard's own header deadline.
        if !guarded.wait_for_head(None, shutdown).await {
            return None;
        }
        if slot.h2c && guarded.began_h2c() {
            open = slot.open_as("h2c");
            // The guard's first bytes are not peekable, so Pingora (with `h2c` on) takes
            // the connection for HTTP/2 and reads the preface from the guard.
            let done = ServerApp::process_new(&self.proxy, guarded, shutdown).await;
            drop(open);
            return done;
        }
        self.serve_http1(guarded, shutdown).await;
        drop(open);
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

impl Slot {
    /// A place for one more connection, held until the returned value is dropped.
    fn admit(&self) -> Option<Held<'_>> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Held(&self.open))
    }

    /// Counts the connection as open under `protocol` until the returned value is dropped.
    fn open_as(&self, protocol: &str) -> OpenGauge {
        let gauge = metrics()
            .open_connections
            .with_label_values(&[&*self.label, protocol]);
        gauge.inc();
        OpenGauge(gauge)
    }

    fn closed(&self, reason: &str) {
        closed(&self.label, reason);
    }
}

fn closed(listener: &str, reason: &str) {
    metrics()
        .connections_closed
        .with_label_values(&[listener, reason])
        .inc();
}

struct Held<'a>(&'a AtomicUsize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct OpenGauge(IntGauge);

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How long an answer the guard writes (and the bytes the client still sends after it) may
/// take before the connection is simply closed.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read and dropped after such an answer, so that closing with unread input does
/// not reset the connection before the client has read the answer.
const LINGER_BYTES: usize = 1 << 20;
/// The HTTP/2 connection preface, then the header of the client's first frame (SETTINGS).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_PREFACE_LEN: usize = H2_PREFACE.len();
const H2_FRAME_HEADER_LEN: usize = 9;
/// A SETTINGS frame longer than the default maximum frame size is an error the HTTP/2 layer
/// answers; the guard waits for no more than that.
const H2_MAX_FRAME_LEN: usize = 16_384;
/// The most `wait_for_head` reads at once: Pingora's own first read of a head is as large
/// (its head buffer starts at 4 KiB), so a head that fits in one read still takes one.
const EARLY_READ: usize = 4096;

/// A client connection whose request head is being read, held to its deadline and sizes.
/// Bytes pass through untouched; only their count, line ends and timing are watched, until
/// the head is complete (`Phase::Open`).
#[derive(Debug)]
pub struct HeadGuard {
    inner: Stream,
    limits: ConnectionLimits,
    listener: Arc<str>,
    phase: Phase,
    /// When the current phase's time is up; for a kept-alive connection's next head, set by
    /// its first byte (the idle wait before it is `keepalive_timeout`'s).
    deadline: Option<Instant>,
    /// The timer for `deadline`, set only when a read has to wait: a head that arrives in one
    /// read (nearly all of them) costs no timer.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether anything was written to the client since the current head was read (an answer
    /// of the guard's own could then not be told from the response under way).
    wrote: bool,
    /// The head's first bytes, read (and scanned) by `wait_for_head` before Pingora's session
    /// existed; its first reads get them.
    early: Bytes,
}

#[derive(Debug)]
enum Phase {
    Head(HeadScan),
    Preface(PrefaceScan),
    /// The head is in: reads and writes pass straight through.
    Open,
    /// The head is in and the body is chunked: its chunk-size lines are watched.
    Chunked(ChunkScan),
    /// Writing the answer that ends the connection.
    Answering {
        answer: Vec<u8>,
        written: usize,
    },
    /// The answer is out; dropping what the client still sends, up to `left` bytes.
    Draining {
        left: usize,
    },
    /// Every read is the end of the stream.
    Closed,
}

impl HeadGuard {
    fn new(inner: Stream, limits: ConnectionLimits, listener: Arc<str>, h2: bool) -> Self {
        let phase = if h2 {
            Phase::Preface(PrefaceScan::default())
        } else {
            Phase::Head(HeadScan::default())
        };
        Self {
            inner,
            limits,
            listener,
            phase,
            deadline: Some(Instant::now() + limits.request_header_timeout),
            timer: None,
            wrote: false,
            early: Bytes::new(),
        }
    }

    /// Whether the first bytes `wait_for_head` read begin HTTP/2's connection preface (as much
    /// of it as came); if so the guard now watches them, and what follows, as the preface
    /// and first SETTINGS frame, to the same deadline.
    fn began_h2c(&mut self) -> bool {
        let n = self.early.len().min(H2_PREFACE.len());
        if n < 3 || self.early[..n] != H2_PREFACE[..n] {
            return false;
        }
        let mut scan = PrefaceScan::default();
        if scan.feed(&self.early) {
            self.phase = Phase::Open;
            self.deadline = None;
        } else {
            self.phase = Phase::Preface(scan);
            self.deadline = Some(Instant::now() + self.limits.request_header_timeout);
        }
        true
    }

    /// The same connection, guarded again for its next request head.
    fn next_request(stream: Stream) -> Option<Box<Self>> {
        let mut guard = stream.into_any().downcast::<HeadGuard>().ok()?;
        guard.phase = Phase::Head(HeadScan::default());
        guard.deadline = None;
        Some(guard)
    }

    /// Wait for the next request head's first bytes, at most `idle` (when given), and keep
    /// them for the session. `false` when the connection is done instead: the client closed
    /// it or sent something the guard answered itself, the wait or the head's deadline ran
    /// out, or, for a kept-alive connection waiting for its next request (`idle`), the server
    /// is shutting down (as Pingora drops its idle connections then) and no byte of a request
    /// is here yet. A new connection's first request is read even then, within the head's
    /// deadline: the client sent it to a listener that accepted it, and closing a socket with
    /// a request unread in it would reset the connection, not end it.
    /// Nothing is kept across the wait but the guard itself: the read buffer lives only
    /// while a read is polled.
    async fn wait_for_head(&mut self, idle: Option<Duration>, shutdown: &ShutdownWatch) -> bool {
        let idle_between_requests = idle.is_some();
        let mut shutdown = shutdown.clone();
        let stopping = async move {
            if idle_between_requests {
                if *shutdown.borrow() {
                    return;
                }
                // A change that is not to `true` (the first read of the watch) is not a stop.
                while shutdown.changed().await.is_ok() {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
            std::future::pending::<()>().await
        };
        let read = std::future::poll_fn(|cx| {
            // Uninitialised: zeroing 4 KiB on every poll cost more than the whole read.
            let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); EARLY_READ];
            let mut buf = ReadBuf::uninit(&mut scratch);
            ready!(Pin::new(&mut *self).poll_read(cx, &mut buf))?;
            Poll::Ready(io::Result::Ok(Bytes::copy_from_slice(buf.filled())))
        });
        let first = async {
            match idle {
                Some(idle) => timeout(idle, read).await.ok(),
                None => Some(read.await),
            }
        };
        let read = tokio::select! {
            biased;
            read = first => read,
            () = stopping => None,
        };
        match read {
            Some(Ok(bytes)) if !bytes.is_empty() => {
                self.early = bytes;
                true
            }
            _ => false,
        }
    }

    fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Before a read waits: the timer set for the deadline, and whether it has passed.
    fn wait_for_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.deadline else {
            return false;
        };
        let timer = match &mut self.timer {
            Some(t) => {
                if t.deadline() != deadline {
                    t.as_mut().reset(deadline);
                }
                t
            }
            None => self.timer.insert(Box::pin(sleep_until(deadline))),
        };
        timer.as_mut().poll(cx).is_ready()
    }

    /// The deadline passed before the head was in.
    fn time_out(&mut self) {
        match &self.phase {
            Phase::Head(scan) if scan.bytes > 0 => {
                self.answer(response::REQUEST_HEADER_TIMEOUT, "request_header_timeout");
            }
            // Nothing was sent: there is no request to answer.
            Phase::Head(_) => self.close("request_header_timeout"),
            Phase::Preface(_) => self.close("preface_timeout"),
            _ => {}
        }
    }

    fn close(&mut self, reason: &str) {
        closed(&self.listener, reason);
        self.phase = Phase::Closed;
        self.deadline = None;
    }

    /// End the connection with `kind` as the answer to the request being read.
    fn answer(&mut self, kind: ErrorKind, reason: &str) {
        closed(&self.listener, reason);
        tracing::debug!(listener = %self.listener, reason, "closing a client connection");
        self.phase = Phase::Answering {
            answer: response::http1_closing(&kind, request_id::generate().as_str()),
            written: 0,
        };
        self.deadline = Some(Instant::now() + LINGER);
    }

    /// What `bytes` (just read, in order) mean for the head and a chunked body; `false` when
    /// they ended the connection instead of going to the reader.
    fn saw(&mut self, bytes: &[u8]) -> bool {
        if self.deadline.is_none() && matches!(self.phase, Phase::Head(_)) {
            self.deadline = Some(Instant::now() + self.limits.request_header_timeout);
        }
        match &mut self.phase {
            Phase::Head(scan) => match scan.feed(bytes, &self.limits) {
                Scanned::More => true,
                Scanned::Done(at) => {
                    let chunked = scan.chunked;
                    self.deadline = None;
                    self.wrote = false;
                    if !chunked {
                        self.phase = Phase::Open;
                        return true;
                    }
                    self.phase = Phase::Chunked(ChunkScan::default());
                    self.saw(&bytes[at..])
                }
                Scanned::TooLong(kind) => {
                    self.answer(kind, "line_too_large");
                    false
                }
            },
            Phase::Preface(scan) => {
                if scan.feed(bytes) {
                    self.phase = Phase::Open;
                    self.deadline = None;
                }
                true
            }
            Phase::Chunked(scan) => match scan.feed(bytes) {
                Watched::More => true,
                Watched::Done => {
                    self.phase = Phase::Open;
                    true
                }
                Watched::Refused if self.wrote => {
                    self.close("invalid_chunk");
                    false
                }
                Watched::Refused => {
                    self.answer(response::BAD_REQUEST, "invalid_chunk");
                    false
                }
            },
            _ => true,
        }
    }

    /// Bytes the head may still take (none counted for the HTTP/2 preface).
    fn room(&self) -> usize {
        match &self.phase {
            Phase::Head(scan) => self.limits.max_request_head_size.saturating_sub(scan.bytes),
            _ => usize::MAX,
        }
    }

    fn poll_guarded_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<bool>> {
        let room = self.room();
        if room == 0 {
            self.answer(response::REQUEST_HEADER_TOO_LARGE, "request_head_too_large");
            return Poll::Ready(Ok(false));
        }
        let before = buf.filled().len();
        if room < buf.remaining() {
            // Read no further than the head may go, so an over-long head is caught here
            // and not after a megabyte has been buffered.
            let n = {
                let mut capped = ReadBuf::new(buf.initialize_unfilled_to(room));
                ready!(Pin::new(&mut self.inner).poll_read(cx, &mut capped))?;
                capped.filled().len()
            };
            buf.advance(n);
        } else {
            ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        }
        let read = &buf.filled()[before..];
        if read.is_empty() || self.saw(read) {
            return Poll::Ready(Ok(true));
        }
        buf.set_filled(before);
        Poll::Ready(Ok(false))
    }

    /// Write the answer, then half-close and drain; `Ready` once the connection is done.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.wait_for_deadline(cx) {
            self.phase = Phase::Closed;
            return Poll::Ready(());
        }
        let Self { inner, phase, .. } = self;
        loop {
            match phase {
                Phase::Answering { answer, written } if *written < answer.len() => {
                    match ready!(Pin::new(&mut *inner).poll_write(cx, &answer[*written..])) {
                        Ok(n) if n > 0 => *written += n,
                        _ => *phase = Phase::Closed,
                    }
                }
                Phase::Answering { .. } => {
                    // Tell the client we are done sending, then read what it still sends, so
                    // the close does not reset the connection before the answer is read.
                    let _ = ready!(Pin::new(&mut *inner).poll_flush(cx));
                    let _ = ready!(Pin::new(&mut *inner).poll_shutdown(cx));
                    *phase = Phase::Draining { left: LINGER_BYTES };
                }
                Phase::Draining { left } => {
                    let mut scratch = [0u8; 4096];
                    let mut sink = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut *inner).poll_read(cx, &mut sink)) {
                        Ok(()) if !sink.filled().is_empty() && sink.filled().len() < *left => {
                            *left -= sink.filled().len();
                        }
                        _ => *phase = Phase::Closed,
                    }
                }
                _ => return Poll::Ready(()),
            }
        }
    }
}

impl AsyncRead for HeadGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.early.is_empty() {
            // Read and scanned before the session existed: they go out as they are.
            let n = this.early.len().min(buf.remaining());
            buf.put_slice(&this.early.split_to(n));
            return Poll::Ready(Ok(()));
        }
        loop {
            match &this.phase {
                Phase::Open => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Phase::Closed => return Poll::Ready(Ok(())),
                Phase::Answering { .. } | Phase::Draining { .. } => ready!(this.poll_answer(cx)),
                Phase::Chunked(_) => {
                    let before = buf.filled().len();
                    ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                    let read = &buf.filled()[before..];
                    if read.is_empty() || this.saw(read) {
                        return Poll::Ready(Ok(()));
                    }
                    buf.set_filled(before);
                }
                Phase::Head(_) | Phase::Preface(_) => {
                    if this.expired() {
                        this.time_out();
                        continue;
                    }
                    match this.poll_guarded_read(cx, buf) {
                        Poll::Ready(Ok(false)) => {}
                        Poll::Ready(done) => return Poll::Ready(done.map(|_| ())),
                        Poll::Pending if this.wait_for_deadline(cx) => this.time_out(),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
        }
    }
}

/// Where a request head stands after some bytes.
#[derive(Debug, Default)]
struct HeadScan {
    /// Bytes of the head so far.
    bytes: usize,
    /// Bytes of the current line so far.
    line: usize,
    /// The current line's last byte so far is a CR.
    cr: bool,
    /// Lines with content so far; the request line is the first.
    lines: usize,
    /// The current line's first bytes, to tell a `Transfer-Encoding` field.
    start: [u8; TRANSFER_ENCODING.len()],
    /// The head has a `Transfer-Encoding` field: the body is chunked (Pingora refuses any
    /// other coding).
    chunked: bool,
}

const TRANSFER_ENCODING: &[u8] = b"transfer-encoding:";

enum Scanned {
    More,
    /// The empty line that ends the head was in these bytes, ending at this offset.
    Done(usize),
    /// A line is over `max_request_line_size`: 414 for the request line, 431 for a field.
    TooLong(ErrorKind),
}

impl HeadScan {
    fn feed(&mut self, bytes: &[u8], limits: &ConnectionLimits) -> Scanned {
        let mut at = 0;
        while let Some(k) = memchr(b'\n', &bytes[at..]) {
            self.keep_start(&bytes[at..at + k]);
            let len = self.line + k;
            let cr = if k > 0 {
                bytes[at + k - 1] == b'\r'
            } else {
                self.cr
            };
            if let Some(too_long) = self.too_long(len, limits) {
                return too_long;
            }
            at += k + 1;
            if len >= TRANSFER_ENCODING.len() && self.start.eq_ignore_ascii_case(TRANSFER_ENCODING)
            {
                self.chunked = true;
            }
            self.line = 0;
            self.cr = false;
            if len > usize::from(cr) {
                self.lines += 1;
            } else if self.lines > 0 {
                self.bytes += at;
                return Scanned::Done(at);
            }
            // An empty line before the request line is ignored (RFC 9112 §2.2).
        }
        let rest = &bytes[at..];
        self.keep_start(rest);
        self.line += rest.len();
        if let Some(last) = rest.last() {
            self.cr = *last == b'\r';
        }
        self.bytes += bytes.len();
        self.too_long(self.line, limits).unwrap_or(Scanned::More)
    }

    /// Keeps what `piece` (the current line's next bytes) adds to the line's first bytes.
    fn keep_start(&mut self, piece: &[u8]) {
        if let Some(room) = self.start.get_mut(self.line..) {
            let n = room.len().min(piece.len());
            room[..n].copy_from_slice(&piece[..n]);
        }
    }

    fn too_long(&self, line: usize, limits: &ConnectionLimits) -> Option<Scanned> {
        (line > limits.max_request_line_size).then_some(if self.lines == 0 {
            Scanned::TooLong(response::URI_TOO_LONG)
        } else {
            Scanned::TooLong(response::REQUEST_HEADER_TOO_LARGE)
        })
    }
}

/// Where a chunked body's framing stands, read as httparse reads it (RFC 9112 §7.1): the guard
/// refuses only what httparse would take and another parser would read differently, and stops
/// watching (`Done`) at the last chunk or at anything httparse refuses itself.
#[derive(Debug)]
enum ChunkScan {
    /// In a chunk-size line.
    Size {
        size: u64,
        digits: u8,
        /// Past the digits (whitespace seen): no more digits may come.
        digits_done: bool,
        in_ext: bool,
        cr: bool,
    },
    /// In a chunk's data, this many bytes to go.
    Data(u64),
    /// After the data: the CRLF, `seen` bytes of it so far.
    DataEnd { seen: u8 },
}

impl Default for ChunkScan {
    fn default() -> Self {
        Self::Size {
            size: 0,
            digits: 0,
            digits_done: false,
            in_ext: false,
            cr: false,
        }
    }
}

enum Watched {
    More,
    Done,
    /// A bare LF or another control byte inside a chunk extension.
    Refused,
}

impl ChunkScan {
    fn feed(&mut self, mut bytes: &[u8]) -> Watched {
        while let Some((&b, rest)) = bytes.split_first() {
            match self {
                Self::Data(left) => {
                    let n = bytes
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        *self = Self::DataEnd { seen: 0 };
                    }
                    continue;
                }
                Self::DataEnd { seen } => match (*seen, b) {
                    (0, b'\r') => *seen = 1,
                    (1, b'\n') => *self = Self::default(),
                    _ => return Watched::Done,
                },
                Self::Size {
                    size,
                    digits,
                    digits_done,
                    in_ext,
                    cr,
                } => {
                    if *cr {
                        if b != b'\n' {
                            return Watched::Done;
                        }
                        if *size == 0 {
                            return Watched::Done;
                        }
                        *self = Self::Data(*size);
                    } else if let (Some(v), false, false) =
                        ((b as char).to_digit(16), *in_ext, *digits_done)
                    {
                        if *digits > 15 {
                            return Watched::Done;
                        }
                        *digits += 1;
                        *size = *size * 16 + u64::from(v);
                    } else {
                        match b {
                            b'\r' => *cr = true,
                            b';' if !*in_ext => *in_ext = true,
                            b' ' | b'\t' if !*in_ext => *digits_done = true,
                            b'\t' => {}
                            _ if *in_ext && (b < 0x20 || b == 0x7f) => return Watched::Refused,
                            _ if *in_ext => {}
                            _ => return Watched::Done,
                        }
                    }
                }
            }
            bytes = rest;
        }
        Watched::More
    }
}

/// Where an HTTP/2 connection preface and the first frame's header stand.
#[derive(Debug, Default)]
struct PrefaceScan {
    got: usize,
    /// The first frame's 24-bit payload length.
    length: [u8; 3],
}

impl PrefaceScan {
    /// Whether the preface and the whole first frame are in.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        for (i, slot) in self.length.iter_mut().enumerate() {
            let offset = H2_PREFACE_LEN + i;
            if (self.got..self.got + bytes.len()).contains(&offset) {
                *slot = bytes[offset - self.got];
            }
        }
        self.got += bytes.len();
        let [a, b, c] = self.length;
        let payload = u32::from_be_bytes([0, a, b, c]) as usize;
        self.got >= H2_PREFACE_LEN + H2_FRAME_HEADER_LEN + payload.min(H2_MAX_FRAME_LEN)
    }
}

impl AsyncWrite for HeadGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.wrote = true;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.wrote = true;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// The rest of Pingora's transport interface is the wrapped connection's.

#[async_trait]
impl Shutdown for HeadGuard {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for HeadGuard {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadGuard {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadGuard {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadGuard {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for HeadGuard {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for HeadGuard {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if !self.early.is_empty() {
            // The next bytes are the guard's, not the connection's: no peeking past them.
            return Ok(false);
        }
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_CONNECTION_LIMITS;

    fn limits(line: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_request_line_size: line,
            ..DEFAULT_CONNECTION_LIMITS
        }
    }

    fn scan(pieces: &[&[u8]], line: usize) -> (Vec<&'static str>, usize) {
        let mut s = HeadScan::default();
        let mut out = Vec::new();
        for p in pieces {
            let seen = match s.feed(p, &limits(line)) {
                Scanned::More => "more",
                Scanned::Done(_) => "done",
                Scanned::TooLong(k) => k.code,
            };
            out.push(seen);
            if seen != "more" {
                break;
            }
        }
        (out, s.bytes)
    }

    #[test]
    fn a_head_ends_at_its_empty_line_in_any_split() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        for cut in 1..head.len() {
            let (seen, bytes) = scan(&[&head[..cut], &head[cut..]], 100);
            let expected: &[&str] = if cut >= 27 {
                &["done"]
            } else {
                &["more", "done"]
            };
            assert_eq!(seen, expected, "cut at {cut}");
            assert_eq!(bytes, 27, "cut at {cut}: the body is not counted");
        }
    }

    #[test]
    fn bare_lf_line_ends_and_leading_empty_lines_are_understood() {
        assert_eq!(scan(&[b"GET / HTTP/1.1\nHost: a\n\n"], 100).0, ["done"]);
        assert_eq!(
            scan(&[b"\r\n\r\nGET / HTTP/1.1\r\n", b"\r\n"], 100).0,
            ["more", "done"]
        );
    }

    #[test]
    fn a_long_request_line_is_414_and_a_long_field_431_even_before_its_line_ends() {
        let long = [b'a'; 64];
        assert_eq!(scan(&[b"GET /", &long], 32).0, ["more", "uri_too_long"]);
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\r\nX: ", &long, b"\r\n"], 32).0,
            ["more", "request_header_too_large"]
        );
    }

    fn watch(pieces: &[&[u8]]) -> &'static str {
        let mut w = ChunkScan::default();
        for p in pieces {
            match w.feed(p) {
                Watched::More => {}
                Watched::Done => return "done",
                Watched::Refused => return "refused",
            }
        }
        "more"
    }

    #[test]
    fn chunk_framing_is_followed_across_reads_and_a_control_byte_in_an_extension_refused() {
        let body: &[u8] = b"3;name=\"a value\"\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n";
        for cut in 1..body.len() {
            assert_eq!(watch(&[&body[..cut], &body[cut..]]), "done", "cut at {cut}");
        }
        // The data may hold anything, a chunk line's look-alike included.
        assert_eq!(watch(&[b"5\r\n3;x\nz\r\n"]), "more");
        assert_eq!(watch(&[b"3;x\nabc\r\n0\r\n\r\n"]), "refused");
        assert_eq!(watch(&[b"3;x", b"\x01y\r\nabc"]), "refused");
        assert_eq!(watch(&[b"3;x\ty\r\nabc\r\n"]), "more");
        // What httparse refuses itself is left to it.
        assert_eq!(watch(&[b"3\nabc"]), "done");
        assert_eq!(watch(&[b"3\r\nabcX"]), "done");
    }

    #[test]
    fn a_transfer_encoding_field_marks_the_body_chunked() {
        let mut s = HeadScan::default();
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nTRANSFER-encoding: chunked\r\n\r\n";
        assert!(matches!(s.feed(&head[..30], &limits(100)), Scanned::More));
        assert!(matches!(
            s.feed(&head[30..], &limits(100)),
            Scanned::Done(_)
        ));
        assert!(s.chunked);
        let mut s = HeadScan::default();
        s.feed(
            b"POST / HTTP/1.1\r\nX-Transfer-Encoding: chunked\r\n\r\n",
            &limits(100),
        );
        assert!(!s.chunked);
    }

    #[test]
    fn the_h2_preface_is_done_after_the_first_frame_whole() {
        let mut p = PrefaceScan::default();
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[0, 3, 0, 0, 0, 100]);
        assert!(!p.feed(&bytes[..25]));
        assert!(!p.feed(&bytes[25..38]));
        assert!(p.feed(&bytes[38..]));
    }
}
