//! Binding of the compiled serving front (`ofs_front`): conversions, the GIL released while it waits,
//! and the Python side of its fallback (`Calls.run`, for the calls the core does not answer alone).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use ofs_front::{
    ApiConfig, Caller, CallerLabels, Fallback, Front, Headers, Histogram, HttpConfig, HttpLimits, Listen, Method,
    MetricsConfig, Ready, Role, Serving, Shared, SlowCall, Tls, TlsError, TokenHash, Totals,
};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tonic::Code;

use crate::engine::{limits_of, PyCatalog, PyLimits};
use crate::errors::{class_name, invalid, KINDS};
use crate::tiers::PyTiers;

/// The gRPC paths the front serves (`contract.py` `RPCS` names the same; a test holds them together).
pub fn methods() -> Vec<&'static str> {
    Method::ALL.iter().map(|(_, path)| *path).collect()
}

/// The classes of `online_feature_store.errors` a core error can become (the keys of `statuses`).
pub fn error_classes() -> Vec<&'static str> {
    KINDS.iter().map(|k| class_name(*k)).collect()
}

/// `Calls.run` behind a Python callable: `run(method, request, metadata, time_left, peer)` returns
/// `(0, reply bytes)` or `(status code, message)`.
struct PyFallback {
    run: Py<PyAny>,
}

impl fmt::Debug for PyFallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PyFallback")
    }
}

impl Fallback for PyFallback {
    fn call(&self, call: SlowCall) -> Result<Vec<u8>, (Code, String)> {
        Python::attach(|py| {
            let args = (
                call.method,
                PyBytes::new(py, &call.request),
                call.metadata,
                call.time_left.map(|d| d.as_secs_f64()),
                call.peer,
            );
            let answer = self.run.call1(py, args).and_then(|out| {
                let (code, payload): (i32, Bound<'_, PyAny>) = out.extract(py)?;
                Ok(if code == 0 {
                    Ok(payload.extract::<Vec<u8>>()?)
                } else {
                    Err((Code::from_i32(code), payload.extract()?))
                })
            });
            answer.unwrap_or_else(|e| Err((Code::Internal, format!("internal error: {e}"))))
        })
    }
}

/// `GET /health/ready` behind a Python callable: `ready()` returns `(ready, report JSON bytes)`.
struct PyReady {
    ready: Py<PyAny>,
}

impl fmt::Debug for PyReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PyReady")
    }
}

impl Ready for PyReady {
    fn ready(&self) -> (bool, Vec<u8>) {
        Python::attach(|py| {
            let answer = self.ready.call0(py).and_then(|out| out.extract::<(bool, Vec<u8>)>(py));
            answer.unwrap_or_else(|e| {
                let report = serde_json::json!({"ready": false, "error": format!("internal error: {e}")});
                (false, serde_json::to_vec(&report).unwrap_or_default())
            })
        })
    }
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| invalid(format!("{name} must be a duration in seconds, got {value}")))
}

/// A histogram as Python takes it: per-bucket counts (not cumulative, `+Inf` last) and the sum.
type HistogramTuple = (Vec<u64>, f64);

fn histogram(h: Histogram) -> HistogramTuple {
    (h.counts, h.sum)
}

