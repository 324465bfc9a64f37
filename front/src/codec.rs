//! The API methods' codec: the request's bytes as they arrived, the response's bytes as the core built
//! them. The core's wire code (`ofs_core::wire`) parses and encodes the messages, so no protobuf type
//! is generated for the front and the bytes stay those of the Python front.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Raw message bytes in and out.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Replies up to this size are copied behind their prefix into one frame (see [`Answered::response`]).
const ONE_FRAME_BYTES: usize = 4096;

/// Where a successful call leaves its reply for [`Answered::response`]: tonic's encoder would copy the
/// reply into its own buffer (a `memcpy` of the whole message, ~11 % of the server's CPU on a 100-key,
/// 10-FG retrieve), so the answer is taken from here and sent as the core built it. tonic still reads
/// and checks the request; an error still goes out through tonic.
#[derive(Debug, Default)]
pub struct Answered(Mutex<Option<Bytes>>);

impl Answered {
    pub fn put(&self, reply: Bytes) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(reply);
    }

    /// The unary response of the reply left here, if any: `content-type: application/grpc`, the
    /// message (its 5-byte prefix, then the reply's bytes, uncopied above [`ONE_FRAME_BYTES`]) and
    /// `grpc-status: 0`. A reply over `max` bytes is refused as tonic's encoder refuses it.
    pub fn response(&self, max: usize) -> Option<http::Response<Body>> {
        let reply = self.0.lock().unwrap_or_else(PoisonError::into_inner).take()?;
        let found = reply.len();
        let len = match u32::try_from(found) {
            Ok(len) if found <= max => len,
            _ => {
                let message =
                    format!("Error, encoded message length too large: found {found} bytes, the limit is: {max} bytes");
                return Some(Status::out_of_range(message).into_http());
            }
        };
        let mut prefix = [0u8; 5]; // uncompressed, then the length (big-endian)
        prefix[1..].copy_from_slice(&len.to_be_bytes());
        let mut trailers = HeaderMap::with_capacity(1);
        trailers.insert(Status::GRPC_STATUS, HeaderValue::from_static("0"));
        // A small reply goes out in one data frame with its prefix (copying it costs less than a second
        // frame); a large one as it is, behind a frame of its own for the prefix.
        let frames = if found <= ONE_FRAME_BYTES {
            let mut framed = Vec::with_capacity(prefix.len() + found);
            framed.extend_from_slice(&prefix);
            framed.extend_from_slice(&reply);
            [Some(Bytes::from(framed)), None]
        } else {
            [Some(Bytes::copy_from_slice(&prefix)), Some(reply)]
        };
        let body = UnaryBody { frames, trailers: Some(trailers) };
        let mut response = http::Response::new(Body::new(body));
        response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        Some(response)
    }
}

/// A unary answer's body: the message's prefix and bytes as two data frames, then the trailers.
struct UnaryBody {
    frames: [Option<Bytes>; 2],
    trailers: Option<HeaderMap>,
}

impl http_body::Body for UnaryBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(data) = this.frames.iter_mut().find_map(Option::take) {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.iter().all(Option::is_none) && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tonic::Code;

    use super::*;

    /// The body's next frame is the trailers with `grpc-status: 0`, and nothing follows.
    async fn ends_with_status_ok(body: &mut Body) {
        let trailers = body.frame().await.unwrap().unwrap().into_trailers().unwrap();
        assert_eq!(trailers[Status::GRPC_STATUS], "0");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_reply_goes_out_as_one_grpc_message_then_status_ok() {
        let answered = Answered::default();
        assert!(answered.response(1 << 20).is_none(), "no reply: tonic's response stands");
        let n = ONE_FRAME_BYTES + 1;
        let reply = Bytes::from(vec![7u8; n]);
        let at = reply.as_ptr();
        answered.put(reply);
        let response = answered.response(n).expect("a reply was left");
        assert!(answered.response(n).is_none(), "taken once");
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(response.headers()[http::header::CONTENT_TYPE], "application/grpc");
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], &[0, 0, 0, 0x10, 0x01]);
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second.as_ptr(), at, "a large reply's own bytes, not a copy");
        assert_eq!(second.len(), n);
        ends_with_status_ok(&mut body).await;
    }

    #[tokio::test]
    async fn a_small_reply_goes_out_in_one_frame_with_its_prefix() {
        let answered = Answered::default();
        answered.put(Bytes::from(vec![7u8; 40]));
        let mut body = answered.response(40).unwrap().into_body();
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&data[..5], &[0, 0, 0, 0, 40]);
        assert_eq!(&data[5..], &[7u8; 40][..]);
        ends_with_status_ok(&mut body).await;
    }

    #[tokio::test]
    async fn a_reply_over_the_limit_is_refused_as_tonic_refuses_it() {
        let answered = Answered::default();
        answered.put(Bytes::from(vec![0u8; 41]));
        let response = answered.response(40).unwrap();
        let status = Status::from_header_map(response.headers()).expect("a trailers-only status");
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(status.message(), "Error, encoded message length too large: found 41 bytes, the limit is: 40 bytes");
    }
}
