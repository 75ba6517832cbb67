//! [`FencedStorage`]: the rooms' storage in cluster mode. Reads go to PostgreSQL as they are;
//! every write is applied in one transaction with a check of the room's lease (its owner and
//! epoch, share-locked until commit), so that a node that lost a room can never write to it.

use std::sync::Arc;

use partyroom_room::storage::{Batch, BoxFuture, RoomKey, Storage, StorageError};
use serde_json::Value;
use tokio::time::Instant;

use crate::ownership::Inner;

/// PostgreSQL storage whose writes are fenced by this node's leases.
pub struct FencedStorage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FencedStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FencedStorage")
            .field("node", &self.inner.config.node_id)
            .finish_non_exhaustive()
    }
}

impl FencedStorage {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }
}

impl Storage for FencedStorage {
    fn get<'a>(
        &'a self,
        room: &'a RoomKey,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, StorageError>> {
        self.inner.store.get(room, key)
    }

    fn list<'a>(
        &'a self,
        room: &'a RoomKey,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, Value)>, StorageError>> {
        self.inner.store.list(room, prefix)
    }

    /// Refused with [`StorageError::Fenced`] when this node holds no trusted lease on the
    /// room, or when the database says the lease is no longer held.
    fn apply<'a>(
        &'a self,
        room: &'a RoomKey,
        batch: Batch,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let Some(lease) = self.inner.trusted(room, Instant::now()) else {
                return Err(StorageError::Fenced { epoch: 0 });
            };
            self.inner
                .store
                .apply_fenced(&self.inner.leases, &lease, batch)
                .await
        })
    }
}
