//! The pure parts of `steward.messaging.v1.Messaging`: wire ↔ domain conversions, the
//! validation of well-known types, error and result mapping, the framing of deliveries, and the
//! rendering of a consumer's events as a stream (over a scripted event stream), and tonic's
//! request size limit. The service against a real broker is tested end to end through the
//! binary.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures_util::StreamExt as _;
use prost_types::{FileDescriptorSet, Timestamp};
use steward_messaging::consumer::StreamSettings;
use steward_messaging::names::Invalid;
use steward_messaging::{
    ConsumerEvent, Delivered, EntryError, Message, MessagingError, ReceiveSpec, SendResult,
};
use steward_proto::messaging::v1 as pb;
use steward_proto::messaging::v1::receive_messages_response::Event;
use steward_proto::prost::Message as _;
use steward_proto::prost::bytes::Bytes;
use steward_tenancy::QuotaKind;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::{
    Receive, admission_error, change_entries, change_result_to_pb, delivered_to_pb,
    deliveries_frames, duration_from_pb, duration_to_pb, entry_result_to_pb, nack_entries,
    receive_spec, send_entries, send_result_to_pb, started, time_from_pb,
};
use crate::status_from_messaging;

fn pb_duration(seconds: i64, nanos: i32) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos }
}

/// The field an `Invalid` error names.
fn invalid_field(e: &MessagingError) -> &str {
    match e {
        MessagingError::Invalid(invalid) => &invalid.field,
        other => panic!("not Invalid: {other:?}"),
    }
}

fn message(id: &str, body: &[u8]) -> Arc<Message> {
    Arc::new(Message {
        message_id: id.to_owned(),
        client_id: format!("c-{id}"),
        topic: "orders.eu".into(),
        body: Bytes::copy_from_slice(body),
        tag: Some("paid".to_owned()),
        keys: vec!["k1".to_owned(), "k2".to_owned()],
        properties: BTreeMap::from([("trace.id".to_owned(), "abc".to_owned())]),
        published_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        deliver_at: None,
    })
}

fn delivered(id: &str, body: &[u8]) -> Delivered {
    Delivered {
        message: message(id, body),
        attempt: 2,
        receipt: format!("r-{id}"),
        invisible_until: UNIX_EPOCH + Duration::from_secs(1_700_000_030),
    }
}

fn event_of(frame: &pb::ReceiveMessagesResponse) -> &Event {
    frame.event.as_ref().expect("every response has an event")
}

fn delivered_ids(frame: &pb::ReceiveMessagesResponse) -> Vec<String> {
    match event_of(frame) {
        Event::Deliveries(d) => d.messages.iter().map(|m| m.message_id.clone()).collect(),
        other => panic!("not deliveries: {other:?}"),
    }
}

#[test]
fn descriptor_set_has_the_messaging_service() {
    let set = FileDescriptorSet::decode(steward_proto::FILE_DESCRIPTOR_SET).unwrap();
    let file = set
        .file
        .iter()
        .find(|f| f.package() == "steward.messaging.v1")
        .expect("the steward.messaging.v1 package");
    let service = file.service.iter().find(|s| s.name() == "Messaging").expect("Messaging");
    let mut methods: Vec<(&str, bool)> =
        service.method.iter().map(|m| (m.name(), m.server_streaming())).collect();
    methods.sort_unstable();
    assert_eq!(
        methods,
        [
            ("AckMessages", false),
            ("ChangeInvisibleDuration", false),
            ("CleanupConsumer", false),
            ("CleanupProducer", false),
            ("Heartbeat", false),
            ("NackMessages", false),
            ("ReceiveMessages", true),
            ("SendMessage", false),
        ]
    );
    assert!(service.method.iter().all(|m| !m.client_streaming()), "no client streams");
    // reflection can resolve the well-known types it imports
    for wkt in ["google/protobuf/duration.proto", "google/protobuf/timestamp.proto"] {
        assert!(set.file.iter().any(|f| f.name() == wkt), "{wkt} is in the set");
    }
}

