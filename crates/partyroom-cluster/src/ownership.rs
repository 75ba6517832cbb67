//! Which rooms this node owns: the leases it holds, how a room is claimed on first use, and
//! the [`Placement`] answer for every room.
//!
//! A held lease is trusted locally until [`ClusterConfig::trusted_for`] after the claim or
//! renewal that granted it *began* (a monotonic clock; it keeps counting while the process is
//! stopped), which is before the database's own expiry. Past that, the room is evicted even if
//! no renewal has told this node so yet: after a `SIGSTOP`, the first thing the node does is
//! see that its leases are over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use partyroom_room::storage::{BoxFuture, RoomKey};
use partyroom_room::{
    Owner, Placed, Placement, PlacementError, RoomRequest, RoomResponse, Rooms, SessionHandoff,
};
use partyroom_storage::{Lease, Leases, Members, OpenError, PostgresOptions, PostgresStorage};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ClusterConfig;
use crate::fenced_storage::FencedStorage;
use crate::metrics::{LEASE_CLAIMS, LEASES_HELD, LEASES_LOST, LEASES_RELEASED};
use crate::{ClusterError, forward, handoff, status, upkeep};

/// How often a room whose owner is gone (lease live, node silent) is asked for again.
const WAIT_STEP: Duration = Duration::from_millis(100);

/// How long the owner of a room owned elsewhere is remembered without asking the database.
const OWNER_CACHE: Duration = Duration::from_millis(500);

/// A lease this node holds.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) lease: Lease,
    /// Trusted until then (see the module docs).
    pub(crate) trusted_until: Instant,
    /// Renewal ticks in a row that found the room not loaded.
    pub(crate) idle_ticks: u32,
}

pub(crate) struct Inner {
    pub(crate) config: ClusterConfig,
    pub(crate) leases: Leases,
    pub(crate) members: Members,
    pub(crate) store: PostgresStorage,
    pub(crate) held: Mutex<HashMap<RoomKey, Held>>,
    /// One lock per room being claimed or released, so that the two never interleave.
    claims: Mutex<HashMap<RoomKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Owners of rooms served elsewhere, and until when that is trusted.
    remote: Mutex<HashMap<RoomKey, (Owner, Instant)>>,
    /// The rooms served here (set by [`Cluster::start`]).
    pub(crate) rooms: Mutex<Option<Rooms>>,
    pub(crate) stop: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

/// One node of a cluster: its leases, membership and background upkeep. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.inner.config.node_id)
            .field("owned", &self.inner.lock_held().len())
            .finish()
    }
}

