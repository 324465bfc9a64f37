//! The front over loopback, without Python: auth answered natively, the fallback handed what Python's
//! `Calls.run` needs (method, bytes, metadata, deadline), a request over the message limit refused as
//! `RESOURCE_EXHAUSTED`, health set from outside, and a drain. (The Python suite, `tests/server`, runs
//! the whole server contract against this front with the real read path.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use ofs_core::catalog::Catalog;
use ofs_core::engine::Engine;
use ofs_core::Limits;
use ofs_front::codec::RawCodec;
use ofs_front::{
    ApiConfig, Caller, CallerLabels, Fallback, Front, Headers, Listen, MetricsConfig, Role, Serving, Shared, SlowCall,
    TokenHash,
};
use sha2::Sha256;
use tonic::transport::Channel;
use tonic::{Code, Request};

const TOKEN: &str = "reader-token-0123456789-0123456789";
const RETRIEVE: &str = "/retrieve.FeatureService/RetrieveFeatures";
const PERSIST: &str = "/persist.FeatureService/PersistFeatures";

/// A call as the fallback saw it: method, metadata, time left.
type Seen = (String, Vec<(String, String)>, Option<Duration>);

/// What Python would be handed: recorded, answered with the request reversed.
#[derive(Debug, Default)]
struct Recorder {
    calls: Mutex<Vec<Seen>>,
}

impl Fallback for Recorder {
    fn call(&self, call: SlowCall) -> Result<Vec<u8>, (Code, String)> {
        self.calls.lock().unwrap().push((call.method.to_owned(), call.metadata, call.time_left));
        Ok(call.request.iter().rev().copied().collect())
    }
}

fn hash(token: &str) -> TokenHash {
    let salt = [9u8; 16];
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&salt).unwrap();
    mac.update(token.as_bytes());
    TokenHash::parse(&format!("hmac-sha256${}${}", hex::encode(salt), hex::encode(mac.finalize().into_bytes())))
}

fn front(recorder: Arc<Recorder>) -> Front {
    let config = ApiConfig {
        auth: true,
        headers: Headers { caller: "caller-id".into(), token: "auth-token".into() },
        limits: Limits::NONE,
        max_message_bytes: 1024,
        python_threads: 2,
        metrics: Some(MetricsConfig {
            labels: CallerLabels { anonymous: "anonymous".into(), unknown: "unknown".into() },
            latency_bounds: vec![0.001, 0.1],
            rows_bounds: vec![1.0],
        }),
    };
    let shared = Shared::new(config, None, recorder, Arc::new(|_| Code::Internal));
    let listen = Listen { addr: "127.0.0.1:0".parse().unwrap(), reuse_port: false, descriptors: Vec::new(), tls: None };
    let front = Front::bind(listen, shared).unwrap();
    let callers: HashMap<String, Caller> = [("r".to_owned(), Caller { role: Role::Reader, hash: hash(TOKEN) })].into();
    front.set_serving(Serving { engine: Arc::new(Engine::new(Catalog::new(1))), callers });
    front.start().unwrap();
    front
}

async fn call(
    port: u16,
    path: &'static str,
    body: Vec<u8>,
    creds: Option<(&str, &str)>,
) -> Result<Bytes, tonic::Status> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = Request::new(Bytes::from(body));
    request.set_timeout(Duration::from_secs(5));
    if let Some((caller, token)) = creds {
        request.metadata_mut().insert("caller-id", caller.parse().unwrap());
        request.metadata_mut().insert("auth-token", token.parse().unwrap());
    }
    grpc.unary(request, http::uri::PathAndQuery::from_static(path), RawCodec).await.map(tonic::Response::into_inner)
}

#[test]
fn auth_fallback_limits_and_drain() {
    let recorder = Arc::new(Recorder::default());
    let front = front(Arc::clone(&recorder));
    let port = front.port();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let denied = call(port, RETRIEVE, vec![1], None).await.unwrap_err();
        assert_eq!(denied.code(), Code::InvalidArgument);
        assert_eq!(denied.message(), "metadata 'caller-id' and 'auth-token' are required");
        let bad = call(port, RETRIEVE, vec![1], Some(("r", "wrong"))).await.unwrap_err();
        assert_eq!((bad.code(), bad.message()), (Code::Unauthenticated, "unknown caller or bad token for 'r'"));
        let role = call(port, PERSIST, vec![1], Some(("r", TOKEN))).await.unwrap_err();
        assert_eq!((role.code(), role.message()), (Code::PermissionDenied, "caller 'r' is a reader, not a writer"));
        assert!(recorder.calls.lock().unwrap().is_empty(), "denied natively, Python never asked");
        // No native tiers here: the retrieve goes to the fallback, with its metadata and deadline.
        let reply = call(port, RETRIEVE, vec![1, 2, 3], Some(("r", TOKEN))).await.unwrap();
        assert_eq!(&reply[..], &[3, 2, 1]);
        let over = call(port, RETRIEVE, vec![0; 2000], Some(("r", TOKEN))).await.unwrap_err();
        assert_eq!(over.code(), Code::ResourceExhausted);
        assert!(over.message().contains("over the limit of 1024 bytes (max_message_bytes)"), "{}", over.message());
    });
    // The calls answered natively are counted in the metrics; the one Python ran is not.
    let (totals, in_flight) = front.take_metrics().unwrap();
    let mut seen: Vec<(&str, &str, Code, u64)> = totals
        .calls
        .iter()
        .flat_map(|(caller, calls)| calls.iter().map(move |((method, code), n)| (*method, caller.as_str(), *code, *n)))
        .collect();
    seen.sort_by_key(|(method, caller, _, _)| (*method, *caller));
    assert_eq!(
        seen,
        [
            ("PersistFeatures", "r", Code::PermissionDenied, 1),
            ("RetrieveFeatures", "anonymous", Code::InvalidArgument, 1),
            ("RetrieveFeatures", "r", Code::Unauthenticated, 1),
        ]
    );
    assert_eq!(in_flight, 0);
    let retrieves = &totals.seconds["RetrieveFeatures"];
    assert_eq!((retrieves.counts.len(), retrieves.counts.iter().sum::<u64>()), (3, 2));
    let calls = recorder.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    let (method, metadata, time_left) = &calls[0];
    assert_eq!(method, "RetrieveFeatures");
    assert!(metadata.contains(&("caller-id".to_owned(), "r".to_owned())));
    assert!(time_left.is_some_and(|t| t > Duration::from_secs(3) && t <= Duration::from_secs(5)));
    // The client's connections close with its runtime: a drain waits for a connection's client to take
    // the GOAWAY (HTTP/2's graceful shutdown), and a client whose runtime stands still never does.
    drop(rt);
    front.set_health("", false);
    assert!(front.stop(Duration::from_secs(5)), "nothing in flight: drained at once");
}
