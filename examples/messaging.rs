//! A short client of Steward's messaging API, `steward.messaging.v1.Messaging`
//! (`docs/protocol/messaging.md`): it opens a receive stream of group `example` on topic
//! `example.greetings`, sends three messages to the topic, then prints each delivery and acks it.
//!
//! The stream is opened first because a group sees only what is published after it first
//! opened. Run it against a running Steward with one of a tenant's API tokens:
//!
//! ```sh
//! STEWARD_TOKEN=stw_… cargo run --example messaging
//! ```
//!
//! `STEWARD_GRPC` points it at another gRPC listener (default `http://127.0.0.1:50051`). It
//! exits 0 once all three messages are acked, 1 on any error.
#![allow(clippy::print_stdout)]

use std::error::Error;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use steward_proto::messaging::v1::messaging_client::MessagingClient;
use steward_proto::messaging::v1::receive_messages_response::Event;
use steward_proto::messaging::v1::{
    AckMessagesRequest, OutgoingMessage, ReceiveMessagesRequest, ResultCode, SendMessageRequest,
};
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

const TOPIC: &str = "example.greetings";
const GROUP: &str = "example";
const COUNT: usize = 3;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let token = std::env::var("STEWARD_TOKEN").map_err(|_| "set STEWARD_TOKEN to an API token")?;
    let url = std::env::var("STEWARD_GRPC").unwrap_or_else(|_| "http://127.0.0.1:50051".into());

    // every call carries `authorization: Bearer <token>`
    let bearer: MetadataValue<_> = format!("Bearer {token}").parse()?;
    let channel = Channel::from_shared(url)?.connect().await?;
    let mut client = MessagingClient::with_interceptor(channel, move |mut req: Request<()>| {
        req.metadata_mut().insert("authorization", bearer.clone());
        Ok(req)
    });

    // 1. join the group; the stream's first message is always `started`
    let request =
        ReceiveMessagesRequest { group: GROUP.into(), topic: TOPIC.into(), ..Default::default() };
    let mut stream = client.receive_messages(request).await?.into_inner();
    match stream.message().await?.and_then(|m| m.event) {
        Some(Event::Started(s)) => println!("receiving from {TOPIC} as {GROUP}/{}", s.consumer_id),
        other => return Err(format!("expected `started`, got {other:?}").into()),
    }

    // 2. send a batch; each message needs a client id (a resend with the same id within the
    //    dedup window is stored once), unique per run here
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let messages = (1..=COUNT)
        .map(|i| OutgoingMessage {
            topic: TOPIC.into(),
            client_message_id: format!("example-{run}-{i}"),
            body: format!("hello #{i}").into(),
            properties: [("lang".to_owned(), "en".to_owned())].into(),
            ..Default::default()
        })
        .collect();
    let sent = client.send_message(SendMessageRequest { producer_id: String::new(), messages });
    for result in sent.await?.into_inner().results {
        if result.code() != ResultCode::Ok {
            return Err(format!("not stored: {:?} {}", result.code(), result.detail).into());
        }
        println!("sent     message {}", result.message_id);
    }

    // 3. receive, print and ack until this run's messages are all acked
    let mine = format!("example-{run}-");
    let mut left = COUNT;
    while left > 0 {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .map_err(|_| "no delivery within 10 s")??;
        let deliveries = match next.and_then(|m| m.event) {
            Some(Event::Deliveries(d)) => d.messages,
            Some(Event::Heartbeat(_) | Event::Started(_)) => continue,
            None => return Err("the stream ended".into()),
        };
        for m in &deliveries {
            println!(
                "received message {} {:?} (client id {}, properties {:?}, attempt {})",
                m.message_id,
                String::from_utf8_lossy(&m.body),
                m.client_message_id,
                m.properties,
                m.delivery_attempt,
            );
            if m.client_message_id.starts_with(&mine) {
                left -= 1;
            }
        }
        // ack them all (an earlier run's leftovers too), one call for the batch
        let receipt_handles = deliveries.into_iter().map(|m| m.receipt_handle).collect();
        let acked = client.ack_messages(AckMessagesRequest { receipt_handles }).await?;
        for result in acked.into_inner().results {
            if result.code() != ResultCode::Ok {
                return Err(format!("ack refused: {:?} {}", result.code(), result.detail).into());
            }
        }
        println!("acked");
    }
    // dropping the stream leaves the group; its position stays for the next run
    Ok(())
}
