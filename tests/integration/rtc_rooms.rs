//! Room admin over gRPC (`steward.rtc.v1.Rooms`) against the real binary, with real webrtc-rs
//! client peers (`rtc_client`) in the rooms: listing, a server data message on every data
//! channel, removing a participant, closing a room, tenant isolation, bad input, and the
//! service in health and reflection.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use steward_proto::rtc::v1 as pb;
use steward_proto::rtc::v1::rooms_client::RoomsClient;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::rtc::{rtc_env, rtc_url};
use crate::rtc_client::RtcClient;
use crate::sockets::authed;
use crate::support::{Steward, WITHIN, eventually};

type Client = RoomsClient<tonic::transport::Channel>;

async fn client(s: &Steward) -> Client {
    RoomsClient::connect(s.grpc.clone()).await.unwrap()
}

/// A client joined to `room` as `name`, its connection up (no media).
async fn joined(s: &Steward, token: &str, room: &str, name: &str) -> (RtcClient, String) {
    let c = RtcClient::connect(&rtc_url(s, token)).await.expect("upgrade");
    let joined = c.join(room, name).await.expect("joined");
    c.start(false).await.expect("offer/answer");
    c.wait_connected(WITHIN).await.expect("connected");
    (c, joined.peer_id)
}

async fn list_rooms(c: &mut Client, token: &str) -> Vec<pb::Room> {
    c.list_rooms(authed(token, pb::ListRoomsRequest {})).await.unwrap().into_inner().rooms
}

async fn participants(c: &mut Client, token: &str, room: &str) -> Vec<pb::Participant> {
    c.list_participants(authed(token, pb::ListParticipantsRequest { room: room.into() }))
        .await
        .unwrap()
        .into_inner()
        .participants
}

fn names(participants: &[pb::Participant]) -> Vec<String> {
    let mut names: Vec<String> = participants.iter().map(|p| p.name.clone()).collect();
    names.sort_unstable();
    names
}

