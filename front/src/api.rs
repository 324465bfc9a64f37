//! `retrieve.FeatureService` and `persist.FeatureService` on the front: one place for auth, deadline
//! and the error table, the shape of `server/calls.py` `Calls.run`.
//!
//! A retrieve whose tiers are all native is answered here, on the runtime, without Python: the core
//! parses and plans the request (`wire::parse_retrieve`, limits checked before the request is
//! decoded), reads it through the tiers (`Tiers::read_routed`, the deadline held before any store
//! call) and builds the response bytes. A persist whose stores, caches and invalidation bus are all
//! native is answered here too (`wire::parse_persist`, then `Tiers::write_routed`). Everything else goes
//! to Python through [`Fallback`] (its `Calls.run` does auth, deadline, errors and metrics there): a
//! call the native tiers decline (a store, cache client or bus they cannot call) and any call of a
//! caller whose token hash is a legacy scrypt one.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use ofs_core::engine::Engine;
use ofs_core::store::runtime;
use ofs_core::tiers::Tiers;
use ofs_core::{wire, ErrorKind, Limits};
use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::codegen::{Body as HttpBody, BoxFuture, Service};
use tonic::metadata::MetadataMap;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};

use crate::auth::{self, Callers, Headers, Role, Verdict};
use crate::codec::{Answered, RawCodec};
use crate::deadline;
use crate::metrics::{Metrics, MetricsConfig, Outcome};

/// A core error kind → its gRPC code: the contract's table (`contract.py` `STATUS_OF`), handed over by
/// Python.
pub type StatusOf = Arc<dyn Fn(ErrorKind) -> Code + Send + Sync>;

/// The client's address, put in each request's extensions by the front's accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// A call handed to Python.
#[derive(Debug)]
pub struct SlowCall {
    /// The method's name: the gRPC one (`RetrieveFeatures`, …), or `http:<it>` for an HTTP/JSON call.
    pub method: &'static str,
    pub request: Bytes,
    /// The call's ASCII metadata (names lower case).
    pub metadata: Vec<(String, String)>,
    /// Time left of the call's deadline as it is handed over (None: no deadline).
    pub time_left: Option<Duration>,
    /// The client's address, without its port.
    pub peer: String,
}

/// Runs a call in Python (`Calls.run`); blocks its thread. `Err((code, message))`: the call's status.
pub trait Fallback: Send + Sync + fmt::Debug {
    fn call(&self, call: SlowCall) -> Result<Vec<u8>, (Code, String)>;
}

/// The API methods (`contract.py` `RPCS`; `tests/server` checks the two agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Retrieve,
    RetrieveDecoded,
    Persist,
}

impl Method {
    /// Every method with its gRPC path.
    pub const ALL: [(Method, &'static str); 3] = [
        (Method::Retrieve, "/retrieve.FeatureService/RetrieveFeatures"),
        (Method::RetrieveDecoded, "/retrieve.FeatureService/RetrieveDecodedResult"),
        (Method::Persist, "/persist.FeatureService/PersistFeatures"),
    ];

    fn of_path(path: &str) -> Option<Method> {
        Method::ALL.iter().find(|(_, p)| *p == path).map(|(m, _)| *m)
    }

    /// The gRPC method name (the path's last part).
    pub fn name(self) -> &'static str {
        let path = Method::ALL.iter().find(|(m, _)| *m == self).map_or("", |(_, p)| p);
        path.rsplit('/').next().unwrap_or(path)
    }

    /// The method's name in the metrics and to Python when it came over HTTP/JSON (`http.py`'s
    /// `http:<RPC name>`).
    pub fn http_name(self) -> &'static str {
        match self {
            Method::Retrieve => "http:RetrieveFeatures",
            Method::RetrieveDecoded => "http:RetrieveDecodedResult",
            Method::Persist => "http:PersistFeatures",
        }
    }

    fn role(self) -> Role {
        match self {
            Method::Retrieve | Method::RetrieveDecoded => Role::Reader,
            Method::Persist => Role::Writer,
        }
    }
}

/// What the front serves with: one registry revision compiled, and its callers.
#[derive(Debug)]
pub struct Serving {
    pub engine: Arc<Engine>,
    pub callers: Callers,
}

