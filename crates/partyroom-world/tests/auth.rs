//! Every way to be refused, over a real process: admin tokens (missing, expired, wrong
//! signature, wrong world, `alg: none`, no `exp`), the shard secret (world and main server),
//! and admin WebSockets.

mod support;

use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use partyroom_world::auth::{Claims, now_secs, sign};
use partyroom_world::http_client;
use serde_json::json;
use support::*;

const W: &str = "world-default";

type Headers = Vec<(&'static str, String)>;

fn b64(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, &x| (a << 8) | u32::from(x)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn room_body(name: &str) -> serde_json::Value {
    json!({"name": name, "balancingStrategy": "round-robin", "public": true, "maxPlayersPerShard": 10, "minShards": 1})
}

async fn register_with(p: &Proc, headers: &[(&str, String)]) -> (StatusCode, String) {
    let (status, body) = world_post(p, W, "register-room", room_body("guarded"), headers).await;
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn admin_endpoints_refuse_bad_tokens() {
    let p = Proc::spawn(&[]);
    let expired = {
        let mut c = Claims::new(&[W], Duration::ZERO);
        c.exp = Some(now_secs() - 30);
        sign(&c, JWT_SECRET)
    };
    let no_exp = {
        let mut c = Claims::new(&[W], Duration::ZERO);
        c.exp = None;
        sign(&c, JWT_SECRET)
    };
    let wrong_signature = sign(
        &Claims::new(&[W], Duration::from_secs(60)),
        "not-the-secret",
    );
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(format!(r#"{{"worlds":["*"],"exp":{}}}"#, now_secs() + 60).as_bytes())
    );
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &Claims::new(&["*"], Duration::from_secs(60)),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let cases: Vec<(&str, Headers, StatusCode, &str)> = vec![
        (
            "missing",
            vec![],
            StatusCode::UNAUTHORIZED,
            "Missing credentials",
        ),
        (
            "expired",
            bearer(&expired),
            StatusCode::UNAUTHORIZED,
            "Token has expired",
        ),
        (
            "no exp",
            bearer(&no_exp),
            StatusCode::UNAUTHORIZED,
            "Token has no expiry",
        ),
        (
            "wrong signature",
            bearer(&wrong_signature),
            StatusCode::UNAUTHORIZED,
            "Invalid token: bad signature",
        ),
        (
            "alg none",
            bearer(&alg_none),
            StatusCode::UNAUTHORIZED,
            "Invalid token: malformed token",
        ),
        (
            "other algorithm",
            bearer(&hs384),
            StatusCode::UNAUTHORIZED,
            "Invalid token: unsupported algorithm",
        ),
        (
            "wrong world",
            admin("world-eu"),
            StatusCode::FORBIDDEN,
            "Token does not grant world world-default",
        ),
        (
            "raw token",
            vec![("authorization", token(&[W]))],
            StatusCode::UNAUTHORIZED,
            "Missing credentials",
        ),
        (
            "garbage",
            vec![("authorization", "Bearer not-a-token".into())],
            StatusCode::UNAUTHORIZED,
            "Invalid token: malformed token",
        ),
        // The shard secret is not an admin credential (the original made it one).
        (
            "shard secret",
            shard_secret(),
            StatusCode::UNAUTHORIZED,
            "Missing credentials",
        ),
    ];
    for (what, headers, status, error) in cases {
        assert_eq!(
            register_with(&p, &headers).await,
            (status, error.to_owned()),
            "{what}"
        );
    }
    // The same refusals on the other admin endpoints.
    for path in ["scale-room", "update-shard"] {
        let (status, _) = world_post(&p, W, path, json!({}), &bearer(&expired)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    for path in ["shards", "rooms"] {
        let (status, _) = request(
            &p,
            Method::GET,
            &format!("/parties/world/{W}/{path}"),
            None,
            &admin("world-eu"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    // What works: Bearer (any case), the query parameter, `*`.
    assert_eq!(register_with(&p, &admin(W)).await.0, StatusCode::OK);
    assert_eq!(
        register_with(
            &p,
            &[("authorization", format!("bearer {}", token(&["*"])))]
        )
        .await
        .0,
        StatusCode::OK
    );
    let (status, _) = world_post(
        &p,
        W,
        &format!("register-room?world-auth-token={}", token(&[W])),
        room_body("by-query"),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Nothing was registered by the refused attempts.
    let (_, rooms) = request(
        &p,
        Method::GET,
        &format!("/parties/world/{W}/rooms"),
        None,
        &admin(W),
    )
    .await;
    let names: Vec<&String> = rooms["rooms"].as_object().unwrap().keys().collect();
    assert_eq!(names, vec!["by-query", "guarded"]);
}

#[tokio::test]
async fn tokens_without_exp_when_allowed() {
    let p = Proc::spawn(&["--allow-tokens-without-exp"]);
    let mut c = Claims::new(&[W], Duration::ZERO);
    c.exp = None;
    assert_eq!(
        register_with(&p, &bearer(&sign(&c, JWT_SECRET))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn shard_secret_is_checked_by_world_and_rooms() {
    let p = Proc::spawn(&[]);
    let shard = connect(&p, W, "secret").await;
    let stats = json!({"shardId": shard, "worldId": W, "connections": 3});
    let wrong = vec![("x-access-shard", "guess".to_owned())];
    let (status, body) = world_post(&p, W, "update-shard", stats.clone(), &wrong).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("Invalid shard credentials"))
    );
    // A wrong secret is not rescued by a valid token in the same request.
    let mut both = wrong.clone();
    both.extend(admin(W));
    assert_eq!(
        world_post(&p, W, "update-shard", stats.clone(), &both)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (status, _) = world_post(&p, W, "register-shard", stats.clone(), &wrong).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // An admin token may report stats (to drain a shard), not re-register shards.
    assert_eq!(
        world_post(&p, W, "update-shard", stats.clone(), &admin(W))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        world_post(&p, W, "register-shard", stats.clone(), &admin(W))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(update_shard(&p, W, stats).await.0, StatusCode::OK);
    // A shard of another world is refused.
    let (status, body) = update_shard(
        &p,
        W,
        json!({"shardId": shard, "worldId": "world-eu", "connections": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The main room server refuses fake shards: HTTP and WebSocket.
    let fake = vec![
        ("x-forwarded-by-shard", "true".to_owned()),
        ("x-access-shard", "guess".to_owned()),
    ];
    let (status, body) = request(&p, Method::GET, "/parties/main/secret/count", None, &fake).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("Invalid shard credentials"))
    );
    let fake_ws = vec![("x-shard-id", shard.clone())];
    assert_eq!(
        ws(p.port, "/parties/main/secret?id=x", &fake_ws)
            .await
            .err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    // What a client sends to pose as a shard through the gateway is dropped.
    let (status, body) = request(
        &p,
        Method::GET,
        &format!("/parties/shard/{shard}/count"),
        None,
        &[
            ("x-access-shard", "guess".to_owned()),
            ("x-shard-id", "evil".to_owned()),
        ],
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"count": 0})));
}

#[tokio::test]
async fn admin_websockets_need_a_token() {
    let p = Proc::spawn(&[]);
    let path = format!("/parties/world/{W}");
    assert_eq!(
        ws(p.port, &path, &[]).await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    let eu = token(&["world-eu"]);
    assert_eq!(
        ws(p.port, &format!("{path}?world-auth-token={eu}"), &[])
            .await
            .err(),
        Some(StatusCode::FORBIDDEN)
    );
    let mut expired = Claims::new(&[W], Duration::ZERO);
    expired.exp = Some(now_secs() - 5);
    assert_eq!(
        ws(
            p.port,
            &format!("{path}?world-auth-token={}", sign(&expired, JWT_SECRET)),
            &[]
        )
        .await
        .err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    // An admin sees the registry, then its changes.
    let shard = connect(&p, W, "watched").await;
    let mut admin_ws = ws(
        p.port,
        &format!("{path}?world-auth-token={}", token(&[W])),
        &[],
    )
    .await
    .unwrap();
    let first = admin_ws.next().await.unwrap();
    assert_eq!(first["type"], "sync");
    assert_eq!(first["value"]["shards"][&shard]["roomId"], "watched");
    assert!(
        first["value"].get("rrCounters").is_none(),
        "counters are not synced"
    );
    let by_header = ws(p.port, &path, &admin(W)).await;
    assert!(by_header.is_ok());
    let (status, _) = world_post(
        &p,
        W,
        "update-shard",
        json!({"shardId": shard, "connections": 0, "status": "draining"}),
        &admin(W),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    admin_ws
        .wait_for("the removal", |v| v["value"]["shards"][&shard] == "$delete")
        .await;
}

/// `--monitor`: opened by an admin token for all worlds only; it lists the world rooms. And
/// `--metrics` counts the world's assignments.
#[tokio::test]
async fn monitor_needs_an_all_worlds_token_and_metrics_count_assignments() {
    let p = Proc::spawn(&["--monitor", "--metrics"]);
    connect(&p, "world-default", "lobby").await;
    let rooms = "/monitor/api/rooms";
    let (status, _) = request(&p, Method::GET, rooms, None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no token");
    let (status, _) = request(&p, Method::GET, rooms, None, &admin("world-default")).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a token for one world only"
    );
    let (status, _) = request(&p, Method::GET, rooms, None, &bearer("not.a.jwt")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a forged token");
    let all = admin("*");
    let (status, body) = request(&p, Method::GET, rooms, None, &all).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: Vec<String> = body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["party"].as_str().unwrap(),
                r["room"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        listed.contains(&"world/world-default".to_owned()),
        "{listed:?}"
    );
    let (status, world) = request(
        &p,
        Method::GET,
        "/monitor/api/rooms/world/world-default",
        None,
        &all,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(world["state"]["rooms"]["lobby"].is_object(), "{world}");

    let r = http_client::send(
        &p.base,
        Method::GET,
        "/metrics",
        HeaderMap::new(),
        bytes::Bytes::new(),
        Duration::from_secs(10),
        1 << 20,
    )
    .await
    .expect("GET /metrics");
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains("partyroom_world_assignments_total{result=\"assigned\"} 1"),
        "{text}"
    );
}