#[tokio::test]
async fn rooms_are_listed_sent_to_kicked_and_closed_over_grpc() {
    let s = Steward::start(&rtc_env("41100-41109")).await;
    let token = s.tenant_with_token("acme", None).await.1;
    let other = s.tenant_with_token("globex", None).await.1;
    let mut c = client(&s).await;
    assert!(list_rooms(&mut c, &token).await.is_empty());

    let (alice, _) = joined(&s, &token, "standup", "alice").await;
    let (bob, _) = joined(&s, &token, "standup", "bob").await;
    let (carol, carol_id) = joined(&s, &token, "standup", "carol").await;

    // ListRooms and ListParticipants show the three peers
    let rooms = list_rooms(&mut c, &token).await;
    assert_eq!(rooms.len(), 1, "{rooms:?}");
    assert_eq!((rooms[0].name.as_str(), rooms[0].participants, rooms[0].tracks), ("standup", 3, 0));
    assert_eq!(rooms[0].id.len(), 16, "a resource id: {rooms:?}");
    let listed = participants(&mut c, &token, "standup").await;
    assert_eq!(names(&listed), ["alice", "bob", "carol"]);
    assert!(listed.iter().any(|p| p.peer_id == carol_id), "{listed:?}");
    assert!(listed.iter().all(|p| p.tracks.is_empty()), "{listed:?}");

    // another tenant sees none of it and touches nothing
    assert!(list_rooms(&mut c, &other).await.is_empty());
    let err = c
        .list_participants(authed(&other, pb::ListParticipantsRequest { room: "standup".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().starts_with("not_found: "), "{err:?}");
    let err = c
        .remove_participant(authed(
            &other,
            pb::RemoveParticipantRequest { room: "standup".into(), peer_id: carol_id.clone() },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = c
        .send_data(authed(
            &other,
            pb::SendDataRequest { room: "standup".into(), data: Bytes::from_static(b"x") },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = c
        .close_room(authed(&other, pb::CloseRoomRequest { room: "standup".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(participants(&mut c, &token, "standup").await.len(), 3, "untouched");

    // SendData reaches every data channel (once each one is open on the server's side)
    let payload = Bytes::from_static(b"from the server");
    let delivered_to_all = eventually(WITHIN, || {
        let mut c = c.clone();
        let (token, payload) = (token.clone(), payload.clone());
        async move {
            let req = pb::SendDataRequest { room: "standup".into(), data: payload };
            c.send_data(authed(&token, req)).await.unwrap().into_inner().delivered == 3
        }
    })
    .await;
    assert!(delivered_to_all, "SendData never reached the three peers");
    for peer in [&alice, &bob, &carol] {
        let data = peer.wait_data(1, WITHIN).await.unwrap();
        assert!(data.iter().all(|d| *d == payload), "{data:?}");
    }

    // bad input: the room name, an empty peer id, oversize data
    for room in ["", "no spaces", &"r".repeat(1000)] {
        let err = c
            .list_participants(authed(&token, pb::ListParticipantsRequest { room: room.into() }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{room:?}: {err:?}");
        assert!(err.message().starts_with("bad_request: "), "{err:?}");
        assert!(err.message().contains("`room`"), "names the field: {err:?}");
    }
    let err = c
        .remove_participant(authed(
            &token,
            pb::RemoveParticipantRequest { room: "standup".into(), peer_id: String::new() },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("peer_id"), "{err:?}");
    let err = c
        .remove_participant(authed(
            &token,
            pb::RemoveParticipantRequest { room: "standup".into(), peer_id: "nobody".into() },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // `[rtc] max_data_message` is 64 KiB by default
    for data in [Bytes::new(), Bytes::from(vec![7u8; 64 * 1024 + 1])] {
        let len = data.len();
        let err = c
            .send_data(authed(&token, pb::SendDataRequest { room: "standup".into(), data }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{len} bytes: {err:?}");
        assert!(err.message().contains("data"), "names the field: {err:?}");
    }
    let err = c
        .send_data(authed(
            &token,
            pb::SendDataRequest { room: "elsewhere".into(), data: payload.clone() },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // RemoveParticipant: carol closes `kicked`, the others are told she left
    c.remove_participant(authed(
        &token,
        pb::RemoveParticipantRequest { room: "standup".into(), peer_id: carol_id.clone() },
    ))
    .await
    .unwrap();
    let closing = carol.next_message_of_type("closing", WITHIN).await.unwrap();
    assert_eq!(closing["reason"], "kicked", "{closing}");
    assert_eq!(closing["reconnect"], false, "{closing}");
    for peer in [&alice, &bob] {
        let left = peer.next_message_of_type("participant_left", WITHIN).await.unwrap();
        assert_eq!(
            (left["peer_id"].as_str(), left["reason"].as_str()),
            (Some(&*carol_id), Some("kicked"))
        );
    }
    let two = eventually(WITHIN, || {
        let (mut c, token) = (c.clone(), token.clone());
        async move { participants(&mut c, &token, "standup").await.len() == 2 }
    })
    .await;
    assert!(two, "carol is still listed");
    assert_eq!(names(&participants(&mut c, &token, "standup").await), ["alice", "bob"]);

    // CloseRoom: both close `room_closed`, and the room goes
    let closed = c
        .close_room(authed(&token, pb::CloseRoomRequest { room: "standup".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.participants, 2);
    for peer in [&alice, &bob] {
        let closing = peer.next_message_of_type("closing", WITHIN).await.unwrap();
        assert_eq!(closing["reason"], "room_closed", "{closing}");
    }
    let gone = eventually(WITHIN, || {
        let (mut c, token) = (c.clone(), token.clone());
        async move { list_rooms(&mut c, &token).await.is_empty() }
    })
    .await;
    assert!(gone, "the closed room is still listed");
    assert!(
        eventually(WITHIN, || async {
            s.resources("?kind=peer").await.is_empty() && s.resources("?kind=room").await.is_empty()
        })
        .await,
        "{}",
        s.dump()
    );
    let err = c
        .close_room(authed(&token, pb::CloseRoomRequest { room: "standup".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    for peer in [alice, bob, carol] {
        let _ = peer.close().await;
    }
}

#[tokio::test]
async fn rooms_needs_a_tenant_token_and_is_in_health_and_reflection() {
    let s = Steward::start(&rtc_env("41110-41119")).await;
    let mut c = client(&s).await;
    let err = c.list_rooms(pb::ListRoomsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = c.list_rooms(authed("not-a-token", pb::ListRoomsRequest {})).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let channel =
        tonic::transport::Endpoint::from_shared(s.grpc.clone()).unwrap().connect().await.unwrap();
    let health = HealthClient::new(channel.clone());
    let serving = eventually(WITHIN, || {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest { service: "steward.rtc.v1.Rooms".into() })
                .await
                .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
        }
    })
    .await;
    assert!(serving, "steward.rtc.v1.Rooms never reported SERVING");

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = tokio::time::timeout(Duration::from_secs(10), answers.next())
        .await
        .expect("a reflection answer")
        .expect("one message")
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}");
    };
    let services: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for name in ["steward.rtc.v1.Rooms", "steward.streams.v1.Streams", "grpc.health.v1.Health"] {
        assert!(services.contains(&name), "{name} is not in {services:?}");
    }
}
