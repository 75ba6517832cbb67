//! Cluster mode in the server: a request for a room that another node owns is relayed to
//! that node (WebSocket bytes through [`crate::byte_relay`], HTTP through [`crate::relay`]),
//! so that any node serves any room URL and clients never learn which node owns what.
//!
//! - The owner is asked for the room with `x-partyroom-relay: <cluster secret>`. A relayed
//!   request is served only where the room lives: a node that does not own the room (any
//!   more) answers `503` with `x-partyroom-moved`, never relays again, and the relaying node
//!   asks the placement again.
//! - An owner that cannot be reached (it died; its lease has not expired yet) is retried
//!   every [`RETRY_EVERY`] for up to [`ServerConfig::failover_wait`]: once its lease is over
//!   the placement lets this node (or another one) claim the room, and the request is served
//!   there. A client connecting during a failover waits instead of failing.
//!
//! [`ServerConfig::failover_wait`]: crate::ServerConfig::failover_wait

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use partyroom_room::storage::RoomKey;
use partyroom_room::{LocateError, Located, Owner};

use crate::byte_relay::{self, RawUpstream};
use crate::handshake::Handshake;
use crate::http_client::BaseUrl;
use crate::metrics::{OpenGuard, Refusal};
use crate::path::RoomPath;
use crate::relay::{self, HeaderPolicy, RELAY_HEADER, RelayLimits};
use crate::server::{ConnPermit, Shared, handshake_refusal, json_error, read_body, serve_here};

/// The header of a `503` that says "not here (any more): ask again where the room is".
pub const MOVED_HEADER: &str = "x-partyroom-moved";

/// How often an unreachable owner is tried again during a failover.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// Where the room is, or the answer that says why it cannot be served.
pub(crate) async fn locate(
    shared: &Shared,
    path: &RoomPath,
    relayed_in: bool,
) -> Result<Located, Response> {
    match shared.rooms.locate(&path.party, &path.room).await {
        Ok(Located::Elsewhere(_)) if relayed_in => Err(moved()),
        Ok(located) => Ok(located),
        Err(LocateError::Lookup(_)) => {
            shared.metrics.refused(Refusal::NotFound);
            Err(json_error(StatusCode::NOT_FOUND, "Not found"))
        }
        Err(e) => {
            shared.metrics.refused(Refusal::Unavailable);
            tracing::warn!(room = %path.room, error = %e, "cannot place room");
            Err(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Room unavailable",
            ))
        }
    }
}

/// `503` with [`MOVED_HEADER`].
fn moved() -> Response {
    let mut r = json_error(StatusCode::SERVICE_UNAVAILABLE, "Room moved");
    r.headers_mut()
        .insert(MOVED_HEADER, HeaderValue::from_static("1"));
    r
}

fn is_moved(r: &Response) -> bool {
    r.status() == StatusCode::SERVICE_UNAVAILABLE && r.headers().contains_key(MOVED_HEADER)
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn limits(shared: &Shared) -> RelayLimits {
    let c = &shared.config;
    RelayLimits {
        max_message_bytes: c.max_message_bytes,
        max_body_bytes: c.max_body_bytes,
        request_timeout: c.header_read_timeout,
        ping_interval: c.ping_interval,
        liveness_timeout: c.liveness_timeout,
        write_timeout: c.write_timeout,
    }
}

/// Relay `request` to the room's `owner`, following the room if it moves, or serve it here
/// if this node comes to own it meanwhile.
pub(crate) async fn relay_to_owner(
    shared: Arc<Shared>,
    path: RoomPath,
    mut owner: Owner,
    request: Request,
) -> Response {
    let deadline = tokio::time::Instant::now() + shared.config.failover_wait;
    let limits = limits(&shared);
    let (mut parts, body) = request.into_parts();
    let websocket = is_upgrade(&parts.headers);
    if websocket && path.rest != "/" {
        return json_error(StatusCode::NOT_FOUND, "Not found");
    }
    // A bad upgrade is refused here, before the owner is dialled. The upgrade handle goes
    // back into the request if the room comes to be served here after all.
    let mut handshake = None;
    let body = if websocket {
        match Handshake::check(&mut parts) {
            Ok(h) => handshake = Some(h),
            Err(e) => {
                shared.metrics.refused(Refusal::Handshake);
                return handshake_refusal(e);
            }
        }
        bytes::Bytes::new()
    } else {
        shared.metrics.relayed_requests.increment(1);
        match read_body(&parts.headers, body, &shared.config).await {
            Ok(b) => b,
            Err(refusal) => return refusal,
        }
    };
    let Some(secret) = shared
        .config
        .cluster_secret
        .as_deref()
        .and_then(|s| HeaderValue::from_str(s).ok())
    else {
        tracing::error!("a room is owned by another node, but no cluster secret is set");
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "Room unavailable");
    };
    let mut extra = HeaderMap::new();
    extra.insert(RELAY_HEADER, secret);
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    loop {
        let Ok(base) = BaseUrl::parse(&owner.url) else {
            tracing::error!(
                node = owner.node,
                url = owner.url,
                "owner has a bad address"
            );
            return json_error(StatusCode::BAD_GATEWAY, "Error forwarding request");
        };
        if websocket {
            match byte_relay::connect(
                &base,
                &path_and_query,
                &parts.headers,
                &extra,
                limits.request_timeout,
            )
            .await
            {
                RawUpstream::Open(upstream, sent) => {
                    let handshake = handshake.take().expect("checked before the loop");
                    let permit = parts
                        .extensions
                        .get::<ConnPermit>()
                        .and_then(ConnPermit::take);
                    let response = handshake.response();
                    let on_upgrade = handshake.on_upgrade;
                    let shutdown = shared.shutdown.clone();
                    shared.metrics.relayed_sockets.increment(1);
                    let open = shared.metrics.relayed_sockets_open.clone();
                    shared.tasks.spawn(async move {
                        let _permit = permit;
                        let _open = OpenGuard::new(&open);
                        let Ok(client) = on_upgrade.await else {
                            return;
                        };
                        byte_relay::run(client, upstream, sent, shutdown, limits.write_timeout)
                            .await;
                    });
                    return response;
                }
                RawUpstream::Refused(r) if !is_moved(&r) => return r,
                RawUpstream::Refused(_) => {}
                RawUpstream::Failed(e) => {
                    tracing::debug!(node = owner.node, error = %e, "owner unreachable");
                }
            }
        } else {
            match relay::relay_http(
                &limits,
                &parts,
                body.clone(),
                &base,
                &path_and_query,
                &extra,
                HeaderPolicy::Trusted,
            )
            .await
            {
                Ok(r) if !is_moved(&r) => return r,
                Ok(_) => {}
                Err(relay::RelayError::Upstream(e)) => {
                    tracing::debug!(node = owner.node, error = %e, "owner unreachable");
                }
                Err(e) => return e.into_response(),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "Room unavailable");
        }
        if let Some(placement) = shared.rooms.placement() {
            placement.moved(&RoomKey::new(path.party.as_str(), path.room.as_str()));
        }
        tokio::time::sleep(RETRY_EVERY).await;
        match locate(&shared, &path, false).await {
            Ok(Located::Here(room)) => {
                if let Some(h) = handshake.take() {
                    parts.extensions.insert(h.on_upgrade);
                }
                let request = Request::from_parts(parts, Body::from(body));
                return serve_here(shared, room, path, request).await;
            }
            Ok(Located::Elsewhere(next)) => owner = next,
            Err(refusal) => return refusal,
        }
    }
}