#[test]
fn durations_are_validated_and_name_their_field() {
    assert_eq!(duration_from_pb("d", &pb_duration(0, 0)).unwrap(), Duration::ZERO);
    assert_eq!(
        duration_from_pb("d", &pb_duration(30, 500_000_000)).unwrap(),
        Duration::from_millis(30_500)
    );
    assert_eq!(
        duration_from_pb("d", &pb_duration(315_576_000_000, 999_999_999)).unwrap(),
        Duration::new(315_576_000_000, 999_999_999)
    );
    for (seconds, nanos, why) in [
        (-1, 0, "must not be negative"),
        (0, -1, "must not be negative"),
        (-2, -500, "must not be negative"),
        (1, -1, "valid google.protobuf.Duration"),
        (-1, 1, "valid google.protobuf.Duration"),
        (0, 1_000_000_000, "valid google.protobuf.Duration"),
        (315_576_000_001, 0, "valid google.protobuf.Duration"),
        (i64::MIN, 0, "valid google.protobuf.Duration"),
    ] {
        let e = duration_from_pb("entries[2].delay", &pb_duration(seconds, nanos)).unwrap_err();
        let MessagingError::Invalid(invalid) = &e else { panic!("{e:?}") };
        assert_eq!(invalid.field, "entries[2].delay", "({seconds}, {nanos})");
        assert!(invalid.reason.contains(why), "({seconds}, {nanos}): {}", invalid.reason);
        assert_eq!(status_from_messaging(&e).code(), Code::InvalidArgument);
    }
}

#[test]
fn durations_go_on_the_wire_and_saturate() {
    assert_eq!(duration_to_pb(Duration::from_millis(1500)), pb_duration(1, 500_000_000));
    assert_eq!(duration_to_pb(Duration::MAX), pb_duration(315_576_000_000, 999_999_999));
}

#[test]
fn timestamps_are_validated_and_name_their_field() {
    let at = |seconds, nanos| Timestamp { seconds, nanos };
    assert_eq!(
        time_from_pb("t", &at(1_700_000_000, 5)).unwrap(),
        UNIX_EPOCH + Duration::new(1_700_000_000, 5)
    );
    // before the epoch is a time like any other (a past deliver_at: at once)
    assert_eq!(time_from_pb("t", &at(-1, 0)).unwrap(), UNIX_EPOCH - Duration::from_secs(1));
    assert!(time_from_pb("t", &at(253_402_300_799, 999_999_999)).is_ok());
    assert!(time_from_pb("t", &at(-62_135_596_800, 0)).is_ok());
    for (seconds, nanos) in
        [(0, -1), (0, 1_000_000_000), (253_402_300_800, 0), (-62_135_596_801, 0), (i64::MAX, 0)]
    {
        let e = time_from_pb("messages[1].deliver_at", &at(seconds, nanos)).unwrap_err();
        assert_eq!(invalid_field(&e), "messages[1].deliver_at", "({seconds}, {nanos})");
    }
}

