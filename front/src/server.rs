//! The front's server: a listener bound at construction (so a taken port is reported before anything
//! starts), an accept loop serving each connection with hyper's HTTP/2 server over tonic's routes (the
//! API, health, reflection) on the core's runtime, and a drain (hyper-util's graceful shutdown) that lets
//! calls in flight finish within a grace period. Not tonic's transport `Server`: it puts a `grpc-timeout`
//! layer around every call that ends a late one `CANCELLED`, where the contract says `DEADLINE_EXCEEDED`
//! (the front keeps each call's deadline itself, `crate::deadline`). With [`Tls`], each connection's
//! handshake runs in that connection's task, within the handshake limit.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use ofs_core::store::runtime;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tonic::service::Routes;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;
use tower::ServiceExt;

use crate::api::{Api, Peer, PersistService, RetrieveService, Serving, Shared};
use crate::http::{HttpConfig, HttpServer};
use crate::tls::Tls;

/// Where and how the front listens.
#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: SocketAddr,
    /// `SO_REUSEPORT`: processes sharing the port (`--workers`).
    pub reuse_port: bool,
    /// The `FileDescriptorSet` of the API's protos (reflection), as Python generated it from `proto/`.
    pub descriptors: Vec<u8>,
    /// TLS only on the port (None: plaintext only).
    pub tls: Option<Tls>,
}

type Serve = JoinHandle<()>;

/// A connection's byte stream, plain TCP or TLS over it: one connection path for both (the indirection
/// costs a pointer call per read or write, next to a system call).
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The TLS handshake of an accepted connection, within its limit; None: it failed, timed out, or the
/// front began to stop first (a peer mid-handshake has no call to finish, so it never holds up a drain).
async fn handshake(
    stream: TcpStream,
    tls: Option<(TlsAcceptor, Duration)>,
    mut stopping: watch::Receiver<bool>,
) -> Option<Box<dyn Stream>> {
    let Some((acceptor, limit)) = tls else {
        return Some(Box::new(stream));
    };
    tokio::select! {
        done = tokio::time::timeout(limit, acceptor.accept(stream)) => match done {
            Ok(Ok(stream)) => Some(Box::new(stream)),
            Ok(Err(_)) | Err(_) => None,
        },
        _ = stopping.wait_for(|stopping| *stopping) => None,
    }
}

/// Accepts connections until `stop`, then lets every connection finish its calls (HTTP/2 `GOAWAY`) and
/// returns once they are all closed.
async fn accept(listener: TcpListener, routes: Routes, tls: Option<Tls>, mut stop: oneshot::Receiver<()>) {
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2.timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(30)));
    let http2 = Arc::new(http2);
    let tls = tls.map(|tls| (TlsAcceptor::from(tls.config), tls.handshake_timeout));
    let graceful = GracefulShutdown::new();
    let (stopping, _) = watch::channel(false);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                // Out of file descriptors and the like: that connection is lost, the listener is not.
                let Ok((stream, peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let service = routes.clone().map_request(move |mut req: http::Request<Incoming>| {
                    req.extensions_mut().insert(Peer(peer));
                    req
                });
                // Both taken here, before a stop can be signalled: a connection accepted before the stop
                // sees it whatever its task's timing.
                let watcher = graceful.watcher();
                let stopping = stopping.subscribe();
                let (http2, tls) = (Arc::clone(&http2), tls.clone());
                tokio::spawn(async move {
                    // In this task, not the loop: a slow or silent peer holds up only its own connection.
                    let Some(stream) = handshake(stream, tls, stopping).await else {
                        return;
                    };
                    let conn = http2.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
                    let _ = watcher.watch(conn).await;
                });
            }
            _ = &mut stop => break,
        }
    }
    drop(listener);
    stopping.send_replace(true);
    graceful.shutdown().await;
}

/// A bound, then started, then stopped gRPC front.
#[derive(Debug)]
pub struct Front {
    shared: Arc<Shared>,
    health: HealthReporter,
    listener: Mutex<Option<TcpListener>>,
    listen: Listen,
    port: u16,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    serve: Mutex<Option<Serve>>,
    /// The HTTP/JSON API, when bound ([`Front::bind_http`]).
    http: Mutex<Option<Arc<HttpServer>>>,
}