/// The API's settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub auth: bool,
    pub headers: Headers,
    pub limits: Limits,
    /// Largest request and response message (`max_message_bytes`).
    pub max_message_bytes: usize,
    /// Python calls at once (`threads`) per transport: the rest wait for a turn, as grpcio's handler
    /// pool makes them (the HTTP API has turns of its own, as uvicorn's calls have their own threads).
    pub python_threads: usize,
    /// How the metrics are labelled and bucketed; None: metrics off, no call is counted.
    pub metrics: Option<MetricsConfig>,
}

/// State shared by every call.
pub struct Shared {
    serving: RwLock<Option<Arc<Serving>>>,
    tiers: Option<Arc<Tiers>>,
    config: ApiConfig,
    fallback: Arc<dyn Fallback>,
    /// Turns in Python: gRPC calls', HTTP calls'.
    python: [Arc<Semaphore>; 2],
    status_of: StatusOf,
    metrics: Option<Metrics>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("config", &self.config).field("tiers", &self.tiers).finish_non_exhaustive()
    }
}

impl Shared {
    /// `tiers`: the native read path (None: every retrieve goes through Python).
    pub fn new(
        config: ApiConfig,
        tiers: Option<Arc<Tiers>>,
        fallback: Arc<dyn Fallback>,
        status_of: StatusOf,
    ) -> Shared {
        let turns = || Arc::new(Semaphore::new(config.python_threads.max(1)));
        let python = [turns(), turns()];
        let metrics = config.metrics.clone().map(Metrics::new);
        Shared { serving: RwLock::new(None), tiers, config, fallback, python, status_of, metrics }
    }

    /// Serves `serving` from the next call on (a new registry revision).
    pub fn set_serving(&self, serving: Serving) {
        *self.serving.write().expect("serving lock") = Some(Arc::new(serving));
    }

    /// Waits until no call is in Python, then admits none (the end of a drain: a call handed to Python
    /// runs on its own thread and outlives a server task that was cut off).
    pub async fn close_python(&self) {
        let permits = u32::try_from(self.config.python_threads.max(1)).unwrap_or(u32::MAX);
        for turns in &self.python {
            if let Ok(all) = turns.acquire_many(permits).await {
                all.forget();
            }
            turns.close();
        }
    }

    /// The front's metrics (None while they are off).
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// `Calls.authorize`'s metrics label of a caller: `anonymous` without an id, the id of a registry
    /// caller, `unknown` otherwise (bounds the label's cardinality).
    fn caller_label(&self, caller: Option<&str>, serving: Option<&Serving>) -> String {
        let Some(labels) = self.config.metrics.as_ref().map(|m| &m.labels) else {
            return String::new();
        };
        match caller.filter(|c| !c.is_empty()) {
            None => labels.anonymous.clone(),
            Some(id) if serving.is_some_and(|s| s.callers.contains_key(id)) => id.to_owned(),
            Some(_) => labels.unknown.clone(),
        }
    }

    fn serving(&self) -> Option<Arc<Serving>> {
        self.serving.read().expect("serving lock").clone()
    }

    /// The request limits.
    pub(crate) fn limits(&self) -> &Limits {
        &self.config.limits
    }

    pub(crate) fn status(&self, err: &ofs_core::Error) -> Status {
        Status::new((self.status_of)(err.kind()), err.to_string())
    }
}

/// A service name of the API.
pub trait ServiceName: Send + Sync + 'static {
    const NAME: &'static str;
}

/// `retrieve.FeatureService`.
#[derive(Debug)]
pub struct RetrieveService;
impl ServiceName for RetrieveService {
    const NAME: &'static str = "retrieve.FeatureService";
}

/// `persist.FeatureService`.
#[derive(Debug)]
pub struct PersistService;
impl ServiceName for PersistService {
    const NAME: &'static str = "persist.FeatureService";
}

/// One API service, as tonic routes it.
#[derive(Debug)]
pub struct Api<S> {
    shared: Arc<Shared>,
    service: PhantomData<S>,
}