#[test]
fn send_entries_take_every_field_and_unset_the_empty_ones() {
    let full = pb::OutgoingMessage {
        topic: "orders".to_owned(),
        client_message_id: "m-1".to_owned(),
        body: Bytes::from_static(b"hello"),
        tag: "paid".to_owned(),
        keys: vec!["order-7".to_owned()],
        properties: BTreeMap::from([("a".to_owned(), "b".to_owned())]),
        deliver_at: Some(Timestamp { seconds: 1_800_000_000, nanos: 0 }),
    };
    let bare = pb::OutgoingMessage {
        topic: "orders".to_owned(),
        client_message_id: "m-2".to_owned(),
        ..pb::OutgoingMessage::default()
    };
    let entries = send_entries(vec![full, bare]).unwrap();
    assert_eq!(entries.len(), 2);
    let m = &entries[0].message;
    assert_eq!(entries[0].topic, "orders");
    assert_eq!(m.client_id, "m-1");
    assert_eq!(&m.body[..], b"hello");
    assert_eq!(m.tag.as_deref(), Some("paid"));
    assert_eq!(m.keys, ["order-7"]);
    assert_eq!(m.properties.get("a").map(String::as_str), Some("b"));
    assert_eq!(m.deliver_at, Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)));
    let m = &entries[1].message;
    assert_eq!((m.tag.as_ref(), m.deliver_at, m.body.len()), (None, None, 0));
    // an empty client id is passed on: the messaging rules refuse it per entry
    assert!(
        send_entries(vec![pb::OutgoingMessage::default()]).unwrap()[0].message.client_id.is_empty()
    );
}

#[test]
fn a_bad_deliver_at_refuses_the_batch_naming_its_message() {
    let ok = pb::OutgoingMessage { topic: "t".to_owned(), ..pb::OutgoingMessage::default() };
    let bad =
        pb::OutgoingMessage { deliver_at: Some(Timestamp { seconds: 0, nanos: -5 }), ..ok.clone() };
    let e = send_entries(vec![ok.clone(), ok, bad]).unwrap_err();
    assert_eq!(invalid_field(&e), "messages[2].deliver_at");
    let status = status_from_messaging(&e);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("bad_request: invalid `messages[2].deliver_at`: "));
}

#[test]
fn send_results_map_to_result_codes() {
    let ok = send_result_to_pb(SendResult::Ok { message_id: "1f".to_owned(), duplicate: true });
    assert_eq!(
        ok,
        pb::SendResult {
            code: pb::ResultCode::Ok.into(),
            message_id: "1f".to_owned(),
            duplicate: true,
            detail: String::new(),
        }
    );
    for (result, code) in [
        (SendResult::RetryLater("topic full".to_owned()), pb::ResultCode::RetryLater),
        (SendResult::Invalid("messages[0].topic: bad".to_owned()), pb::ResultCode::InvalidArgument),
        (SendResult::Unavailable("timeout".to_owned()), pb::ResultCode::Unavailable),
        (
            SendResult::QuotaExceeded(steward_messaging::QuotaRefusal {
                quota: "stored_bytes",
                limit: 10,
            }),
            pb::ResultCode::ResourceExhausted,
        ),
    ] {
        let detail = match &result {
            SendResult::RetryLater(d) | SendResult::Invalid(d) | SendResult::Unavailable(d) => {
                d.clone()
            }
            SendResult::QuotaExceeded(r) => format!("quota_exceeded: {r}"),
            SendResult::Ok { .. } => unreachable!(),
        };
        let wire = send_result_to_pb(result);
        assert_eq!(wire.code(), code);
        assert_eq!((wire.message_id.as_str(), wire.duplicate), ("", false));
        assert_eq!(wire.detail, detail);
    }
}

#[test]
fn entry_errors_map_to_result_codes() {
    assert_eq!(entry_result_to_pb(Ok(())).code(), pb::ResultCode::Ok);
    for (e, code) in [
        (
            EntryError::Invalid(Invalid::new("receipt_handles[0]", "empty")),
            pb::ResultCode::InvalidArgument,
        ),
        (EntryError::NotFound("receipt not found: r-1".to_owned()), pb::ResultCode::NotFound),
        (EntryError::Unavailable("broker down".to_owned()), pb::ResultCode::Unavailable),
    ] {
        let wire = entry_result_to_pb(Err(e.clone()));
        assert_eq!(wire.code(), code);
        assert_eq!(wire.detail, e.to_string());
        let wire = change_result_to_pb(Err(e.clone()));
        assert_eq!((wire.code(), wire.invisible_until), (code, None));
        assert_eq!(wire.detail, e.to_string());
    }
    let until = UNIX_EPOCH + Duration::from_secs(1_700_000_060);
    let wire = change_result_to_pb(Ok(until));
    assert_eq!(wire.code(), pb::ResultCode::Ok);
    assert_eq!(wire.invisible_until, Some(until.into()));
}