/// A listening socket on `addr` (`SO_REUSEPORT` when the processes of `--workers` share it).
pub(crate) fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let _rt = runtime::runtime().enter();
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Front {
    /// Binds `listen.addr` (port 0: any free one).
    pub fn bind(listen: Listen, shared: Shared) -> io::Result<Front> {
        let listener = self::listen(listen.addr, listen.reuse_port)?;
        let port = listener.local_addr()?.port();
        let health = HealthReporter::new();
        Ok(Front {
            shared: Arc::new(shared),
            health,
            listener: Mutex::new(Some(listener)),
            listen,
            port,
            shutdown: Mutex::new(None),
            serve: Mutex::new(None),
            http: Mutex::new(None),
        })
    }

    /// Binds the HTTP/JSON API on `addr` (once); returns its port. It serves the same API, started by
    /// [`Front::start_http`], drained by [`Front::stop_http`] or with the gRPC calls by [`Front::stop`].
    pub fn bind_http(&self, addr: SocketAddr, reuse_port: bool, config: HttpConfig) -> io::Result<u16> {
        let mut http = self.http.lock().expect("http lock");
        if http.is_some() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "the HTTP API is bound already"));
        }
        let server = HttpServer::bind(addr, reuse_port, Arc::clone(&self.shared), &self.listen.descriptors, config)?;
        let port = server.port();
        *http = Some(Arc::new(server));
        Ok(port)
    }

    fn http(&self) -> Option<Arc<HttpServer>> {
        self.http.lock().expect("http lock").clone()
    }

    /// Starts serving the HTTP/JSON API (once it is bound).
    pub fn start_http(&self) -> Result<(), String> {
        let http = self.http().ok_or("the HTTP API is not bound")?;
        let _rt = runtime::runtime().enter();
        http.start()
    }

    /// Drains the HTTP/JSON API alone (see [`HttpServer::stop`]). Blocks the calling thread.
    pub fn stop_http(&self, grace: Duration) -> bool {
        self.http().is_none_or(|http| runtime::block_on(async move { http.stop(grace).await }))
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves `serving` from the next call on.
    pub fn set_serving(&self, serving: Serving) {
        self.shared.set_serving(serving);
    }

    /// The metrics of the calls answered natively since the last take, and the calls in flight now
    /// (None while metrics are off).
    pub fn take_metrics(&self) -> Option<(crate::metrics::Totals, i64)> {
        self.shared.metrics().map(|m| (m.take(), m.in_flight()))
    }

    /// Sets the health of `service` (`""`: the server as a whole).
    pub fn set_health(&self, service: &str, serving: bool) {
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        runtime::block_on(self.health.set_service_status(service, status));
    }

    /// Starts accepting calls (once).
    pub fn start(&self) -> Result<(), String> {
        let listener = self.listener.lock().expect("listener lock").take().ok_or("the front was started already")?;
        let health = HealthServer::new(HealthService::from_health_reporter(self.health.clone()));
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(&self.listen.descriptors)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| format!("reflection: {e}"))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(&self.listen.descriptors)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| format!("reflection: {e}"))?;
        let (tx, rx) = oneshot::channel::<()>();
        let routes = Routes::new(health)
            .add_service(Api::<RetrieveService>::new(Arc::clone(&self.shared)))
            .add_service(Api::<PersistService>::new(Arc::clone(&self.shared)))
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .prepare();
        let serve = runtime::runtime().spawn(accept(listener, routes, self.listen.tls.clone(), rx));
        *self.shutdown.lock().expect("shutdown lock") = Some(tx);
        *self.serve.lock().expect("serve lock") = Some(serve);
        Ok(())
    }

    /// Stops accepting (gRPC and HTTP), then waits up to `grace` for the calls in flight; past it they
    /// are cut off.
    /// Returns whether every call finished in time. Blocks the calling thread.
    pub fn stop(&self, grace: Duration) -> bool {
        if let Some(tx) = self.shutdown.lock().expect("shutdown lock").take() {
            let _ = tx.send(());
        }
        let http = self.http();
        let Some(mut serve) = self.serve.lock().expect("serve lock").take() else {
            return http.is_none_or(|http| runtime::block_on(async move { http.stop(grace).await }));
        };
        let shared = Arc::clone(&self.shared);
        runtime::block_on(async move {
            let grpc = async {
                if tokio::time::timeout(grace, &mut serve).await.is_ok() {
                    true
                } else {
                    serve.abort();
                    let _ = serve.await;
                    false
                }
            };
            let http = async {
                match http {
                    Some(http) => http.stop(grace).await,
                    None => true,
                }
            };
            let (grpc, http) = tokio::join!(grpc, http);
            shared.close_python().await;
            grpc && http
        })
    }
}

impl Drop for Front {
    /// A front dropped without [`Front::stop`] stops accepting and lets its calls finish in the
    /// background, rather than serving on with nobody to stop it.
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.get_mut().ok().and_then(Option::take) {
            let _ = tx.send(());
        }
    }
}