impl<S> Api<S> {
    pub fn new(shared: Arc<Shared>) -> Api<S> {
        Api { shared, service: PhantomData }
    }
}

impl<S> Clone for Api<S> {
    fn clone(&self) -> Self {
        Api { shared: Arc::clone(&self.shared), service: PhantomData }
    }
}

impl<S: ServiceName> NamedService for Api<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Api<S>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let Some(method) = Method::of_path(req.uri().path()) else {
                return Ok(Status::unimplemented(format!("method {} is not served", req.uri().path())).into_http());
            };
            let max = shared.config.max_message_bytes;
            let mut grpc = Grpc::new(RawCodec).apply_max_message_size_config(Some(max), Some(max));
            let answered = Arc::new(Answered::default());
            let response = grpc.unary(Handler { shared, method, answered: Arc::clone(&answered) }, req).await;
            Ok(answered.response(max).unwrap_or_else(|| size_limit_status(response, max)))
        })
    }
}

/// tonic refuses a request message over the decoding limit with `OUT_OF_RANGE` before reading it; the
/// contract (and grpcio) says `RESOURCE_EXHAUSTED`. No handler of the API answers `OUT_OF_RANGE`, so
/// that status can only be this refusal: it is rewritten here, with the setting named as the core's
/// limits name theirs.
fn size_limit_status(mut response: http::Response<Body>, max: usize) -> http::Response<Body> {
    let headers = response.headers_mut();
    let out_of_range = HeaderValue::from(Code::OutOfRange as i32);
    if headers.get(Status::GRPC_STATUS) == Some(&out_of_range) {
        let status = Status::resource_exhausted(format!(
            "request message over the limit of {max} bytes ({})",
            ofs_core::limits::MAX_BYTES_SETTING
        ));
        return status.into_http();
    }
    response
}

struct Handler {
    shared: Arc<Shared>,
    method: Method,
    /// Takes the reply; tonic is handed an empty message in its place (see [`Answered`]).
    answered: Arc<Answered>,
}

impl UnaryService<Bytes> for Handler {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let (shared, method, answered) = (Arc::clone(&self.shared), self.method, Arc::clone(&self.answered));
        Box::pin(async move {
            let started = Instant::now();
            let (metadata, extensions, body) = request.into_parts();
            let peer = extensions.get::<Peer>().map(|p| p.0);
            let deadline =
                deadline::deadline(metadata.get(deadline::GRPC_TIMEOUT).and_then(|v| v.to_str().ok()), started);
            let call = Call { method, http: false, metadata, peer, deadline, body, invalid: None };
            let reply = run(&shared, call, started).await?;
            answered.put(reply);
            Ok(Response::new(Bytes::new()))
        })
    }
}

/// One API call as its transport hands it over (gRPC, or HTTP/JSON once its body is converted).
#[derive(Debug)]
pub(crate) struct Call {
    pub method: Method,
    /// Came over HTTP/JSON: counted and handed to Python as `http:<RPC name>`.
    pub http: bool,
    /// The call's metadata (gRPC) or headers (HTTP).
    pub metadata: MetadataMap,
    pub peer: Option<std::net::SocketAddr>,
    pub deadline: Option<Instant>,
    /// The request message's wire bytes.
    pub body: Bytes,
    /// Why the request is not a message to run (an HTTP body that is not its JSON, or names more keys
    /// or rows than the limits allow): the call's status once the caller is authorized, as `http.py`
    /// parsed the JSON inside `Calls.run`.
    pub invalid: Option<Status>,
}

impl Call {
    fn label(&self) -> &'static str {
        if self.http {
            self.method.http_name()
        } else {
            self.method.name()
        }
    }
}

/// `Calls.run`: the reply of `call`, or its status. A call answered here is counted in the front's
/// [`Metrics`]; one handed to Python is counted there. A persist runs in a task of its own: once
/// started, a write runs to its end and is counted even when its caller goes away meanwhile.
pub(crate) async fn run(shared: &Arc<Shared>, call: Call, started: Instant) -> Result<Bytes, Status> {
    if call.method != Method::Persist {
        return run_here(shared, call, started).await;
    }
    let shared = Arc::clone(shared);
    match tokio::spawn(async move { run_here(&shared, call, started).await }).await {
        Ok(reply) => reply,
        Err(e) => Err(Status::internal(format!("internal error: {e}"))),
    }
}