#[test]
fn nack_delays_default_to_zero_and_are_validated() {
    let entries = vec![
        pb::NackEntry { receipt_handle: "a".to_owned(), delay: None },
        pb::NackEntry { receipt_handle: "b".to_owned(), delay: Some(pb_duration(5, 0)) },
    ];
    assert_eq!(
        nack_entries(entries).unwrap(),
        [("a".to_owned(), Duration::ZERO), ("b".to_owned(), Duration::from_secs(5))]
    );
    let bad = vec![
        pb::NackEntry { receipt_handle: "a".to_owned(), delay: None },
        pb::NackEntry { receipt_handle: "b".to_owned(), delay: Some(pb_duration(-5, 0)) },
    ];
    assert_eq!(invalid_field(&nack_entries(bad).unwrap_err()), "entries[1].delay");
}

#[test]
fn invisible_durations_are_required_and_not_negative() {
    let entry = |d| pb::ChangeInvisibleDurationEntry {
        receipt_handle: "r".to_owned(),
        invisible_duration: d,
    };
    assert_eq!(
        change_entries(vec![entry(Some(pb_duration(60, 0)))]).unwrap(),
        [("r".to_owned(), Duration::from_secs(60))]
    );
    // zero is passed on (the messaging rules: visible again at once)
    assert_eq!(
        change_entries(vec![entry(Some(pb_duration(0, 0)))]).unwrap(),
        [("r".to_owned(), Duration::ZERO)]
    );
    for (d, why) in [(None, "is required"), (Some(pb_duration(-1, 0)), "must not be negative")] {
        let e = change_entries(vec![entry(Some(pb_duration(1, 0))), entry(d)]).unwrap_err();
        let MessagingError::Invalid(invalid) = &e else { panic!("{e:?}") };
        assert_eq!(invalid.field, "entries[1].invisible_duration");
        assert!(invalid.reason.contains(why), "{}", invalid.reason);
    }
}

#[test]
fn receive_specs_unset_zeros_and_empty_strings() {
    let spec = receive_spec(pb::ReceiveMessagesRequest {
        group: "billing".to_owned(),
        topic: "orders".to_owned(),
        ..pb::ReceiveMessagesRequest::default()
    })
    .unwrap();
    let ReceiveSpec {
        group,
        topic,
        tag,
        consumer_id,
        max_outstanding_messages,
        max_outstanding_bytes,
        invisible_duration,
        auto_renew,
    } = spec;
    assert_eq!((group.as_str(), topic.as_str()), ("billing", "orders"));
    assert_eq!((tag, consumer_id), (None, None));
    assert_eq!((max_outstanding_messages, max_outstanding_bytes), (None, None));
    assert_eq!((invisible_duration, auto_renew), (None, false));

    let spec = receive_spec(pb::ReceiveMessagesRequest {
        group: "billing".to_owned(),
        topic: "orders".to_owned(),
        tag: "*".to_owned(),
        consumer_id: "worker-1".to_owned(),
        max_outstanding_messages: 10,
        max_outstanding_bytes: 1 << 20,
        invisible_duration: Some(pb_duration(90, 0)),
        auto_renew: true,
    })
    .unwrap();
    assert_eq!(spec.tag.as_deref(), Some("*"));
    assert_eq!(spec.consumer_id.as_deref(), Some("worker-1"));
    assert_eq!(spec.max_outstanding_messages, Some(10));
    assert_eq!(spec.max_outstanding_bytes, Some(1 << 20));
    assert_eq!(spec.invisible_duration, Some(Duration::from_secs(90)));
    assert!(spec.auto_renew);

    for d in [pb_duration(-3, 0), pb_duration(1, -1)] {
        let e = receive_spec(pb::ReceiveMessagesRequest {
            invisible_duration: Some(d),
            ..pb::ReceiveMessagesRequest::default()
        })
        .unwrap_err();
        assert_eq!(invalid_field(&e), "invisible_duration");
    }
}

