//! The front with TLS over loopback, with a self-signed certificate made here (rcgen): a call over TLS
//! (ALPN `h2`), a plaintext client refused, and peers that open TCP and never handshake neither stall
//! other clients nor hold a connection past the handshake limit nor hold up a drain.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ofs_core::catalog::Catalog;
use ofs_core::engine::Engine;
use ofs_core::Limits;
use ofs_front::codec::RawCodec;
use ofs_front::{ApiConfig, Fallback, Front, Headers, Listen, Serving, Shared, SlowCall, Tls};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Request};

const RETRIEVE: &str = "/retrieve.FeatureService/RetrieveFeatures";

/// Answers every call handed to Python with its request reversed.
#[derive(Debug)]
struct Reverse;

impl Fallback for Reverse {
    fn call(&self, call: SlowCall) -> Result<Vec<u8>, (Code, String)> {
        Ok(call.request.iter().rev().copied().collect())
    }
}

/// A self-signed certificate for `localhost` and its key, both PEM.
fn certificate() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

fn front(tls: Tls) -> Front {
    let config = ApiConfig {
        auth: false,
        headers: Headers { caller: "caller-id".into(), token: "auth-token".into() },
        limits: Limits::NONE,
        max_message_bytes: 1024,
        python_threads: 2,
        metrics: None,
    };
    let shared = Shared::new(config, None, Arc::new(Reverse), Arc::new(|_| Code::Internal));
    let addr = "127.0.0.1:0".parse().unwrap();
    let front =
        Front::bind(Listen { addr, reuse_port: false, descriptors: Vec::new(), tls: Some(tls) }, shared).unwrap();
    front.set_serving(Serving { engine: Arc::new(Engine::new(Catalog::new(1))), callers: HashMap::new() });
    front.start().unwrap();
    front
}

async fn call(channel: Channel, body: &[u8]) -> Result<Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = Request::new(Bytes::copy_from_slice(body));
    request.set_timeout(Duration::from_secs(5));
    grpc.unary(request, http::uri::PathAndQuery::from_static(RETRIEVE), RawCodec).await.map(tonic::Response::into_inner)
}

async fn tls_channel(port: u16, cert_pem: &str) -> Result<Channel, tonic::transport::Error> {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(cert_pem)).domain_name("localhost");
    Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn a_call_over_tls_and_a_plaintext_client_refused() {
    let (cert, key) = certificate();
    let front = front(Tls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap());
    let port = front.port();
    let rt = runtime();
    rt.block_on(async {
        let channel = tls_channel(port, &cert).await.unwrap();
        assert_eq!(&call(channel, &[1, 2, 3]).await.unwrap()[..], &[3, 2, 1]);
        // Plain HTTP/2 on a TLS-only port: the server reads a client hello that is not one, and closes.
        let plain = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await;
        let failed = match plain {
            Err(_) => true,
            Ok(channel) => call(channel, &[1]).await.is_err(),
        };
        assert!(failed, "a plaintext client got an answer from a TLS port");
    });
    drop(rt);
    assert!(front.stop(Duration::from_secs(5)));
}

#[test]
fn peers_that_never_handshake_block_nobody() {
    let (cert, key) = certificate();
    let mut tls = Tls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    // A stalled accept loop would show as a wait of at least this long.
    let limit = Duration::from_secs(1);
    tls.handshake_timeout = limit;
    let front = front(tls);
    let port = front.port();
    let rt = runtime();
    let mut silent = rt.block_on(async {
        // Accepted, and then not a byte: each holds its own task only.
        let mut silent = Vec::new();
        for _ in 0..8 {
            silent.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        }
        let started = Instant::now();
        let channel = tls_channel(port, &cert).await.unwrap();
        assert_eq!(&call(channel, &[4, 5]).await.unwrap()[..], &[5, 4]);
        assert!(started.elapsed() < limit, "the call waited for the silent peers");
        // Past the handshake limit the front closes them.
        for stream in &mut silent {
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await;
            assert!(matches!(read, Ok(Ok(0) | Err(_))), "a silent peer was not dropped: {read:?}");
        }
        // One more, silent when the front stops: a drain does not wait for its handshake. (Given time to
        // be accepted first: one still in the listen queue would only be reset.)
        let last = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        last
    });
    let started = Instant::now();
    assert!(front.stop(Duration::from_secs(5)), "nothing in flight: drained");
    // (Waiting for its handshake would take the rest of the limit, 900 ms.)
    assert!(started.elapsed() < limit / 2, "the drain waited for a handshake");
    let mut buf = [0u8; 16];
    let read = rt.block_on(async { tokio::time::timeout(Duration::from_secs(1), silent.read(&mut buf)).await });
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "the stopped front left a silent peer open: {read:?}");
}
