//! The façade the edges call ([`Rtc`]): the `peers` and `rooms` supervisors, opening a peer for
//! an admitted signaling socket, finding or starting a tenant's room, and the room admin
//! operations of `steward.rtc.v1.Rooms`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use steward_config::{RtcConfig, SupervisorConfig};
use steward_core::{
    ChildSpec, Registry, ResourceId, ResourceKind, RestartType, Strategy, SupervisorCell,
    SupervisorSpec,
};

use crate::peer::{PeerActor, PeerLink};
use crate::ports::UdpPorts;
use crate::room::{self, RoomActor};
use crate::signal::{ParticipantInfo, check_room_name};
use crate::stats::RtcStats;
use crate::{Error, Result};

/// A room's key: its tenant and name.
pub(crate) type RoomKey = (Arc<str>, Arc<str>);

/// What every peer and room of this node shares.
pub(crate) struct Env {
    pub(crate) config: Arc<RtcConfig>,
    pub(crate) registry: Registry,
    pub(crate) stats: Arc<RtcStats>,
    /// Where webrtc-rs's drivers and the forwarding tasks run (tonic's multi-thread runtime).
    pub(crate) io: tokio::runtime::Handle,
    pub(crate) ports: Arc<UdpPorts>,
    rooms: Mutex<HashMap<RoomKey, (ResourceId, Addr<RoomActor>)>>,
    /// Serializes starting rooms, so one name never gets two actors.
    starting: tokio::sync::Mutex<()>,
    peers: SupervisorCell,
    room_supervisor: SupervisorCell,
    /// At shutdown, peers close `shutdown_concurrency` at a time.
    pub(crate) closing: Arc<tokio::sync::Semaphore>,
}

impl Env {
    fn rooms(&self) -> MutexGuard<'_, HashMap<RoomKey, (ResourceId, Addr<RoomActor>)>> {
        self.rooms.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn room_of(&self, key: &RoomKey) -> Option<Addr<RoomActor>> {
        self.rooms().get(key).map(|(_, a)| a.clone()).filter(Addr::connected)
    }

    /// Forgets `key`'s room `closing`, which refused a join as it closes, so that the next join
    /// starts a new one; a newer room of that name (the closing one already gone) is kept.
    pub(crate) fn forget_closing(&self, key: &RoomKey, closing: &Addr<RoomActor>) {
        let mut rooms = self.rooms();
        if rooms.get(key).is_some_and(|(_, held)| held == closing) {
            rooms.remove(key);
        }
    }

    /// Removes `key`'s entry if it is still the one of room `id` (the room's drop).
    pub(crate) fn forget_room(&self, key: &RoomKey, id: ResourceId) {
        let mut rooms = self.rooms();
        if rooms.get(key).is_some_and(|(held, _)| *held == id) {
            rooms.remove(key);
        }
    }

    /// Live rooms of `tenant`.
    fn rooms_of(&self, tenant: &str) -> usize {
        self.rooms().keys().filter(|(t, _)| &**t == tenant).count()
    }

    /// The live room `key`, started if there is none and the tenant holds fewer than
    /// `max_rooms` rooms.
    pub(crate) async fn room(
        self: &Arc<Self>,
        key: &RoomKey,
        max_rooms: u64,
    ) -> Result<Addr<RoomActor>> {
        if self.registry.is_shutting_down() {
            return Err(Error::ShuttingDown);
        }
        if let Some(addr) = self.room_of(key) {
            return Ok(addr);
        }
        let _starting = self.starting.lock().await;
        if let Some(addr) = self.room_of(key) {
            return Ok(addr);
        }
        if self.rooms_of(&key.0) as u64 >= max_rooms {
            return Err(Error::TenantRooms(max_rooms));
        }
        let (env, spec_key) = (self.clone(), key.clone());
        let spec = ChildSpec::new(key.1.to_string(), ResourceKind::Room, move |rcx| {
            Ok::<_, std::convert::Infallible>(RoomActor::new(rcx, env.clone(), spec_key.clone()))
        })
        .restart(RestartType::Temporary)
        .tenant(key.0.clone());
        match self.room_supervisor.start_child::<RoomActor>(spec).await {
            Ok((id, addr)) => {
                self.rooms().insert(key.clone(), (id, addr.clone()));
                Ok(addr)
            }
            Err(steward_core::Error::MaxChildren { max, .. }) => {
                Err(Error::NodeFull { what: "rooms", max })
            }
            Err(steward_core::Error::ShuttingDown) => Err(Error::ShuttingDown),
            Err(e) => Err(Error::Unavailable(format!("cannot start the room: {e}"))),
        }
    }
}