#[test]
fn started_tells_the_consumer_id_and_the_effective_settings() {
    let settings = StreamSettings {
        max_outstanding_messages: 1000,
        max_outstanding_bytes: 16 << 20,
        invisible_duration: Duration::from_secs(30),
        auto_renew: true,
    };
    let frame = started("c-7", &settings, Duration::from_secs(10));
    let Event::Started(s) = event_of(&frame) else { panic!("{frame:?}") };
    assert_eq!(s.consumer_id, "c-7");
    assert_eq!((s.max_outstanding_messages, s.max_outstanding_bytes), (1000, 16 << 20));
    assert_eq!(s.invisible_duration, Some(pb_duration(30, 0)));
    assert!(s.auto_renew);
    assert_eq!(s.heartbeat_interval, Some(pb_duration(10, 0)));
}

#[test]
fn deliveries_carry_the_message_and_the_lease() {
    let mut d = delivered("2a", b"body");
    Arc::make_mut(&mut d.message).deliver_at = Some(UNIX_EPOCH + Duration::from_secs(5));
    let m = delivered_to_pb(&d);
    assert_eq!(m.message_id, "2a");
    assert_eq!(m.client_message_id, "c-2a");
    assert_eq!(m.topic, "orders.eu");
    assert_eq!(&m.body[..], b"body");
    assert_eq!(m.tag, "paid");
    assert_eq!(m.keys, ["k1", "k2"]);
    assert_eq!(m.properties.get("trace.id").map(String::as_str), Some("abc"));
    assert_eq!(m.published_at, Some(Timestamp { seconds: 1_700_000_000, nanos: 0 }));
    assert_eq!(m.delivery_attempt, 2);
    assert_eq!(m.receipt_handle, "r-2a");
    assert_eq!(m.invisible_until, Some(Timestamp { seconds: 1_700_000_030, nanos: 0 }));
    assert_eq!(m.deliver_at, Some(Timestamp { seconds: 5, nanos: 0 }));

    let mut untagged = delivered("2b", b"");
    Arc::make_mut(&mut untagged.message).tag = None;
    let m = delivered_to_pb(&untagged);
    assert_eq!((m.tag.as_str(), m.deliver_at), ("", None));
}

#[test]
fn deliveries_are_framed_within_the_budget_in_order() {
    let batch: Vec<Delivered> =
        (0..10).map(|i| delivered(&format!("{i:02}"), &[b'x'; 1000])).collect();
    let budget = 3500;
    let frames = deliveries_frames(&batch, budget);
    assert!(frames.len() > 1, "ten 1000-byte messages need several 3500-byte frames");
    for frame in &frames {
        assert!(frame.encoded_len() <= budget, "{} > {budget}", frame.encoded_len());
    }
    let ids: Vec<String> = frames.iter().flat_map(delivered_ids).collect();
    let want: Vec<String> = (0..10).map(|i| format!("{i:02}")).collect();
    assert_eq!(ids, want);

    // one frame when it fits; a delivery bigger than the budget travels alone
    assert_eq!(deliveries_frames(&batch, usize::MAX).len(), 1);
    let big = vec![delivered("a", b"x"), delivered("b", &[b'y'; 5000]), delivered("c", b"z")];
    let frames = deliveries_frames(&big, 1000);
    let ids: Vec<Vec<String>> = frames.iter().map(delivered_ids).collect();
    assert_eq!(ids, [vec!["a".to_owned()], vec!["b".to_owned()], vec!["c".to_owned()]]);
    assert!(deliveries_frames(&[], 1000).is_empty());
}

