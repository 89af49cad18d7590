//! `steward.rtc.v1.Rooms` ([`RoomsService`]): the room admin of the calling tenant over gRPC —
//! list rooms and participants, remove a participant, close a room, send a data message — on
//! the [`steward_rtc::Rtc`] façade, which keeps every tenant to its own rooms.

use std::sync::Arc;

use steward_proto::rtc::v1 as pb;
use steward_proto::rtc::v1::rooms_server::Rooms as RoomsRpc;
use steward_rtc::signal::check_room_name;
use steward_rtc::{ParticipantInfo, RoomSummary, Rtc};
use tonic::{Request, Response, Status};

use crate::error::status_from_rtc;
use crate::tenant_of;

/// `steward.rtc.v1.Rooms`: the rooms of the calling tenant on this node. Serve it behind
/// [`TenantAuth`](crate::TenantAuth), which supplies the caller; another tenant's room is
/// `NOT_FOUND` like one that never existed.
#[derive(Clone)]
pub struct RoomsService {
    rtc: Rtc,
}

impl RoomsService {
    /// A service over `rtc`.
    #[must_use]
    pub fn new(rtc: Rtc) -> Self {
        Self { rtc }
    }
}

/// The caller's tenant id.
fn tenant<T>(req: &Request<T>) -> Result<Arc<str>, Status> {
    Ok(tenant_of(req)?.tenant_id().as_str().into())
}

/// `room`, or `INVALID_ARGUMENT` naming the field.
fn room_name(room: &str) -> Result<&str, Status> {
    check_room_name(room).map_err(|why| status_from_rtc(&steward_rtc::Error::Invalid(why)))?;
    Ok(room)
}

fn answer<T>(result: steward_rtc::Result<T>) -> Result<T, Status> {
    result.map_err(|e| status_from_rtc(&e))
}

/// A count on the wire (saturating; node caps keep it far below).
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn room_to_pb(r: RoomSummary) -> pb::Room {
    pb::Room {
        name: r.name,
        id: r.id.to_string(),
        participants: count(r.participants),
        tracks: count(r.tracks),
    }
}

fn participant_to_pb(p: ParticipantInfo) -> pb::Participant {
    pb::Participant {
        peer_id: p.peer_id,
        name: p.name,
        tracks: p
            .tracks
            .into_iter()
            .map(|t| pb::Track { track_id: t.track_id, kind: t.kind.to_owned() })
            .collect(),
    }
}

#[tonic::async_trait]
impl RoomsRpc for RoomsService {
    async fn list_rooms(
        &self,
        req: Request<pb::ListRoomsRequest>,
    ) -> Result<Response<pb::ListRoomsResponse>, Status> {
        let tenant = tenant(&req)?;
        let rooms = self.rtc.list_rooms(&tenant).await;
        Ok(Response::new(pb::ListRoomsResponse {
            rooms: rooms.into_iter().map(room_to_pb).collect(),
        }))
    }

    async fn list_participants(
        &self,
        req: Request<pb::ListParticipantsRequest>,
    ) -> Result<Response<pb::ListParticipantsResponse>, Status> {
        let tenant = tenant(&req)?;
        let pb::ListParticipantsRequest { room } = req.into_inner();
        let participants = answer(self.rtc.participants(&tenant, room_name(&room)?).await)?;
        Ok(Response::new(pb::ListParticipantsResponse {
            participants: participants.into_iter().map(participant_to_pb).collect(),
        }))
    }

    async fn remove_participant(
        &self,
        req: Request<pb::RemoveParticipantRequest>,
    ) -> Result<Response<pb::RemoveParticipantResponse>, Status> {
        let tenant = tenant(&req)?;
        let pb::RemoveParticipantRequest { room, peer_id } = req.into_inner();
        let room = room_name(&room)?;
        if peer_id.is_empty() {
            return Err(status_from_rtc(&steward_rtc::Error::Invalid(
                "`peer_id` must not be empty".into(),
            )));
        }
        answer(self.rtc.remove_participant(&tenant, room, &peer_id).await)?;
        Ok(Response::new(pb::RemoveParticipantResponse {}))
    }

    async fn close_room(
        &self,
        req: Request<pb::CloseRoomRequest>,
    ) -> Result<Response<pb::CloseRoomResponse>, Status> {
        let tenant = tenant(&req)?;
        let pb::CloseRoomRequest { room } = req.into_inner();
        let closed = answer(self.rtc.close_room(&tenant, room_name(&room)?).await)?;
        Ok(Response::new(pb::CloseRoomResponse { participants: count(closed) }))
    }

    async fn send_data(
        &self,
        req: Request<pb::SendDataRequest>,
    ) -> Result<Response<pb::SendDataResponse>, Status> {
        let tenant = tenant(&req)?;
        let pb::SendDataRequest { room, data } = req.into_inner();
        let room = room_name(&room)?;
        let delivered = answer(self.rtc.send_data(&tenant, room, data).await)?;
        Ok(Response::new(pb::SendDataResponse { delivered: count(delivered) }))
    }
}
