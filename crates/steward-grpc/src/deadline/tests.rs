//! The deadline layer: `grpc-timeout` parsing, and a served call cut at its deadline.

use super::*;

#[test]
fn grpc_timeout_values_parse_as_the_spec_says_and_garbage_is_no_deadline() {
    assert_eq!(parse(b"250m"), Some(Duration::from_millis(250)));
    assert_eq!(parse(b"3S"), Some(Duration::from_secs(3)));
    assert_eq!(parse(b"2M"), Some(Duration::from_secs(120)));
    assert_eq!(parse(b"1H"), Some(Duration::from_secs(3600)));
    assert_eq!(parse(b"99999999n"), Some(Duration::from_nanos(99_999_999)));
    assert_eq!(parse(b"5u"), Some(Duration::from_micros(5)));
    for bad in [&b""[..], b"m", b"123456789m", b"12x", b"-1S", b"1.5S"] {
        assert_eq!(parse(bad), None, "{bad:?}");
    }
}

mod served {
    use std::time::{Duration, Instant};

    use tonic::{Code, Request, Response, Status};
    use tonic_health::pb::health_server::{Health, HealthServer};
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

    use super::super::DeadlineLayer;

    /// A health service whose `Check` never answers, to be cut by the caller's deadline.
    struct Slow;

    #[tonic::async_trait]
    impl Health for Slow {
        async fn check(
            &self,
            _: Request<HealthCheckRequest>,
        ) -> Result<Response<HealthCheckResponse>, Status> {
            // never answers: only the caller's deadline ends the call
            std::future::pending::<()>().await;
            Ok(Response::new(HealthCheckResponse { status: 1 }))
        }

        type WatchStream = futures_util::stream::Empty<Result<HealthCheckResponse, Status>>;

        async fn watch(
            &self,
            _: Request<HealthCheckRequest>,
        ) -> Result<Response<Self::WatchStream>, Status> {
            Err(Status::unimplemented("watch"))
        }
    }

    #[tokio::test]
    async fn a_unary_call_past_its_deadline_ends_deadline_exceeded_at_the_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .layer(DeadlineLayer)
            .add_service(HealthServer::new(Slow))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        #[allow(clippy::disallowed_methods)] // test scaffolding: aborted below
        let server = tokio::spawn(server);
        // a raw HTTP/2 call with the header a client sends for its deadline: tonic's own client
        // would end the call itself at that instant (as CANCELLED), hiding the server's answer
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        #[allow(clippy::disallowed_methods)] // test scaffolding: ends with the connection
        let conn = tokio::spawn(conn);
        let req = tonic::codegen::http::Request::post(format!(
            "http://{addr}/grpc.health.v1.Health/Check"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        // one empty message: no compression, length 0
        .body(http_body_util::Full::new(tonic::codegen::Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
        let began = Instant::now();
        let answer = send.send_request(req).await.unwrap();
        let took = began.elapsed();
        let header = |name: &str| {
            answer.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
        };
        // a trailers-only answer: grpc-status 4 is DEADLINE_EXCEEDED
        assert_eq!(header("grpc-status"), (Code::DeadlineExceeded as i32).to_string());
        assert!(
            header("grpc-message").starts_with("deadline_exceeded"),
            "{}",
            header("grpc-message")
        );
        assert!(took >= Duration::from_millis(290) && took < Duration::from_secs(3), "{took:?}");
        conn.abort();
        server.abort();
    }
}
