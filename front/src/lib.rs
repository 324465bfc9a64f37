//! The compiled serving front of `ofs serve` (issue #18): `retrieve.FeatureService` and
//! `persist.FeatureService` over gRPC on tonic/hyper, on the core's tokio runtime, plus gRPC health and
//! reflection. Python stays in charge (`server/native_front.py`): it hands the front each compiled
//! registry revision and its callers, sets health, and starts and drains it; the calls the core cannot
//! answer alone go back to Python's `Calls.run` ([`api::Fallback`]).
//!
//! Modules: [`api`] (the methods: auth, deadline, errors, the native read), [`auth`] (caller tokens),
//! [`codec`] (raw message bytes), [`deadline`] (`grpc-timeout`), [`http`] (the HTTP/JSON API on
//! `http_port`), [`metrics`] (the calls answered natively), [`server`] (listen, serve, drain), [`tls`]
//! (certificate, key, handshake limit).

pub mod api;
pub mod auth;
pub mod codec;
pub mod deadline;
pub mod http;
pub mod metrics;
pub mod server;
pub mod tls;

pub use api::{ApiConfig, Fallback, Method, Serving, Shared, SlowCall, StatusOf};
pub use auth::{Caller, Callers, Headers, Role, TokenHash};
pub use http::{HttpConfig, HttpLimits, Ready};
pub use metrics::{CallerLabels, Histogram, MetricsConfig, Totals};
pub use server::{Front, Listen};
pub use tls::{Tls, TlsError};
