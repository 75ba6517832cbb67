//! Room-to-room HTTP requests to a room another node owns.

use http::{HeaderValue, StatusCode};
use partyroom_room::storage::RoomKey;
use partyroom_room::{Owner, RoomRequest, RoomResponse};
use partyroom_server::http_client::{self, BaseUrl};
use partyroom_server::relay::RELAY_HEADER;

use crate::config::ClusterConfig;

/// Largest response body taken from another node.
const MAX_BODY: usize = 16 << 20;

fn enc(segment: &str) -> String {
    // Room ids are single path segments: escape what a path segment cannot hold.
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Send `request` to `room` on `owner`; a failure becomes a `502` answer.
pub(crate) async fn request(
    config: &ClusterConfig,
    owner: &Owner,
    room: &RoomKey,
    request: RoomRequest,
) -> RoomResponse {
    let fail = |why: &str| {
        tracing::warn!(node = owner.node, room = %room.room, why, "room-to-room request failed");
        RoomResponse::error(StatusCode::BAD_GATEWAY, "Error forwarding request")
    };
    let Ok(base) = BaseUrl::parse(&owner.url) else {
        return fail("bad owner address");
    };
    let Ok(secret) = HeaderValue::from_str(&config.secret) else {
        return fail("cluster secret is not a header value");
    };
    let mut path = format!(
        "/parties/{}/{}{}",
        enc(&room.party),
        enc(&room.room),
        if request.path == "/" {
            ""
        } else {
            request.path.as_str()
        }
    );
    if let Some(q) = &request.query {
        path.push('?');
        path.push_str(q);
    }
    let mut headers = request.headers;
    headers.insert(RELAY_HEADER, secret);
    match http_client::send(
        &base,
        request.method,
        &path,
        headers,
        request.body,
        config.request_timeout,
        MAX_BODY,
    )
    .await
    {
        Ok(r) => RoomResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
            cors: false,
        },
        Err(e) => fail(&e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_are_escaped() {
        assert_eq!(super::enc("game-1"), "game-1");
        assert_eq!(super::enc("a b/c"), "a%20b%2Fc");
    }
}