impl Inner {
    pub(crate) fn lock_held(&self) -> std::sync::MutexGuard<'_, HashMap<RoomKey, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn claim_lock(&self, room: &RoomKey) -> Arc<tokio::sync::Mutex<()>> {
        self.claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(room.clone())
            .or_default()
            .clone()
    }

    /// Drop the claim lock of a room no task waits on.
    pub(crate) fn forget_claim_lock(&self, room: &RoomKey) {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        if claims.get(room).is_some_and(|l| Arc::strong_count(l) == 1) {
            claims.remove(room);
        }
    }

    pub(crate) fn rooms(&self) -> Option<Rooms> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The lease of `room`, if this node holds and trusts it.
    pub(crate) fn trusted(&self, room: &RoomKey, now: Instant) -> Option<Lease> {
        self.lock_held()
            .get(room)
            .filter(|h| h.trusted_until > now)
            .map(|h| h.lease.clone())
    }

    /// Forget a lease that is over and stop the room's instance here (no save: it may have
    /// another owner already).
    pub(crate) async fn lost(&self, room: &RoomKey, why: &str) {
        let had = self.lock_held().remove(room).is_some();
        if had {
            tracing::warn!(party = %room.party, room = %room.room, why, "lease lost; room dropped");
            metrics::counter!(LEASES_LOST, "why" => why.to_owned()).increment(1);
        }
        if let Some(rooms) = self.rooms() {
            rooms.evict(&room.party, &room.room).await;
        }
    }

    async fn place(&self, room: &RoomKey) -> Result<Placed, PlacementError> {
        // Bounded: a live lease of a silent node expires within the TTL.
        let give_up = Instant::now() + self.config.lease_ttl + Duration::from_secs(1);
        loop {
            let now = Instant::now();
            if self.trusted(room, now).is_some() {
                return Ok(Placed::Here);
            }
            if let Some(owner) = self.cached_owner(room, now) {
                return Ok(Placed::Elsewhere(owner));
            }
            let lock = self.claim_lock(room);
            // Bounded too when the database does not answer (a partition: no error, no reply).
            let placed = tokio::time::timeout_at(give_up, async {
                let _guard = lock.lock().await;
                self.claim_or_find(room).await
            })
            .await;
            drop(lock);
            self.forget_claim_lock(room);
            let placed = placed.map_err(|_| {
                PlacementError(format!(
                    "room {}/{}: the cluster database did not answer in time",
                    room.party, room.room
                ))
            })?;
            match placed? {
                Some(placed) => return Ok(placed),
                None if Instant::now() >= give_up => {
                    return Err(PlacementError(format!(
                        "room {}/{} is held by a node that does not answer",
                        room.party, room.room
                    )));
                }
                None => tokio::time::sleep(WAIT_STEP).await,
            }
        }
    }

    fn cached_owner(&self, room: &RoomKey, now: Instant) -> Option<Owner> {
        let remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        remote
            .get(room)
            .filter(|(_, until)| *until > now)
            .map(|(o, _)| o.clone())
    }

    /// Under the room's claim lock: take the room if its lease is free, or name its live
    /// owner; `None` while the lease is held by a node that is gone (wait for it to expire).
    async fn claim_or_find(&self, room: &RoomKey) -> Result<Option<Placed>, PlacementError> {
        let db = |e: partyroom_storage::StorageError| PlacementError(e.to_string());
        let now = Instant::now();
        if self.trusted(room, now).is_some() {
            return Ok(Some(Placed::Here));
        }
        if self.lock_held().contains_key(room) {
            // Held but no longer trusted: whatever runs here must stop first.
            self.lost(room, "not renewed in time").await;
        }
        let node = &self.config.node_id;
        let started = Instant::now();
        if let Some(lease) = self
            .leases
            .claim(room, node, self.config.lease_ttl)
            .await
            .map_err(db)?
        {
            tracing::debug!(party = %room.party, room = %room.room, epoch = lease.epoch, "room claimed");
            metrics::counter!(LEASE_CLAIMS).increment(1);
            self.lock_held().insert(
                room.clone(),
                Held {
                    lease,
                    trusted_until: started + self.config.trusted_for(),
                    idle_ticks: 0,
                },
            );
            return Ok(Some(Placed::Here));
        }
        let Some((owner, _epoch)) = self.leases.owner(room).await.map_err(db)? else {
            // Expired between the two queries: claim again at once.
            return Box::pin(self.claim_or_find(room)).await;
        };
        if owner == *node {
            // A lease of an earlier run of this node (same id): it must run out first.
            return Ok(None);
        }
        match self
            .members
            .get(&owner, self.config.lease_ttl)
            .await
            .map_err(db)?
        {
            Some(member) => {
                let owner = Owner {
                    node: member.node,
                    url: member.url,
                };
                self.remote
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(room.clone(), (owner.clone(), Instant::now() + OWNER_CACHE));
                Ok(Some(Placed::Elsewhere(owner)))
            }
            None => Ok(None),
        }
    }

    /// Release the lease of `room` if its room is not loaded here (checked again under the
    /// claim lock, so that a claim under way is never undone).
    pub(crate) async fn release_if_unloaded(&self, room: &RoomKey) {
        let lock = self.claim_lock(room);
        let guard = lock.lock().await;
        let live = self
            .rooms()
            .is_some_and(|r| r.is_live(&room.party, &room.room));
        let removed = if live {
            None
        } else {
            self.lock_held().remove(room)
        };
        if let Some(held) = removed {
            // A release that never happens only makes the next owner wait for the expiry.
            let every = self.config.renew_every();
            match tokio::time::timeout(every, self.leases.release(&held.lease)).await {
                Ok(Ok(_)) => {
                    metrics::counter!(LEASES_RELEASED).increment(1);
                    tracing::debug!(party = %room.party, room = %room.room, "lease released");
                }
                Ok(Err(e)) => {
                    tracing::warn!(room = %room.room, error = %e, "releasing lease failed");
                }
                Err(_) => tracing::warn!(room = %room.room, "releasing lease timed out"),
            }
        }
        drop(guard);
        drop(lock);
        self.forget_claim_lock(room);
    }
}

