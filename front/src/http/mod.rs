//! The HTTP/JSON API on the front (`http_port`): hyper's HTTP/1.1 server on the core's runtime, the
//! endpoints and answers of `server/http.py` (which serves them on the grpcio front).
//!
//! `POST /api/v1/features/{retrieve, retrieve/decoded, persist}` take the request message as JSON
//! ([`json`]); it becomes the message's wire bytes and runs through the same call path as the gRPC
//! method (`api::run`: a retrieve through native tiers without Python, anything else through Python's
//! `Calls.run`), counted as `http:<RPC name>`; the reply goes back as protojson, an error as
//! `{"code", "error"}` with the HTTP status of `http.py`'s `HTTP_STATUS` (handed over by Python).
//! `GET /health/self` is answered here, `GET /health/ready` by Python ([`Ready`]).
//!
//! Limits: a connection's heads, head size and idle time are its [`guard`]'s; a body must be announced
//! by `Content-Length` within `max_body_bytes` and arrive within `header_timeout`; one client address
//! holds at most `max_connections_per_peer` connections (one more is answered `429` and closed).

pub mod guard;
pub mod json;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::MetadataMap;
use tonic::Status;

use self::guard::{Busy, Guarded, MAX_HEADERS};
use self::json::{Messages, Refusal};
use crate::api::{self, Call, Method, Shared};

/// What one client may hold of the HTTP server (`http.py`'s `HttpLimits` and constants).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// For a request head to arrive, from the connection's opening or the head's first byte; for its
    /// body, as long again.
    pub header_timeout: Duration,
    /// For a kept-alive connection to send its next request.
    pub idle_timeout: Duration,
    /// Open connections per client address (0: no cap).
    pub max_connections_per_peer: usize,
    /// Largest request line plus headers.
    pub max_head_bytes: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// After an early refusal: at most this much of the client's rest is read, for at most this long.
    pub linger: (usize, Duration),
}

/// `GET /health/ready`'s answer: (ready, the report's JSON), from Python.
pub trait Ready: Send + Sync + fmt::Debug {
    fn ready(&self) -> (bool, Vec<u8>);
}

/// The HTTP API's settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub limits: HttpLimits,
    pub ready: Arc<dyn Ready>,
    /// gRPC code → its name and HTTP status (`http.py`'s `HTTP_STATUS`; a code not in it: 500).
    pub statuses: HashMap<i32, (String, u16)>,
}

/// The endpoints of the API methods (`http.py`'s routes).
const ROUTES: [(&str, Method); 3] = [
    ("/api/v1/features/retrieve", Method::Retrieve),
    ("/api/v1/features/retrieve/decoded", Method::RetrieveDecoded),
    ("/api/v1/features/persist", Method::Persist),
];

const HEALTH: [&str; 2] = ["/health/self", "/health/ready"];

fn route(path: &str) -> Option<Method> {
    ROUTES.iter().find(|(p, _)| *p == path).map(|(_, m)| *m)
}

/// A whole `Connection: close` error response, for answers written outside hyper (the guard, the cap).
pub fn raw_error(status: u16, code: &str, message: &str) -> Bytes {
    let body = error_body(code, message);
    let reason = StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    Bytes::from(out)
}

fn error_body(code: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"code": code, "error": message})).unwrap_or_default()
}

