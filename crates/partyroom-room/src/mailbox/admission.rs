//! Async guards: the checks a room type runs in the caller's task (a token lookup, another
//! service) before its room is asked at all.

use std::sync::Arc;

use crate::connection::refusal::Refusal;
use crate::connection::request::ConnectInfo;
use crate::protocol::http::{RoomRequest, RoomResponse};
use crate::storage::BoxFuture;

/// An async connect guard: runs before the room sees the connection, outside the room's task
/// (so it may call other services); it sees the request, not the room state.
pub type AsyncConnectGuard =
    Arc<dyn Fn(Arc<ConnectInfo>) -> BoxFuture<'static, Result<(), Refusal>> + Send + Sync>;

/// An async request guard: runs before the request reaches the room, outside its task.
pub type AsyncRequestGuard =
    Arc<dyn Fn(Arc<RoomRequest>) -> BoxFuture<'static, Result<(), RoomResponse>> + Send + Sync>;

/// The async guards of a room type, shared by all its rooms' handles.
#[derive(Default)]
pub(crate) struct Admission {
    pub(crate) connect: Vec<AsyncConnectGuard>,
    pub(crate) request: Vec<AsyncRequestGuard>,
}

impl Admission {
    /// Run the connect guards in order; the first refusal wins.
    pub(crate) async fn check_connect(&self, info: &Arc<ConnectInfo>) -> Result<(), Refusal> {
        for guard in &self.connect {
            guard(info.clone()).await?;
        }
        Ok(())
    }

    /// Run the request guards in order: `Err` is the response to return instead.
    pub(crate) async fn check_request(&self, request: &RoomRequest) -> Result<(), RoomResponse> {
        if self.request.is_empty() {
            return Ok(());
        }
        let shared = Arc::new(request.clone());
        for guard in &self.request {
            guard(shared.clone()).await?;
        }
        Ok(())
    }
}
