//! Session transfers to a room another node owns: `POST /cluster/handoff` on the owner,
//! authenticated by the cluster secret (the relay header), carrying a [`SessionHandoff`].

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, Method, header};
use partyroom_room::storage::RoomKey;
use partyroom_room::{HandoffError, Owner, PlacementError, SessionHandoff};
use partyroom_server::http_client::{self, BaseUrl};
use partyroom_server::relay::RELAY_HEADER;
use serde::{Deserialize, Serialize};

use crate::config::ClusterConfig;
use crate::ownership::Cluster;

/// The path of the endpoint.
pub(crate) const PATH: &str = "/cluster/handoff";

/// Largest handoff body accepted (a user's persisted view).
pub(crate) const MAX_BODY: usize = 4 << 20;

/// The body of a handoff request.
#[derive(Debug, Serialize, Deserialize)]
struct HandoffBody {
    party: String,
    room: String,
    handoff: SessionHandoff,
}

/// Send `handoff` to `room` on `owner`; `Ok` once the owner queued it in the room.
pub(crate) async fn send(
    config: &ClusterConfig,
    owner: &Owner,
    room: &RoomKey,
    handoff: SessionHandoff,
) -> Result<(), PlacementError> {
    let fail = |why: String| PlacementError(format!("handoff to node {}: {why}", owner.node));
    let base = BaseUrl::parse(&owner.url).map_err(|e| fail(e.to_string()))?;
    let secret = HeaderValue::from_str(&config.secret).map_err(|e| fail(e.to_string()))?;
    let body = serde_json::to_vec(&HandoffBody {
        party: room.party.clone(),
        room: room.room.clone(),
        handoff,
    })
    .map_err(|e| fail(e.to_string()))?;
    let mut headers = HeaderMap::new();
    headers.insert(RELAY_HEADER, secret);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let response = http_client::send(
        &base,
        Method::POST,
        PATH,
        headers,
        Bytes::from(body),
        config.request_timeout,
        64 << 10,
    )
    .await
    .map_err(|e| fail(e.to_string()))?;
    if response.status == StatusCode::NO_CONTENT {
        Ok(())
    } else {
        Err(fail(format!("answered {}", response.status)))
    }
}

/// `POST /cluster/handoff`: queue a session handed over by another node in a room this node
/// serves. `401` without the cluster secret, `400` for a body that is not a handoff, `404`
/// for an unknown room, `409` when another node serves the room, `503` when it cannot be
/// placed now; `204` once queued.
pub(crate) async fn accept(
    State(cluster): State<Cluster>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let given = headers
        .get(RELAY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let secret = &cluster.config().secret;
    if given.is_empty() || !partyroom_server::constant_time_eq(given.as_bytes(), secret.as_bytes())
    {
        return (StatusCode::UNAUTHORIZED, "Invalid relay credentials").into_response();
    }
    let Ok(body) = serde_json::from_slice::<HandoffBody>(&body) else {
        return (StatusCode::BAD_REQUEST, "Invalid handoff").into_response();
    };
    let Some(rooms) = cluster.inner.rooms() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "Node not started").into_response();
    };
    match rooms
        .accept_hand_off(&body.party, &body.room, body.handoff)
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(HandoffError::Lookup(e)) => (StatusCode::NOT_FOUND, e.to_string()).into_response(),
        Err(HandoffError::NotHere(owner)) => (
            StatusCode::CONFLICT,
            format!("room is served by node {}", owner.node),
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}