/// The HTTP API: its listener, bound at construction, then served and drained.
#[derive(Debug)]
pub struct HttpServer {
    api: Arc<HttpApi>,
    listener: Mutex<Option<TcpListener>>,
    port: u16,
    running: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

#[derive(Debug)]
struct HttpApi {
    shared: Arc<Shared>,
    messages: Messages,
    config: HttpConfig,
    limits: Arc<HttpLimits>,
    /// `GET /health/ready` calls Python (its report pings every store): one at a time, so a flood of
    /// them queues here instead of filling the blocking pool with threads waiting for the GIL.
    ready_turn: tokio::sync::Semaphore,
}

impl HttpServer {
    /// Binds `addr`, serving the API of `shared` with the messages of `descriptors` (the encoded
    /// `FileDescriptorSet` of the API's protos).
    pub fn bind(
        addr: SocketAddr,
        reuse_port: bool,
        shared: Arc<Shared>,
        descriptors: &[u8],
        config: HttpConfig,
    ) -> io::Result<HttpServer> {
        let messages = Messages::new(descriptors).map_err(io::Error::other)?;
        let listener = crate::server::listen(addr, reuse_port)?;
        let port = listener.local_addr()?.port();
        let limits = Arc::new(config.limits.clone());
        let ready_turn = tokio::sync::Semaphore::new(1);
        let api = Arc::new(HttpApi { shared, messages, config, limits, ready_turn });
        Ok(HttpServer { api, listener: Mutex::new(Some(listener)), port, running: Mutex::new(None) })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts accepting connections (once), on the current runtime.
    pub fn start(&self) -> Result<(), String> {
        let listener = self.listener.lock().expect("listener lock").take().ok_or("the HTTP API was started already")?;
        let (tx, rx) = oneshot::channel();
        let serve = tokio::spawn(accept(listener, Arc::clone(&self.api), rx));
        *self.running.lock().expect("running lock") = Some((tx, serve));
        Ok(())
    }

    /// Stops accepting, closes idle connections and lets requests in flight finish within `grace`
    /// (then cuts them off). Returns whether every one finished in time.
    pub async fn stop(&self, grace: Duration) -> bool {
        let Some((tx, mut serve)) = self.running.lock().expect("running lock").take() else {
            return true;
        };
        let _ = tx.send(());
        if tokio::time::timeout(grace, &mut serve).await.is_ok() {
            return true;
        }
        serve.abort();
        let _ = serve.await;
        false
    }
}

/// Open connections per client address.
#[derive(Debug, Default)]
struct Peers(Mutex<HashMap<IpAddr, usize>>);

/// One counted connection; uncounted when dropped.
struct PeerSlot(Arc<Peers>, IpAddr);

impl Peers {
    fn enter(self: &Arc<Self>, peer: IpAddr, cap: usize) -> Option<PeerSlot> {
        let mut open = self.0.lock().expect("peers lock");
        let count = open.entry(peer).or_default();
        if cap != 0 && *count >= cap {
            return None;
        }
        *count += 1;
        Some(PeerSlot(Arc::clone(self), peer))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.0 .0.lock().expect("peers lock");
        if let Some(count) = open.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.1);
            }
        }
    }
}

async fn accept(listener: TcpListener, api: Arc<HttpApi>, mut stop: oneshot::Receiver<()>) {
    let limits = Arc::clone(&api.limits);
    let mut http1 = http1::Builder::new();
    // The guard keeps the head and idle timeouts (hyper's one timeout counts both); hyper's buffer is
    // left room above the head cap so that the guard, which answers in the API's JSON, refuses first.
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_headers(MAX_HEADERS)
        .max_buf_size(limits.max_head_bytes.max(8192) + 8192)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let peers = Arc::new(Peers::default());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true); // a response is head and body: no Nagle delay
                let Some(slot) = peers.enter(peer.ip(), limits.max_connections_per_peer) else {
                    let message = format!(
                        "too many connections from {} (limit {})", peer.ip(), limits.max_connections_per_peer
                    );
                    tokio::spawn(guard::refuse(stream, raw_error(429, "RESOURCE_EXHAUSTED", &message), limits.linger));
                    continue;
                };
                let busy = Arc::new(Busy::default());
                let io = TokioIo::new(Guarded::new(stream, Arc::clone(&limits), Arc::clone(&busy)));
                let api = Arc::clone(&api);
                let service = service_fn(move |req| {
                    let (api, busy) = (Arc::clone(&api), Arc::clone(&busy));
                    async move {
                        let _turn = busy.begin();
                        Ok::<_, Infallible>(api.handle(req, peer).await)
                    }
                });
                let conn = graceful.watch(http1.serve_connection(io, service));
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(slot);
                });
            }
            _ = &mut stop => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

type Reply = Response<Full<Bytes>>;

fn answer(status: u16, body: Vec<u8>) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    answer(status, error_body(code, message))
}

