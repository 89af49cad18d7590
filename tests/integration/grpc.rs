//! gRPC: health, the admin service and its event stream, through a real tonic client.

use std::time::Duration;

use reqwest::Method;
use steward_proto::admin::v1::admin_client::AdminClient;
use steward_proto::admin::v1::{
    EventKind, GetResourceRequest, ListResourcesRequest, WatchResourcesRequest,
};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{Steward, TOKEN, WITHIN, eventually};

fn authed<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", MetadataValue::try_from(format!("Bearer {TOKEN}")).unwrap());
    req
}

#[tokio::test]
async fn health_and_admin_service() {
    let s = Steward::start(&[]).await;
    let channel =
        tonic::transport::Endpoint::from_shared(s.grpc.clone()).unwrap().connect().await.unwrap();

    let health = HealthClient::new(channel.clone());
    // the health reporter follows readiness from its own task: SERVING soon after "ready"
    let serving = eventually(WITHIN, || {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest { service: String::new() })
                .await
                .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
        }
    })
    .await;
    assert!(serving, "grpc health never reported SERVING");

    // nothing administrative answers on the public listener, token or not
    let mut public_admin = AdminClient::new(channel);
    let err =
        public_admin.list_resources(authed(ListResourcesRequest::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");

    let mut admin = AdminClient::connect(s.grpc_admin.clone()).await.unwrap();
    let err = admin.list_resources(ListResourcesRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let list = admin
        .list_resources(authed(ListResourcesRequest {
            kind: Some("service".into()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.resources.len(), 18, "with the RTC `peers` and `rooms` supervisors");
    let root = list.resources.iter().find(|r| r.name == "steward").unwrap();
    let got = admin
        .get_resource(authed(GetResourceRequest { id: root.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.name, "steward");

    let err =
        admin.get_resource(authed(GetResourceRequest { id: "nope".into() })).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = admin
        .get_resource(authed(GetResourceRequest { id: "00000000000000ff".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = admin
        .list_resources(authed(ListResourcesRequest {
            kind: Some("teapot".into()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn watch_resources_streams_events_and_ends_unavailable_on_shutdown() {
    let mut s = Steward::start(&[("STEWARD__SHUTDOWN__DEADLINES__READINESS_OFF", "200ms")]).await;
    let mut admin = AdminClient::connect(s.grpc_admin.clone()).await.unwrap();
    let mut stream =
        admin.watch_resources(authed(WatchResourcesRequest::default())).await.unwrap().into_inner();

    let id = s.service_id("http-public").await;
    let r = s.request(Method::DELETE, &format!("/v1/resources/{id}")).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
    let ev = tokio::time::timeout(WITHIN, stream.next())
        .await
        .expect("an event")
        .expect("stream open")
        .unwrap();
    assert_eq!(ev.event(), EventKind::Stopped);
    assert_eq!(ev.id, id);
    assert_eq!(ev.exit_reason.as_deref(), Some("shutdown"));

    s.signal(nix::sys::signal::Signal::SIGTERM);
    let end = tokio::time::timeout(WITHIN, async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => {}
                Some(Err(status)) => return Some(status.code()),
                None => return None,
            }
        }
    })
    .await
    .expect("the stream ended");
    assert_eq!(end, Some(Code::Unavailable));
    let status = s.wait_exit(Duration::from_secs(30)).await.expect("exited within the grace");
    assert!(status.success(), "{status:?}\n{}", s.dump());
}
