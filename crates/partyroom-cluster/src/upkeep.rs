//! The node's background work: heartbeats, renewing the leases of loaded rooms, releasing
//! those of unloaded ones, and dropping rooms whose lease is over.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use partyroom_room::storage::RoomKey;
use tokio::time::Instant;

use crate::metrics::{HEARTBEAT_FAILURES, LEASES_HELD, RENEWAL_FAILURES};

use crate::ownership::Inner;

/// How often leases are checked against the local clock (see `ownership`): a room whose
/// lease is over is dropped within this.
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// Renewals under way at once.
const RENEW_CONCURRENCY: usize = 16;

/// A room unloaded for this many renewal ticks in a row gets its lease released.
const RELEASE_AFTER_IDLE_TICKS: u32 = 2;

/// Every [`CHECK_EVERY`], drop the rooms whose lease this node no longer trusts. A task of
/// its own, so that no database call, however long it hangs, delays it.
pub(crate) async fn watch_trust(inner: Arc<Inner>) {
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = inner.stop.cancelled() => break,
            _ = check.tick() => {}
        }
        drop_untrusted(&inner).await;
    }
}

/// Every [`ClusterConfig::renew_every`](crate::ClusterConfig::renew_every): heartbeat, renew
/// the leases of loaded rooms, release those of unloaded ones. Each call is bounded by that
/// period, so that a database that stops answering (a partition) is only a failed renewal.
pub(crate) async fn renew_loop(inner: Arc<Inner>) {
    let every = inner.config.renew_every();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = inner.stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        heartbeat(&inner).await;
        renew(&inner).await;
    }
}

/// Drop the rooms whose lease this node no longer trusts.
async fn drop_untrusted(inner: &Inner) {
    let now = Instant::now();
    let over: Vec<RoomKey> = inner
        .lock_held()
        .iter()
        .filter(|(_, h)| h.trusted_until <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for room in over {
        inner.lost(&room, "not renewed in time").await;
    }
}

async fn heartbeat(inner: &Inner) {
    let c = &inner.config;
    let beat = inner.members.heartbeat(&c.node_id, &c.advertise_url);
    match tokio::time::timeout(c.renew_every(), beat).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            metrics::counter!(HEARTBEAT_FAILURES).increment(1);
            tracing::warn!(error = %e, "cluster heartbeat failed");
        }
        Err(_) => {
            metrics::counter!(HEARTBEAT_FAILURES).increment(1);
            tracing::warn!("cluster heartbeat timed out");
        }
    }
}

/// Renew the lease of every loaded room; release those unloaded for a while.
async fn renew(inner: &Inner) {
    let rooms = inner.rooms();
    let mut idle = Vec::new();
    let mut loaded = Vec::new();
    {
        let mut held = inner.lock_held();
        for (key, h) in held.iter_mut() {
            let live = rooms
                .as_ref()
                .is_some_and(|r| r.is_live(&key.party, &key.room));
            h.idle_ticks = if live { 0 } else { h.idle_ticks + 1 };
            if h.idle_ticks >= RELEASE_AFTER_IDLE_TICKS {
                idle.push(key.clone());
            } else {
                loaded.push(h.lease.clone());
            }
        }
    }
    for room in idle {
        inner.release_if_unloaded(&room).await;
    }
    metrics::gauge!(LEASES_HELD).set(inner.lock_held().len() as f64);
    let ttl = inner.config.lease_ttl;
    let trusted_for = inner.config.trusted_for();
    let every = inner.config.renew_every();
    let mut renewals = futures_util::stream::iter(loaded)
        .map(|lease| async move {
            let started = Instant::now();
            let result = tokio::time::timeout(every, inner.leases.renew(&lease, ttl)).await;
            (lease, started, result)
        })
        .buffer_unordered(RENEW_CONCURRENCY);
    while let Some((lease, started, result)) = renewals.next().await {
        match result {
            Ok(Ok(Some(_))) => {
                if let Some(h) = inner.lock_held().get_mut(&lease.room)
                    && h.lease.epoch == lease.epoch
                {
                    h.trusted_until = started + trusted_for;
                }
            }
            Ok(Ok(None)) => inner.lost(&lease.room, "lease taken over").await,
            // The database is unreachable: keep serving until the lease is no longer trusted.
            Ok(Err(e)) => {
                metrics::counter!(RENEWAL_FAILURES).increment(1);
                tracing::warn!(room = %lease.room.room, error = %e, "lease renewal failed");
            }
            Err(_) => {
                metrics::counter!(RENEWAL_FAILURES).increment(1);
                tracing::warn!(room = %lease.room.room, "lease renewal timed out");
            }
        }
    }
}