/// [`Totals`] as Python takes them (`ServerMetrics.add_native`): calls `(method, caller, code, n)`;
/// latency per method `(method, histogram)`; per entity and method `(method, entity, latency, keys)`;
/// rows per FG `(entity, FG, found, missing, expired)`; cache lookups `(tier, entity, hits, misses)`;
/// store calls `(store id, op, latency, failed)`; and the calls in flight now.
type TotalsTuple = (
    Vec<(&'static str, String, i32, u64)>,
    Vec<(&'static str, HistogramTuple)>,
    Vec<(&'static str, String, HistogramTuple, HistogramTuple)>,
    Vec<(String, String, u64, u64, u64)>,
    Vec<(&'static str, String, u64, u64)>,
    Vec<(String, &'static str, HistogramTuple, u64)>,
    i64,
);

fn totals_tuple(totals: Totals, in_flight: i64) -> TotalsTuple {
    let mut calls = Vec::new();
    for (caller, per) in totals.calls {
        calls.extend(per.into_iter().map(|((method, code), n)| (method, caller.clone(), code as i32, n)));
    }
    let seconds = totals.seconds.into_iter().map(|(m, h)| (m, histogram(h))).collect();
    let (mut entities, mut fgs, mut caches) = (Vec::new(), Vec::new(), Vec::new());
    for (entity, e) in totals.entities {
        for (method, (latency, keys)) in e.methods {
            entities.push((method, entity.clone(), histogram(latency), histogram(keys)));
        }
        for (fg, [found, missing, expired]) in e.fgs {
            fgs.push((entity.clone(), fg, found, missing, expired));
        }
        for (tier, [hits, misses]) in [("in_process", e.in_process), ("distributed", e.distributed)] {
            if hits + misses > 0 {
                caches.push((tier, entity.clone(), hits, misses));
            }
        }
    }
    let mut stores = Vec::new();
    for (id, ops) in totals.stores {
        stores.extend(ops.into_iter().map(|(op, (h, failed))| (id.clone(), op, histogram(h), failed)));
    }
    (calls, seconds, entities, fgs, caches, stores, in_flight)
}

/// The compiled serving front: bound at construction, then started, fed each registry revision, and
/// stopped with a drain.
#[pyclass(name = "Front", module = "online_feature_store._native", frozen)]
#[derive(Debug)]
pub struct PyFront {
    inner: Front,
}

fn socket_addr(host: &str, port: u16) -> PyResult<SocketAddr> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let resolved = (host, port).to_socket_addrs().map_err(|e| invalid(format!("host {host:?}: {e}")))?.next();
    resolved.ok_or_else(|| invalid(format!("host {host:?} resolves to no address")))
}

/// The front's TLS from the two PEM files (the settings of the same names): an `InvalidInputError`
/// naming the file at fault, as the grpcio front's start-up check does (`server/app.py`).
fn tls_of(cert_file: &str, key_file: &str) -> PyResult<Tls> {
    let read = |setting: &str, path: &str| {
        std::fs::read(path).map_err(|e| invalid(format!("{setting}: cannot read '{path}': {e}")))
    };
    let (cert, key) = (read("tls_cert_file", cert_file)?, read("tls_key_file", key_file)?);
    Tls::from_pem(&cert, &key).map_err(|err| match err {
        TlsError::Certificate(reason) => invalid(format!("tls_cert_file: '{cert_file}': {reason}")),
        TlsError::Key(reason) => invalid(format!("tls_key_file: '{key_file}': {reason}")),
        TlsError::Pair(reason) => {
            invalid(format!("tls_key_file '{key_file}' and tls_cert_file '{cert_file}' do not go together: {reason}"))
        }
    })
}

#[pymethods]
impl PyFront {
    /// Binds `host:port` (0: any free port). `fallback(method, request, metadata, time_left, peer)` runs
    /// a call in Python (`(0, reply)` or `(code, message)`); `statuses`: error class name → gRPC code
    /// (the contract's table); `tiers`: the native read path (None: every retrieve through Python);
    /// `descriptors`: the encoded `FileDescriptorSet` of the API's protos (reflection); with
    /// `caller_labels` (`(anonymous, unknown)`) the calls answered natively are counted, their
    /// histograms bucketed by the upper bounds `latency_buckets` (seconds) and `rows_buckets` (keys);
    /// `tls_cert_file` and `tls_key_file` (PEM, both or neither): TLS only on the port, a bad file an
    /// `InvalidInputError` before anything is bound.
    #[new]
    #[pyo3(signature = (
        host, port, *, fallback, statuses, descriptors, caller_header, token_header, tiers = None,
        auth = false, limits = None, max_message_bytes = 4_194_304, threads = 4, reuse_port = false,
        caller_labels = None, latency_buckets = Vec::new(), rows_buckets = Vec::new(), tls_cert_file = None,
        tls_key_file = None
    ))]
    #[allow(clippy::too_many_arguments)] // Mirrors a keyword-only Python signature.
    fn new(
        py: Python<'_>,
        host: &str,
        port: u16,
        fallback: Py<PyAny>,
        statuses: HashMap<String, i32>,
        descriptors: Vec<u8>,
        caller_header: String,
        token_header: String,
        tiers: Option<&PyTiers>,
        auth: bool,
        limits: Option<&PyLimits>,
        max_message_bytes: usize,
        threads: usize,
        reuse_port: bool,
        caller_labels: Option<(String, String)>,
        latency_buckets: Vec<f64>,
        rows_buckets: Vec<f64>,
        tls_cert_file: Option<&str>,
        tls_key_file: Option<&str>,
    ) -> PyResult<Self> {
        let metrics = caller_labels.map(|(anonymous, unknown)| MetricsConfig {
            labels: CallerLabels { anonymous, unknown },
            latency_bounds: latency_buckets,
            rows_bounds: rows_buckets,
        });
        if let Some(metrics) = &metrics {
            metrics.check().map_err(invalid)?;
        }
        let tls = match (tls_cert_file, tls_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(tls_of(cert, key)?),
            _ => return Err(invalid("tls_cert_file and tls_key_file go together: set both or neither")),
        };
        let codes: HashMap<&'static str, Code> = error_classes()
            .into_iter()
            .map(|name| (name, statuses.get(name).map_or(Code::Internal, |&c| Code::from_i32(c))))
            .collect();
        let config = ApiConfig {
            auth,
            headers: Headers { caller: caller_header, token: token_header },
            limits: limits_of(limits),
            max_message_bytes,
            python_threads: threads,
            metrics,
        };
        let shared = Shared::new(
            config,
            tiers.map(PyTiers::shared),
            Arc::new(PyFallback { run: fallback }),
            Arc::new(move |kind| codes.get(class_name(kind)).copied().unwrap_or(Code::Internal)),
        );
        let listen = Listen { addr: socket_addr(host, port)?, reuse_port, descriptors, tls };
        let front = py.detach(|| Front::bind(listen, shared));
        let inner =
            front.map_err(|e| pyo3::exceptions::PyOSError::new_err((e.raw_os_error().unwrap_or(0), e.to_string())))?;
        Ok(PyFront { inner })
    }

    /// The bound port.
    #[getter]
    fn port(&self) -> u16 {
        self.inner.port()
    }

    /// Serves `catalog` with `callers` (`(id, role, stored token hash)`) from the next call on.
    fn set_serving(&self, catalog: &PyCatalog, callers: Vec<(String, String, String)>) -> PyResult<()> {
        let callers = callers
            .into_iter()
            .map(|(id, role, hash)| {
                let role =
                    Role::parse(&role).ok_or_else(|| invalid(format!("caller {id:?}: unknown role {role:?}")))?;
                Ok((id, Caller { role, hash: TokenHash::parse(&hash) }))
            })
            .collect::<PyResult<_>>()?;
        self.inner.set_serving(Serving { engine: Arc::clone(&catalog.inner), callers });
        Ok(())
    }

    /// The metrics of the calls answered natively since the last take (counted with `caller_labels`
    /// only; None without), bucketed by `latency_buckets` and `rows_buckets`: see [`TotalsTuple`].
    fn take_metrics(&self, py: Python<'_>) -> Option<TotalsTuple> {
        py.detach(|| self.inner.take_metrics()).map(|(totals, in_flight)| totals_tuple(totals, in_flight))
    }

    /// Binds the HTTP/JSON API on `host:port` (0: any free port) and returns the bound port; it serves
    /// the front's API from `start_http()` on and drains with `stop_http()` or `stop()`. `ready()`
    /// answers `GET /health/ready` (`(ready, report JSON bytes)`); `statuses`: gRPC code → (its name,
    /// HTTP status); the limits are `http.py`'s (`HttpLimits`, `MAX_HEAD_BYTES`, `LINGER_*`).
    #[pyo3(signature = (
        host, port, *, ready, statuses, max_body_bytes, header_timeout, idle_timeout, max_connections_per_peer,
        max_head_bytes, linger_bytes, linger_seconds, reuse_port = false
    ))]
    #[allow(clippy::too_many_arguments)] // Mirrors a keyword-only Python signature.
    fn bind_http(
        &self,
        py: Python<'_>,
        host: &str,
        port: u16,
        ready: Py<PyAny>,
        statuses: HashMap<i32, (String, u16)>,
        max_body_bytes: usize,
        header_timeout: f64,
        idle_timeout: f64,
        max_connections_per_peer: usize,
        max_head_bytes: usize,
        linger_bytes: usize,
        linger_seconds: f64,
        reuse_port: bool,
    ) -> PyResult<u16> {
        let limits = HttpLimits {
            header_timeout: seconds("header_timeout", header_timeout)?,
            idle_timeout: seconds("idle_timeout", idle_timeout)?,
            max_connections_per_peer,
            max_head_bytes,
            max_body_bytes,
            linger: (linger_bytes, seconds("linger_seconds", linger_seconds)?),
        };
        let config = HttpConfig { limits, ready: Arc::new(PyReady { ready }), statuses };
        let addr = socket_addr(host, port)?;
        let bound = py.detach(|| self.inner.bind_http(addr, reuse_port, config));
        bound.map_err(|e| pyo3::exceptions::PyOSError::new_err((e.raw_os_error().unwrap_or(0), e.to_string())))
    }

    /// Starts serving the HTTP/JSON API.
    fn start_http(&self) -> PyResult<()> {
        self.inner.start_http().map_err(pyo3::exceptions::PyRuntimeError::new_err)
    }

    /// Stops the HTTP/JSON API: stops accepting, closes idle connections and lets requests in flight
    /// finish within `grace` seconds (the GIL released). Returns whether every one finished in time.
    fn stop_http(&self, py: Python<'_>, grace: f64) -> bool {
        let grace = Duration::try_from_secs_f64(grace).unwrap_or(Duration::ZERO);
        py.detach(|| self.inner.stop_http(grace))
    }

    /// Sets the health of `service` (`""`: the whole server) to `SERVING` or `NOT_SERVING`.
    fn set_health(&self, py: Python<'_>, service: &str, serving: bool) {
        py.detach(|| self.inner.set_health(service, serving));
    }

    /// Starts accepting calls.
    fn start(&self) -> PyResult<()> {
        self.inner.start().map_err(pyo3::exceptions::PyRuntimeError::new_err)
    }

    /// Stops accepting (gRPC and HTTP) and drains the calls in flight for up to `grace` seconds (the GIL released: the
    /// calls Python runs can finish). Returns whether every call finished in time.
    fn stop(&self, py: Python<'_>, grace: f64) -> bool {
        let grace = Duration::try_from_secs_f64(grace).unwrap_or(Duration::ZERO);
        py.detach(|| self.inner.stop(grace))
    }
}