/// The request's body was not read: the connection cannot carry another request.
fn closing(mut response: Reply) -> Reply {
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

fn with_allow(mut response: Reply, allow: &'static str) -> Reply {
    response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    response
}

impl HttpApi {
    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Reply {
        let path = req.uri().path_and_query().map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
        let method = req.method().clone();
        if method == http::Method::GET {
            if path == HEALTH[0] {
                return answer(200, b"{\"message\":\"true\"}".to_vec());
            }
            if path == HEALTH[1] {
                let Ok(_turn) = self.ready_turn.acquire().await else {
                    return error(503, "UNAVAILABLE", "the server is stopping");
                };
                let ready = Arc::clone(&self.config.ready);
                return match tokio::task::spawn_blocking(move || ready.ready()).await {
                    Ok((ready, report)) => answer(if ready { 200 } else { 503 }, report),
                    Err(e) => error(500, "INTERNAL", &format!("internal error: {e}")),
                };
            }
            if route(&path).is_some() {
                return with_allow(error(405, "UNIMPLEMENTED", &format!("{path} takes POST")), "POST");
            }
            return error(404, "NOT_FOUND", &format!("no endpoint {path}"));
        }
        if method == http::Method::POST {
            return match route(&path) {
                Some(m) => self.post(m, req, peer).await,
                None if HEALTH.contains(&path.as_str()) => {
                    with_allow(error(405, "UNIMPLEMENTED", &format!("{path} takes GET")), "GET")
                }
                None => error(404, "NOT_FOUND", &format!("no endpoint {path}")),
            };
        }
        closing(error(501, "UNIMPLEMENTED", &format!("Unsupported method ('{method}')")))
    }

    async fn post(&self, method: Method, req: Request<Incoming>, peer: SocketAddr) -> Reply {
        let limits = &self.limits;
        let (parts, mut body) = req.into_parts();
        if let Some((status, code, message)) = body_refusal(&parts.headers, limits.max_body_bytes) {
            // Read (and drop) a little of what the client is still sending first: closing with its body
            // unread would reset the connection, maybe before the client has read the refusal.
            let (max_bytes, max_time) = limits.linger;
            let _ = tokio::time::timeout(max_time, async {
                let mut seen = 0;
                while seen <= max_bytes {
                    match body.frame().await {
                        Some(Ok(frame)) => seen += frame.data_ref().map_or(0, Bytes::len),
                        _ => break,
                    }
                }
            })
            .await;
            return closing(error(status, code, &message));
        }
        let json = match tokio::time::timeout(limits.header_timeout, body.collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) => return closing(error(400, "INVALID_ARGUMENT", &format!("request body: {e}"))),
            Err(_) => {
                let message = format!("request body not received within {} s", guard::seconds(limits.header_timeout));
                return closing(error(408, "DEADLINE_EXCEEDED", &message));
            }
        };
        let started = Instant::now();
        let (body, invalid) = match self.messages.request_bytes(method, &json, self.shared.limits()) {
            Ok(wire) => (Bytes::from(wire), None),
            Err(Refusal::Invalid(message)) => (Bytes::new(), Some(Status::invalid_argument(message))),
            Err(Refusal::Limit(e)) => (Bytes::new(), Some(self.shared.status(&e))),
        };
        let metadata = MetadataMap::from_headers(parts.headers);
        let call = Call { method, http: true, metadata, peer: Some(peer), deadline: None, body, invalid };
        match api::run(&self.shared, call, started).await {
            Ok(reply) => match self.messages.reply_json(method, &reply) {
                Ok(out) => answer(200, out),
                Err(message) => error(500, "INTERNAL", &format!("internal error: {message}")),
            },
            Err(status) => self.status_error(&status),
        }
    }

    fn status_error(&self, status: &Status) -> Reply {
        let code = status.code() as i32;
        match self.config.statuses.get(&code) {
            Some((name, http)) => error(*http, name, status.message()),
            None => error(500, "UNKNOWN", status.message()),
        }
    }
}

/// (status, code, message) when the body cannot be read, from the request's headers alone.
fn body_refusal(headers: &HeaderMap, limit: usize) -> Option<(u16, &'static str, String)> {
    if headers.contains_key(TRANSFER_ENCODING) {
        return Some((411, "INVALID_ARGUMENT", "chunked bodies are not accepted: send Content-Length".into()));
    }
    let Some(raw) = headers.get(CONTENT_LENGTH) else {
        return Some((411, "INVALID_ARGUMENT", "Content-Length is required".into()));
    };
    let text = String::from_utf8_lossy(raw.as_bytes());
    let Ok(length) = text.trim().parse::<u64>() else {
        return Some((400, "INVALID_ARGUMENT", format!("bad Content-Length '{text}'")));
    };
    if length > limit as u64 {
        return Some((413, "RESOURCE_EXHAUSTED", format!("body of {length} bytes is over the limit of {limit}")));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_refusals() {
        let mut headers = HeaderMap::new();
        assert_eq!(body_refusal(&headers, 10).map(|r| r.0), Some(411));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("11"));
        let (status, code, message) = body_refusal(&headers, 10).unwrap();
        assert_eq!(
            (status, code, message.as_str()),
            (413, "RESOURCE_EXHAUSTED", "body of 11 bytes is over the limit of 10")
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert_eq!(body_refusal(&headers, 10), None);
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("x"));
        assert_eq!(body_refusal(&headers, 10).map(|r| r.0), Some(400));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert_eq!(body_refusal(&headers, 10).map(|r| r.0), Some(411));
    }

    #[test]
    fn raw_errors_are_whole_responses() {
        let raw = raw_error(429, "RESOURCE_EXHAUSTED", "too many");
        let text = std::str::from_utf8(&raw).unwrap();
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n{\"code\":\"RESOURCE_EXHAUSTED\",\"error\":\"too many\"}"), "{text}");
    }
}