/// One room as `ListRooms` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    /// The room's name.
    pub name: String,
    /// Its registry id.
    pub id: ResourceId,
    /// Participants now.
    pub participants: usize,
    /// Tracks published now.
    pub tracks: usize,
}

/// Handle to the rooms and peers of this node. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct Rtc {
    env: Arc<Env>,
}

impl std::fmt::Debug for Rtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtc").field("config", &self.env.config).finish_non_exhaustive()
    }
}

impl Rtc {
    /// The rooms of `config`; webrtc-rs's tasks run on `io` (a multi-thread runtime).
    ///
    /// # Panics
    /// If `config.udp_ports` is not a range (config validation refuses it first).
    #[must_use]
    pub fn new(config: RtcConfig, registry: Registry, io: tokio::runtime::Handle) -> Self {
        let range = config.udp_port_range().expect("validated: [rtc] udp_ports is a range");
        let permits = config.shutdown_concurrency.max(1) as usize;
        Self {
            env: Arc::new(Env {
                ports: UdpPorts::new(range),
                config: Arc::new(config),
                registry,
                stats: Arc::default(),
                io,
                rooms: Mutex::default(),
                starting: tokio::sync::Mutex::new(()),
                peers: SupervisorCell::new(),
                room_supervisor: SupervisorCell::new(),
                closing: Arc::new(tokio::sync::Semaphore::new(permits)),
            }),
        }
    }

    /// The children to start under the root supervisor: the `peers` dynamic supervisor
    /// (`max_children = [rtc] max_peers`) and the `rooms` one (`max_rooms`).
    #[must_use]
    pub fn child_specs(&self, supervisor: &SupervisorConfig) -> Vec<ChildSpec> {
        let config = &self.env.config;
        vec![
            ChildSpec::supervisor_in(
                SupervisorSpec::from_config("peers", Strategy::Dynamic, supervisor)
                    .max_children(config.max_peers as usize),
                self.env.peers.clone(),
            ),
            ChildSpec::supervisor_in(
                SupervisorSpec::from_config("rooms", Strategy::Dynamic, supervisor)
                    .max_children(config.max_rooms as usize),
                self.env.room_supervisor.clone(),
            ),
        ]
    }

    /// The config.
    #[must_use]
    pub fn config(&self) -> &RtcConfig {
        &self.env.config
    }

    /// The node's RTC counters.
    #[must_use]
    pub fn stats(&self) -> &Arc<RtcStats> {
        &self.env.stats
    }

    /// Live rooms on this node.
    #[must_use]
    pub fn live_rooms(&self) -> usize {
        self.env.rooms().len()
    }

    /// UDP ports of `[rtc] udp_ports` not leased by a peer.
    #[must_use]
    pub fn free_udp_ports(&self) -> usize {
        self.env.ports.available()
    }

    /// Starts the peer of an admitted signaling socket, under `peers`; `hold` (the tenant's
    /// `peers` quota slot) is released when the peer is gone. The peer waits for its `join`
    /// (at most `join_timeout`); attach its socket with [`PeerLink::attach`]. A `join` may
    /// start a room only while the tenant holds fewer than `max_rooms` (the edge passes the
    /// tenant's `peers` quota: a room needs a peer, and an emptied room lingers
    /// `departure_timeout`, so without it one tenant could fill the node's `[rtc] max_rooms`).
    ///
    /// # Errors
    /// [`Error::NodeFull`] at `max_peers`, [`Error::ShuttingDown`], [`Error::Unavailable`].
    pub async fn open_peer(
        &self,
        tenant: Arc<str>,
        max_rooms: u64,
        hold: impl std::any::Any + Send + Sync,
    ) -> Result<PeerLink> {
        if self.env.registry.is_shutting_down() {
            return Err(Error::ShuttingDown);
        }
        let env = self.env.clone();
        let spec_tenant = tenant.clone();
        let spec = ChildSpec::new(tenant.to_string(), ResourceKind::Peer, move |rcx| {
            Ok::<_, std::convert::Infallible>(PeerActor::new(
                rcx,
                env.clone(),
                spec_tenant.clone(),
                max_rooms,
            ))
        })
        .restart(RestartType::Temporary)
        .tenant(tenant)
        .hold(hold);
        match self.env.peers.start_child::<PeerActor>(spec).await {
            Ok((id, addr)) => Ok(PeerLink::new(id, addr)),
            Err(steward_core::Error::MaxChildren { max, .. }) => {
                Err(Error::NodeFull { what: "peers", max })
            }
            Err(steward_core::Error::ShuttingDown) => Err(Error::ShuttingDown),
            Err(e) => Err(Error::Unavailable(e.to_string())),
        }
    }