async fn run_here(shared: &Arc<Shared>, call: Call, started: Instant) -> Result<Bytes, Status> {
    let in_flight = shared.metrics.as_ref().map(Metrics::begin);
    let mut record = Outcome::default();
    let Some(result) = answer(shared, &call, &mut record).await else {
        drop(in_flight);
        if let Some(invalid) = call.invalid {
            // A caller whose token Python checks (a legacy hash) sent no message to run: nothing to hand over.
            return Err(invalid);
        }
        return python(shared, call).await;
    };
    if let Some(metrics) = &shared.metrics {
        let code = result.as_ref().err().map_or(Code::Ok, Status::code);
        metrics.count(call.label(), &record, code, started.elapsed().as_secs_f64());
    }
    result
}

/// The call's outcome when the front answers it (None: it goes to Python).
async fn answer(shared: &Arc<Shared>, call: &Call, record: &mut Outcome) -> Option<Result<Bytes, Status>> {
    let value = |name: &str| call.metadata.get(name).and_then(|v| v.to_str().ok());
    let headers = &shared.config.headers;
    let (caller, token) = (value(&headers.caller), value(&headers.token));
    let serving = shared.serving();
    record.caller = shared.caller_label(caller, serving.as_deref());
    let deadline = call.deadline;
    if let Err(status) = check_deadline(deadline, "starting the call") {
        return Some(Err(status));
    }
    let Some(serving) = serving else {
        return Some(Err(Status::unavailable("the registry is not loaded yet")));
    };
    if shared.config.auth {
        match auth::authorize(&serving.callers, headers, caller, token, call.method.role()) {
            Verdict::Allowed => {}
            Verdict::Denied(code, message) => return Some(Err(Status::new(code, message))),
            Verdict::Python => return None,
        }
    }
    if let Some(invalid) = &call.invalid {
        return Some(Err(invalid.clone()));
    }
    let tiers = Arc::clone(shared.tiers.as_ref()?);
    let answered = match call.method {
        Method::Persist => persist(shared, &serving, &tiers, call.body.clone(), deadline, record).await,
        Method::Retrieve | Method::RetrieveDecoded => {
            let decoded = call.method == Method::RetrieveDecoded;
            retrieve(shared, &serving.engine, &tiers, &call.body, decoded, deadline, record).await
        }
    };
    match answered {
        Ok(Some(reply)) => Some(check_deadline(deadline, "sending the reply").map(|()| reply)),
        Ok(None) => None,
        Err(status) if status.code() != Code::DeadlineExceeded && passed(deadline) => {
            // The caller has already seen its deadline pass; say so rather than what came after it.
            Some(Err(Status::deadline_exceeded(format!("deadline exceeded ({})", status.message()))))
        }
        Err(status) => Some(Err(status)),
    }
}

/// A retrieve through the native tiers; `Ok(None)`: declined before any I/O (a tier is not native).
async fn retrieve(
    shared: &Shared,
    engine: &Engine,
    tiers: &Tiers,
    query: &[u8],
    decoded: bool,
    deadline: Option<Instant>,
    record: &mut Outcome,
) -> Result<Option<Bytes>, Status> {
    let req = wire::parse_retrieve(engine, query, &shared.config.limits).map_err(|e| shared.status(&e))?;
    let Some(route) = tiers.route(&req.plan) else {
        return Ok(None);
    };
    record.planned = Some((req.plan.entity.clone(), req.key_count()));
    let names = req.key_names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (read, report) = tiers.read_routed(&req.plan, &route, &refs, deadline).await;
    record.report = report;
    let blocks = read.map_err(|e| shared.status(&e))?;
    let now = ofs_core::expiry::unix_now();
    let (out, counts) = blocks.with_blocks(|b| req.answer(b, now, decoded)).map_err(|e| shared.status(&e))?;
    record.fgs = req.plan.fgs.iter().zip(counts).map(|(f, [a, b, c])| (f.fg.label.clone(), a, b, c)).collect();
    Ok(Some(Bytes::from(out)))
}