impl Cluster {
    /// Join the cluster on the PostgreSQL database at `url`: open (create) its tables and
    /// register this node. Call [`Cluster::start`] once the rooms are built.
    pub async fn connect(url: &str, config: ClusterConfig) -> Result<Self, ClusterError> {
        if config.node_id.is_empty() || config.secret.is_empty() {
            return Err(ClusterError::Config(
                "node id and cluster secret must not be empty".into(),
            ));
        }
        if config.lease_ttl < Duration::from_millis(300) {
            return Err(ClusterError::Config("lease TTL under 300 ms".into()));
        }
        partyroom_server::http_client::BaseUrl::parse(&config.advertise_url)
            .map_err(|e| ClusterError::Config(e.to_string()))?;
        let store = PostgresStorage::connect_with(
            db_config(url, config.lease_ttl)?,
            PostgresOptions {
                table: config.table("state"),
                // A request that cannot get a connection fails within the TTL: by then the
                // leases it would need are over anyway.
                timeout: config.lease_ttl,
                ..PostgresOptions::default()
            },
        )
        .await?;
        let leases = Leases::open(store.pool().clone(), &config.table("leases")).await?;
        let members = Members::open(store.pool().clone(), &config.table("members")).await?;
        members
            .heartbeat(&config.node_id, &config.advertise_url)
            .await?;
        tracing::info!(
            node = config.node_id,
            url = config.advertise_url,
            "joined the cluster"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                leases,
                members,
                store,
                held: Mutex::new(HashMap::new()),
                claims: Mutex::new(HashMap::new()),
                remote: Mutex::new(HashMap::new()),
                rooms: Mutex::new(None),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// The storage rooms must use: PostgreSQL, every write fenced by the room's lease.
    pub fn storage(&self) -> Arc<dyn partyroom_room::storage::Storage> {
        Arc::new(FencedStorage::new(self.inner.clone()))
    }

    /// The placement rooms must use ([`RoomsBuilder::placement`](partyroom_room::RoomsBuilder::placement)).
    pub fn placement(&self) -> Arc<dyn Placement> {
        Arc::new(self.clone())
    }

    /// Server settings for this node: `base` with the cluster secret set, and a failover
    /// wait of the lease TTL plus 2 s.
    pub fn server_config(
        &self,
        base: partyroom_server::ServerConfig,
    ) -> partyroom_server::ServerConfig {
        partyroom_server::ServerConfig {
            cluster_secret: Some(self.inner.config.secret.clone()),
            failover_wait: self.inner.config.lease_ttl + Duration::from_secs(2),
            ..base
        }
    }

    /// Start the upkeep (heartbeats, lease renewal, releasing the leases of unloaded rooms,
    /// evicting rooms whose lease was lost) for `rooms`, built with this cluster's storage
    /// and placement.
    pub fn start(&self, rooms: Rooms) {
        *self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner()) = Some(rooms);
        self.inner
            .tasks
            .spawn(upkeep::watch_trust(self.inner.clone()));
        self.inner
            .tasks
            .spawn(upkeep::renew_loop(self.inner.clone()));
    }

    /// The rooms this node owns now, with their epochs.
    pub fn owned(&self) -> Vec<(RoomKey, i64)> {
        let mut owned: Vec<_> = self
            .inner
            .lock_held()
            .iter()
            .map(|(k, h)| (k.clone(), h.lease.epoch))
            .collect();
        owned.sort();
        owned
    }

    /// `GET /cluster`: this node's id and the rooms it owns (JSON).
    pub fn router(&self) -> axum::Router {
        status::router(self.clone())
    }

    /// Leave the cluster after the server stopped (its rooms saved): stop the upkeep, release
    /// every lease (another node may claim the rooms at once) and deregister.
    pub async fn drain(&self) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        let held: Vec<Held> = self.inner.lock_held().drain().map(|(_, h)| h).collect();
        // With the database out of reach, exit anyway after a TTL: the leases expire by
        // themselves.
        let ttl = self.inner.config.lease_ttl;
        let released = tokio::time::timeout(
            ttl,
            futures_util::future::join_all(
                held.iter().map(|h| self.inner.leases.release(&h.lease)),
            ),
        )
        .await
        .unwrap_or_default();
        let ok = released.iter().filter(|r| r.is_ok()).count();
        let failed = held.len() - ok;
        metrics::counter!(LEASES_RELEASED).increment(ok as u64);
        metrics::gauge!(LEASES_HELD).set(0.0);
        match tokio::time::timeout(ttl, self.inner.members.leave(&self.inner.config.node_id)).await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "leaving the cluster failed"),
            Err(_) => tracing::warn!("leaving the cluster timed out"),
        }
        tracing::info!(released = ok, failed, "left the cluster");
        // Break the cycle rooms → placement → rooms.
        self.inner
            .rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

impl Placement for Cluster {
    fn place<'a>(&'a self, room: &'a RoomKey) -> BoxFuture<'a, Result<Placed, PlacementError>> {
        Box::pin(self.inner.place(room))
    }

    fn moved(&self, room: &RoomKey) {
        self.inner
            .remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(room);
    }

    fn forward<'a>(
        &'a self,
        owner: &'a Owner,
        room: &'a RoomKey,
        request: RoomRequest,
    ) -> BoxFuture<'a, RoomResponse> {
        Box::pin(forward::request(&self.inner.config, owner, room, request))
    }

    fn hand_off<'a>(
        &'a self,
        owner: &'a Owner,
        room: &'a RoomKey,
        handoff: SessionHandoff,
    ) -> BoxFuture<'a, Result<(), PlacementError>> {
        Box::pin(handoff::send(&self.inner.config, owner, room, handoff))
    }
}

/// The connection settings of a node's pool: `url`, with a connect timeout of the TTL unless
/// the URL sets one, and `idle_in_transaction_session_timeout` at half the TTL. The latter
/// matters when a node stops talking in the middle of a fenced write (a pause, a partition):
/// its transaction holds a share lock on the room's lease, which would keep every other node
/// from claiming the room until the server noticed the dead connection; PostgreSQL ends such
/// a transaction (and the lock) instead.
fn db_config(url: &str, ttl: Duration) -> Result<tokio_postgres::Config, OpenError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(OpenError::Postgres)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(ttl);
    }
    let idle = format!(
        "-c idle_in_transaction_session_timeout={}",
        (ttl / 2).as_millis().max(100)
    );
    let options = match config.get_options() {
        Some(given) if !given.is_empty() => format!("{given} {idle}"),
        _ => idle,
    };
    config.options(&options);
    Ok(config)
}