#[test]
fn messaging_errors_map_to_codes_and_messages() {
    let cases = [
        (
            MessagingError::Invalid(Invalid::new("group", "must not be empty")),
            Code::InvalidArgument,
            "bad_request: invalid `group`: must not be empty",
        ),
        (
            MessagingError::Conflict("group g has filter a".to_owned()),
            Code::FailedPrecondition,
            "failed_precondition: group g has filter a",
        ),
        (
            MessagingError::Unavailable("broker unavailable: down".to_owned()),
            Code::Unavailable,
            "unavailable: broker unavailable: down",
        ),
        (MessagingError::Internal("oops".to_owned()), Code::Internal, "internal: oops"),
    ];
    for (e, code, message) in cases {
        let status = status_from_messaging(&e);
        assert_eq!((status.code(), status.message()), (code, message));
        assert!(status.metadata().get("retry-after").is_none());
    }

    let exhausted = |retry_after| MessagingError::Exhausted {
        message: "node holds 10000 consumers".to_owned(),
        retry_after,
    };
    let status = status_from_messaging(&exhausted(Duration::from_millis(1500)));
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "resource_exhausted: node holds 10000 consumers");
    assert_eq!(status.metadata().get("retry-after").unwrap(), "2");
    let status = status_from_messaging(&exhausted(Duration::ZERO));
    assert!(status.metadata().get("retry-after").is_none(), "no hint when waiting cannot help");
}

#[test]
fn quota_refusals_become_messaging_errors() {
    let refused = |retry_after| steward_tenancy::Error::QuotaExceeded {
        tenant: "acme".to_owned(),
        quota: QuotaKind::Producers,
        limit: 10,
        retry_after,
    };
    let e = admission_error(&refused(Some(Duration::from_secs(1))));
    assert_eq!(
        e,
        MessagingError::Exhausted {
            message: "quota `producers` of tenant acme is exhausted (limit 10)".to_owned(),
            retry_after: Duration::from_secs(1),
        }
    );
    let status = status_from_messaging(&e);
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.metadata().get("retry-after").unwrap(), "1");

    // a quota of 0: no retry hint
    let e = admission_error(&refused(None));
    assert!(matches!(&e, MessagingError::Exhausted { retry_after, .. } if retry_after.is_zero()));

    // the tenant is being deleted: retrying cannot help
    let e = admission_error(&steward_tenancy::Error::NotFound("tenant acme".to_owned()));
    assert_eq!(status_from_messaging(&e).code(), Code::FailedPrecondition);
    let e = admission_error(&steward_tenancy::Error::Internal("?".to_owned()));
    assert_eq!(status_from_messaging(&e).code(), Code::Internal);
}

fn started_frame() -> pb::ReceiveMessagesResponse {
    let settings = StreamSettings {
        max_outstanding_messages: 1,
        max_outstanding_bytes: 1,
        invisible_duration: Duration::from_secs(1),
        auto_renew: false,
    };
    started("c", &settings, Duration::from_secs(1))
}

/// Everything a stream over `events` yields (it must end).
async fn collect(
    events: Vec<ConsumerEvent>,
    budget: usize,
) -> Vec<Result<pb::ReceiveMessagesResponse, Status>> {
    let receive =
        Receive::new(futures_util::stream::iter(events), CancellationToken::new(), budget);
    receive.into_stream(started_frame()).collect().await
}