/// A persist through the native write path (`FeatureStore.persist_wire` in strong mode): the request
/// validated whole and its blocks built, written to their stores, the written keys invalidated in
/// every tier and published to the other processes. `Ok(None)`: declined before any I/O (a store or
/// tier the core cannot call). A write that blocks its thread (`SQLite`) runs off the runtime's, and so
/// does the parse of a request over [`PARSE_OFF_RUNTIME_BYTES`] (building its blocks takes milliseconds).
async fn persist(
    shared: &Shared,
    serving: &Arc<Serving>,
    tiers: &Arc<Tiers>,
    query: Bytes,
    deadline: Option<Instant>,
    record: &mut Outcome,
) -> Result<Option<Bytes>, Status> {
    let now = ofs_core::expiry::unix_now();
    let large = query.len() > PARSE_OFF_RUNTIME_BYTES;
    let parse = {
        let (serving, limits) = (Arc::clone(serving), shared.config.limits);
        move || wire::parse_persist(serving.engine.catalog(), &query, now, false, &limits)
    };
    let parsed = if large {
        let done = tokio::task::spawn_blocking(parse).await;
        done.map_err(|e| Status::internal(format!("internal error: {e}")))?
    } else {
        parse()
    };
    let req = parsed.map_err(|e| shared.status(&e))?;
    let catalog = serving.engine.catalog();
    let entity = catalog.entity(&req.entity).map_err(|e| shared.status(&e))?;
    let Some(route) = tiers.write_route(entity, &req.blocks) else {
        return Ok(None);
    };
    let (keys, names) = req.key_names();
    record.planned = Some((req.entity.clone(), names.len()));
    let blocking = route.blocking();
    let write = {
        let tiers = Arc::clone(tiers);
        async move { tiers.write_routed(&route, &req.blocks, &keys, &names, deadline).await }
    };
    let (written, calls) = if blocking {
        // Runs to its end even if the call is dropped meanwhile: a write is never cut short.
        let done = tokio::task::spawn_blocking(move || runtime::block_on(write)).await;
        done.map_err(|e| Status::internal(format!("internal error: {e}")))?
    } else {
        write.await
    };
    record.report.store_calls = calls;
    written.map_err(|e| shared.status(&e))?;
    Ok(Some(Bytes::from(wire::persist_ok())))
}

/// Persist requests over this many bytes are parsed (and their blocks built) on tokio's blocking pool,
/// not on the threads that serve calls: ~100 rows of 64 fp32.
const PARSE_OFF_RUNTIME_BYTES: usize = 64 * 1024;

/// The call through Python's `Calls.run`, at most `python_threads` at once, off the runtime's threads.
async fn python(shared: &Arc<Shared>, call: Call) -> Result<Bytes, Status> {
    let peer = call.peer.map(|p| p.ip().to_string()).unwrap_or_default();
    let metadata = call
        .metadata
        .iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())),
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .collect::<Vec<_>>();
    let turn = Arc::clone(&shared.python[usize::from(call.http)]).acquire_owned().await;
    let turn = turn.map_err(|_| Status::unavailable("the server is stopping"))?;
    let time_left = call.deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let call = SlowCall { method: call.label(), request: call.body, metadata, time_left, peer };
    let fallback = Arc::clone(&shared.fallback);
    // The turn goes with the Python call: a call whose client went away (its future dropped) still holds
    // it until Python is done, so `threads` bounds the calls in Python and a drain waits for them all.
    let run = move || {
        let reply = fallback.call(call);
        drop(turn);
        reply
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(Ok(reply)) => Ok(Bytes::from(reply)),
        Ok(Err((code, message))) => Err(Status::new(code, message)),
        Err(e) => Err(Status::internal(format!("internal error: {e}"))),
    }
}

fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// `check_deadline` of `server/calls.py`.
fn check_deadline(deadline: Option<Instant>, what: &str) -> Result<(), Status> {
    if passed(deadline) {
        return Err(Status::deadline_exceeded(format!("deadline exceeded before {what}")));
    }
    Ok(())
}