    fn existing(&self, tenant: &str, room: &str) -> Result<Addr<RoomActor>> {
        check_room_name(room).map_err(Error::Invalid)?;
        self.env
            .room_of(&(tenant.into(), room.into()))
            .ok_or_else(|| Error::NotFound(format!("no room `{room}`")))
    }

    /// The tenant's live rooms, by name.
    pub async fn list_rooms(&self, tenant: &str) -> Vec<RoomSummary> {
        let rooms: Vec<_> = self
            .env
            .rooms()
            .iter()
            .filter(|((t, _), _)| &**t == tenant)
            .map(|(_, (_, addr))| addr.clone())
            .collect();
        let mut out = Vec::with_capacity(rooms.len());
        for addr in rooms {
            if let Ok(Some(summary)) = ask(&addr, room::Summary).await {
                out.push(summary);
            }
        }
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// A room's participants.
    ///
    /// # Errors
    /// [`Error::Invalid`] (room name), [`Error::NotFound`], [`Error::Unavailable`].
    pub async fn participants(&self, tenant: &str, room: &str) -> Result<Vec<ParticipantInfo>> {
        let addr = self.existing(tenant, room)?;
        ask(&addr, room::Participants).await
    }

    /// Removes a participant: its peer closes `kicked`.
    ///
    /// # Errors
    /// As [`Rtc::participants`]; [`Error::NotFound`] when no such participant.
    pub async fn remove_participant(&self, tenant: &str, room: &str, peer_id: &str) -> Result<()> {
        let addr = self.existing(tenant, room)?;
        if ask(&addr, room::Kick(peer_id.into())).await? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("no participant `{peer_id}` in room `{room}`")))
        }
    }

    /// Closes a room: every peer closes `room_closed`, then the room stops.
    ///
    /// # Errors
    /// As [`Rtc::participants`].
    pub async fn close_room(&self, tenant: &str, room: &str) -> Result<usize> {
        let addr = self.existing(tenant, room)?;
        ask(&addr, room::CloseRoom).await
    }

    /// Sends `data` to every participant's data channel as a binary message (lossy, like
    /// forwarded messages); answers to how many it was handed.
    ///
    /// # Errors
    /// As [`Rtc::participants`]; [`Error::Invalid`] over `[rtc] max_data_message`.
    pub async fn send_data(&self, tenant: &str, room: &str, data: Bytes) -> Result<usize> {
        let max = self.env.config.max_data_message.as_u64();
        if data.len() as u64 > max || data.is_empty() {
            return Err(Error::Invalid(format!(
                "data must be 1 to {max} bytes, not {}",
                data.len()
            )));
        }
        let addr = self.existing(tenant, room)?;
        let plane = ask(&addr, room::Plane).await?;
        Ok(plane.send(None, data, false, &self.env.stats).await)
    }
}

/// Asks a room, bounded (a room answers from its state at once).
async fn ask<M, T>(addr: &Addr<RoomActor>, msg: M) -> Result<T>
where
    M: Message<Result = T> + Send + 'static,
    T: Send + 'static,
    RoomActor: Handler<M>,
{
    match tokio::time::timeout(Duration::from_secs(5), addr.send(msg)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(Error::NotFound("the room has closed".into())),
        Err(_) => Err(Error::Unavailable("the room did not answer in time".into())),
    }
}