#[tokio::test]
async fn a_stream_starts_renders_events_and_ends_with_the_consumers_error() {
    let events = vec![
        ConsumerEvent::Deliveries(vec![delivered("1", b"a"), delivered("2", b"b")]),
        ConsumerEvent::Heartbeat,
        ConsumerEvent::Deliveries(vec![delivered("3", &[b'c'; 600]), delivered("4", &[b'd'; 600])]),
        ConsumerEvent::End(MessagingError::Unavailable(
            "the consumer was cleaned up (CleanupConsumer)".to_owned(),
        )),
        ConsumerEvent::Heartbeat,
    ];
    let items = collect(events, 1000).await;
    assert_eq!(items.len(), 6, "{items:?}");
    assert!(matches!(event_of(items[0].as_ref().unwrap()), Event::Started(_)));
    assert_eq!(delivered_ids(items[1].as_ref().unwrap()), ["1", "2"]);
    assert!(matches!(event_of(items[2].as_ref().unwrap()), Event::Heartbeat(_)));
    // one event over the budget: two frames, in order
    assert_eq!(delivered_ids(items[3].as_ref().unwrap()), ["3"]);
    assert_eq!(delivered_ids(items[4].as_ref().unwrap()), ["4"]);
    let end = items[5].as_ref().unwrap_err();
    assert_eq!(end.code(), Code::Unavailable);
    assert_eq!(end.message(), "unavailable: the consumer was cleaned up (CleanupConsumer)");
}

#[tokio::test]
async fn a_stream_whose_consumer_vanished_ends_unavailable() {
    let items = collect(vec![ConsumerEvent::Heartbeat], 1000).await;
    assert_eq!(items.len(), 3);
    assert_eq!(items[2].as_ref().unwrap_err().code(), Code::Unavailable);
}

#[tokio::test]
async fn a_cancelled_stream_ends_shutting_down_and_drops_the_consumer() {
    let cancel = CancellationToken::new();
    // the consumer's side: dropped when the stream lets go of it
    let (tx, rx) = tokio::sync::mpsc::channel::<ConsumerEvent>(4);
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (event, rx))
    });
    let receive = Receive::new(Box::pin(events), cancel.clone(), 1000);
    let mut stream = Box::pin(receive.into_stream(started_frame()));
    assert!(matches!(event_of(&stream.next().await.unwrap().unwrap()), Event::Started(_)));
    tx.send(ConsumerEvent::Heartbeat).await.unwrap();
    assert!(matches!(event_of(&stream.next().await.unwrap().unwrap()), Event::Heartbeat(_)));

    cancel.cancel();
    let end = stream.next().await.unwrap().unwrap_err();
    assert_eq!(
        (end.code(), end.message()),
        (Code::Unavailable, "shutting_down: server shutting down")
    );
    assert!(tx.is_closed(), "the consumer's stream is dropped with the error, not later");
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn a_request_over_max_request_is_out_of_range_before_the_handler() {
    use steward_proto::messaging::v1::messaging_client::MessagingClient;

    let dir = tempfile::tempdir().unwrap();
    let mut config = steward_config::Config::defaults();
    config.store.data_dir = dir.path().join("data");
    config.messaging.max_request = "1KiB".parse().unwrap();
    let registry = steward_core::Registry::with_defaults();
    let tenancy = steward_tenancy::Tenancy::open(
        &config.store,
        &config.tenancy,
        registry.clone(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let messaging = steward_messaging::Messaging::new(config.messaging.clone(), registry);
    let service = super::MessagingService::new(messaging, tenancy, CancellationToken::new());
    assert_eq!(service.max_request(), 1024);
    // no TenantAuth in front: a request that gets through decoding fails UNAUTHENTICATED
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    #[allow(clippy::disallowed_methods)] // test scaffolding: aborted at the end
    let server = tokio::spawn(async move { server.await.unwrap() });
    let mut client = MessagingClient::connect(format!("http://{addr}")).await.unwrap();

    let send = |size: usize| pb::SendMessageRequest {
        producer_id: String::new(),
        messages: vec![pb::OutgoingMessage {
            topic: "t".to_owned(),
            client_message_id: "m".to_owned(),
            body: Bytes::from(vec![b'x'; size]),
            ..pb::OutgoingMessage::default()
        }],
    };
    let status = client.send_message(send(2048)).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let status = client.send_message(send(16)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    server.abort();
}
