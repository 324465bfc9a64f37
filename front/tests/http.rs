//! The front's HTTP/JSON API over loopback, without Python: a JSON body becomes the message's wire bytes
//! for the fallback (`Calls.run`) and its reply comes back as protojson; errors as `{"code", "error"}`
//! with the HTTP status of the table; the per-peer cap and the head timeout answered in the same JSON;
//! a drain with the gRPC listener. (The Python suite, `tests/server/test_http*.py`, runs the whole HTTP
//! contract against this front with the real read path.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ofs_core::catalog::Catalog;
use ofs_core::engine::Engine;
use ofs_core::Limits;
use ofs_front::{
    ApiConfig, Fallback, Front, Headers, HttpConfig, HttpLimits, Listen, Ready, Serving, Shared, SlowCall,
};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

/// The fallback: records the calls, answers a persist `persist.Result{message: "ok"}`.
#[derive(Debug, Default)]
struct Python {
    calls: Mutex<Vec<(String, Vec<u8>)>>,
}

impl Fallback for Python {
    fn call(&self, call: SlowCall) -> Result<Vec<u8>, (Code, String)> {
        self.calls.lock().unwrap().push((call.method.to_owned(), call.request.to_vec()));
        if call.request.is_empty() {
            return Err((Code::NotFound, "no entity".into()));
        }
        Ok(vec![0x12, 2, b'o', b'k'])
    }
}

#[derive(Debug)]
struct AlwaysReady;

impl Ready for AlwaysReady {
    fn ready(&self) -> (bool, Vec<u8>) {
        (true, b"{\"ready\": true}".to_vec())
    }
}

fn field(name: &str, json: &str, number: i32, kind: Type) -> FieldDescriptorProto {
    FieldDescriptorProto {
        name: Some(name.into()),
        json_name: Some(json.into()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(kind as i32),
        ..Default::default()
    }
}

fn message(name: &str, fields: Vec<FieldDescriptorProto>) -> DescriptorProto {
    DescriptorProto { name: Some(name.into()), field: fields, ..Default::default() }
}

/// A cut-down `retrieve.proto` and `persist.proto`: the messages the API names, a field or two each.
fn descriptors() -> Vec<u8> {
    let label = || field("entity_label", "entityLabel", 1, Type::String);
    let file = |package: &str, messages: Vec<DescriptorProto>| FileDescriptorProto {
        name: Some(format!("{package}.proto")),
        package: Some(package.into()),
        message_type: messages,
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    let retrieve = file(
        "retrieve",
        vec![message("Query", vec![label()]), message("Result", vec![label()]), message("DecodedResult", vec![])],
    );
    let persist = file(
        "persist",
        vec![message("Query", vec![label()]), message("Result", vec![field("message", "message", 2, Type::String)])],
    );
    FileDescriptorSet { file: vec![retrieve, persist] }.encode_to_vec()
}

fn front(python: Arc<Python>) -> (Front, u16) {
    let config = ApiConfig {
        auth: false,
        headers: Headers { caller: "caller-id".into(), token: "auth-token".into() },
        limits: Limits::NONE,
        max_message_bytes: 1024,
        python_threads: 2,
        metrics: None,
    };
    let shared = Shared::new(config, None, python, Arc::new(|_| Code::Internal));
    let listen =
        Listen { addr: "127.0.0.1:0".parse().unwrap(), reuse_port: false, descriptors: descriptors(), tls: None };
    let front = Front::bind(listen, shared).unwrap();
    front.set_serving(Serving { engine: Arc::new(Engine::new(Catalog::new(1))), callers: HashMap::new() });
    let limits = HttpLimits {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(5),
        max_connections_per_peer: 2,
        max_head_bytes: 4096,
        max_body_bytes: 256,
        linger: (4096, Duration::from_millis(200)),
    };
    let statuses = [(Code::InvalidArgument, "INVALID_ARGUMENT", 400), (Code::NotFound, "NOT_FOUND", 404)]
        .into_iter()
        .map(|(code, name, status)| (code as i32, (name.to_owned(), status)))
        .collect();
    let config = HttpConfig { limits, ready: Arc::new(AlwaysReady), statuses };
    let port = front.bind_http("127.0.0.1:0".parse().unwrap(), false, config).unwrap();
    front.start().unwrap();
    front.start_http().unwrap();
    (front, port)
}

/// Sends `raw` on a new connection and reads until the server closes it.
async fn exchange(port: u16, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

async fn post(port: u16, path: &str, body: &str) -> (u16, String) {
    let raw =
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let reply = exchange(port, raw.as_bytes()).await;
    let status = reply[9..12].parse().unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    (status, body.to_owned())
}

#[test]
fn json_round_trip_errors_limits_and_drain() {
    let python = Arc::new(Python::default());
    let (front, port) = front(Arc::clone(&python));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // snake_case in, wire bytes to Python as the HTTP method, protojson out.
        let reply = post(port, "/api/v1/features/persist", r#"{"entity_label": "user"}"#).await;
        assert_eq!(reply, (200, r#"{"message":"ok"}"#.to_owned()));
        let reply = post(port, "/api/v1/features/persist", r#"{"entityLabel": "user"}"#).await;
        assert_eq!(reply.0, 200);
        // An error from the call, with its HTTP status.
        let (status, body) = post(port, "/api/v1/features/retrieve", "{}").await;
        assert_eq!((status, body.as_str()), (404, r#"{"code":"NOT_FOUND","error":"no entity"}"#));
        // Not the message as JSON: refused before any call.
        let (status, body) = post(port, "/api/v1/features/retrieve", r#"{"colour": "red"}"#).await;
        assert_eq!(status, 400);
        assert!(body.contains("request body is not a valid retrieve.Query") && body.contains("colour"), "{body}");
        let (status, body) = post(port, "/api/v1/features/retrieve", &"x".repeat(300)).await;
        assert_eq!(status, 413, "{body}");
        assert_eq!(post(port, "/nothing", "{}").await.0, 404);
        let health = exchange(port, b"GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(health.starts_with("HTTP/1.1 200 ") && health.ends_with("{\"ready\": true}"), "{health}");

        // A head that does not arrive in time: 408 in the API's JSON.
        let late = exchange(port, b"GET /health/self HTTP/1.1\r\nHost: x\r\n").await;
        assert!(late.starts_with("HTTP/1.1 408 "), "{late}");
        assert!(late.ends_with(r#"{"code":"DEADLINE_EXCEEDED","error":"request head not received within 0.3 s"}"#));
        // A malformed head: 400 in the same JSON.
        let bad = exchange(port, b"GARBAGE\x01 / HTTP/1.1\r\n\r\n").await;
        assert!(bad.starts_with("HTTP/1.1 400 ") && bad.contains("malformed HTTP request"), "{bad}");

        // Two connections per address; a third is answered 429.
        let held = [
            TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
            TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
        ];
        let refused = exchange(port, b"").await;
        assert!(
            refused.starts_with("HTTP/1.1 429 ") && refused.contains("too many connections from 127.0.0.1 (limit 2)"),
            "{refused}"
        );
        drop(held);
    });
    let calls = python.calls.lock().unwrap().clone();
    let wire = vec![0x0a, 4, b'u', b's', b'e', b'r'];
    assert_eq!(
        calls,
        [
            ("http:PersistFeatures".to_owned(), wire.clone()),
            ("http:PersistFeatures".to_owned(), wire),
            ("http:RetrieveFeatures".to_owned(), Vec::new()),
        ]
    );
    assert!(front.stop(Duration::from_secs(2)), "drained, HTTP with gRPC");
}
