//! Port of `@signe/room`'s `tests/room/request.spec.ts` and `server-response.spec.ts` (spec
//! section 15, checklist items 62–76): HTTP routes of a room and the response helpers.
//!
//! The original's URLs are `/parties/world/default/<path>`; the harness takes the room-relative
//! path (`/status`), which the server cuts from the URL the same way (spec 2.2).
//! The original's stateful builder (`res.status(201).header(...).json(...)`) is
//! [`RoomResponse`]: a value built by constructors (`json`, `text`, `success`, `bad_request`,
//! ...) and chainable setters (`status`, `header`). CORS headers are added by the server for
//! every response whose `cors` flag is set (all but [`RoomResponse::raw`]).

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use partyroom_room::testing::TestRoom;
use partyroom_room::{Handlers, Json, Room, RoomConfig, RoomRequest, RoomResponse, Text};
use partyroom_state::{State, StateMap};
use serde_json::{Value, json};

#[derive(State, Default, Clone, Debug, serde::Serialize)]
struct Person {
    id: String,
    name: String,
}

#[derive(serde::Deserialize, garde::Validate)]
struct Increment {
    #[garde(range(min = 1, max = 100))]
    amount: i64,
}

#[derive(State, Default, Clone, Debug)]
struct Api {
    count: i64,
    people: StateMap<Person>,
}

impl Room for Api {
    fn config() -> RoomConfig {
        RoomConfig::new("default")
    }

    fn init(_room_id: &str, _params: &partyroom_room::Params) -> Self {
        let mut people = StateMap::new();
        people.insert(
            "user1",
            Person {
                id: "user1".into(),
                name: "John".into(),
            },
        );
        Self { count: 0, people }
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.get("/status", |room: &Self, _cx| {
            Json(json!({"status": "ok", "count": room.count}))
        })
        .get("/users/:id", |room: &Self, cx| {
            let id = cx.path_param("id").unwrap_or_default();
            match room.people.get(id) {
                Some(p) => Ok(Json(p.clone())),
                // The handler's own response, returned unchanged (a raw response: no CORS).
                None => {
                    let mut headers = HeaderMap::new();
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    Err(RoomResponse::raw(
                        StatusCode::NOT_FOUND,
                        headers,
                        r#"{"error":"User not found"}"#,
                    ))
                }
            }
        })
        .post("/increment", |room: &mut Self, cx| {
            let body: Increment = cx.valid_json()?;
            room.count += body.amount;
            Ok::<_, RoomResponse>(RoomResponse::success(
                &json!({"success": true, "count": room.count}),
            ))
        })
        .get("/guarded", |room: &Self, _cx| {
            Json(json!({"secret": room.count}))
        })
        .route_guard(Method::GET, "/guarded", |_room: &Self, cx| {
            match cx.request().headers.get("x-allow") {
                Some(v) if v == "yes" => Ok(()),
                _ => Err(RoomResponse::not_permitted(None)),
            }
        })
        .get("/chained", |_room: &Self, _cx| {
            RoomResponse::json(StatusCode::CREATED, &json!({"created": true}))
                .header(
                    HeaderName::from_static("x-custom"),
                    HeaderValue::from_static("one"),
                )
                .header(
                    HeaderName::from_static("x-other"),
                    HeaderValue::from_static("two"),
                )
        })
        .get("/accepted", |_room: &Self, _cx| {
            RoomResponse::json(StatusCode::ACCEPTED, &json!({"queued": true}))
        })
        .get("/text", |_room: &Self, _cx| {
            RoomResponse::text(StatusCode::CREATED, "plain words")
        })
        .get("/plain", |_room: &Self, _cx| Text("plain".into()))
        .get("/string", |_room: &Self, _cx| Json("plain"))
        .get("/redirect", |_room: &Self, _cx| {
            RoomResponse::redirect("/next", StatusCode::MOVED_PERMANENTLY)
        });
    }
}

fn get(path: &str) -> RoomRequest {
    RoomRequest::new(Method::GET, path)
}

fn content_type(r: &RoomResponse) -> &str {
    r.headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(start_paused = true)]
async fn get_status_returns_the_handler_object_as_json() {
    // checklist 62
    let room = TestRoom::new::<Api>("default");
    let r = room.request(get("/status")).await;
    assert_eq!(r.status, 200);
    assert_eq!(content_type(&r), "application/json");
    assert_eq!(r.json_body(), Some(json!({"status": "ok", "count": 0})));
    assert!(r.cors, "the server adds the CORS headers");
}

#[tokio::test(start_paused = true)]
async fn path_parameters_and_the_handlers_own_404() {
    // checklist 63
    let room = TestRoom::new::<Api>("default");
    let r = room.request(get("/users/user1")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json_body(), Some(json!({"id": "user1", "name": "John"})));
    let r = room.request(get("/users/nonexistent")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json_body(), Some(json!({"error": "User not found"})));
    assert!(!r.cors, "returned unchanged, like a raw Response");
}

#[tokio::test(start_paused = true)]
async fn post_with_a_validated_body() {
    // checklist 64
    // The 400 `details` object is partyroom's own (`{"issues":[...],"name":"ValidationError"}`),
    // not zod's error serialisation.
    let room = TestRoom::new::<Api>("default");
    let mut watcher = room.connect(None).await;
    room.settle().await;
    watcher.drain();
    let r = room
        .request(RoomRequest::new(Method::POST, "/increment").with_json(&json!({"amount": 5})))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json_body(), Some(json!({"success": true, "count": 5})));
    // The state changed, and clients were told.
    let frames = watcher.drain();
    assert_eq!(frames, vec![json!({"type": "sync", "value": {"count": 5}})]);

    for bad in [json!({"amount": "five"}), json!({}), json!({"amount": 500})] {
        let r = room
            .request(RoomRequest::new(Method::POST, "/increment").with_json(&bad))
            .await;
        assert_eq!(r.status, 400, "{bad}");
        let body = r.json_body().unwrap();
        assert_eq!(body["error"], "Invalid request body", "{bad}");
        assert!(body["details"].is_object());
    }
    let mut not_json = RoomRequest::new(Method::POST, "/increment");
    not_json.body = "{oops".into();
    let r = room.request(not_json).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json_body(),
        Some(json!({"error": "Failed to parse request body"}))
    );
    let r = room.request(get("/status")).await;
    assert_eq!(
        r.json_body().unwrap()["count"],
        5,
        "refused bodies change nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn request_guards() {
    // checklist 65
    let room = TestRoom::new::<Api>("default");
    let mut allowed = get("/guarded");
    allowed
        .headers
        .insert("x-allow", HeaderValue::from_static("yes"));
    let r = room.request(allowed).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json_body(), Some(json!({"secret": 0})));
    let r = room.request(get("/guarded")).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json_body(), Some(json!({"error": "Not permitted"})));
}

#[tokio::test(start_paused = true)]
async fn unknown_routes_are_404() {
    // checklist 66
    // Also quirk Q18 fixed: routes match whole paths, so `/status/extra` and `/statusXYZ` are
    // not answered by `/status`, and a route does not answer another method.
    let room = TestRoom::new::<Api>("default");
    for (method, path) in [
        (Method::GET, "/nope"),
        (Method::GET, "/"),
        (Method::GET, "/statusXYZ"),
        (Method::GET, "/status/extra"),
        (Method::POST, "/status"),
        (Method::HEAD, "/status"),
    ] {
        let r = room.request(RoomRequest::new(method.clone(), path)).await;
        assert_eq!(r.status, 404, "{method} {path}");
        assert_eq!(r.json_body(), Some(json!({"error": "Not found"})));
    }
}

#[tokio::test(start_paused = true)]
async fn chained_status_and_headers_with_a_json_body() {
    // checklist 67, 68, 69
    // 68/69 (`body()` then `send()`, `send(body)` overriding it) have no equivalent: a
    // `RoomResponse` gets its body once, with its status (`RoomResponse::json(status, body)`).
    let room = TestRoom::new::<Api>("default");
    let r = room.request(get("/chained")).await;
    assert_eq!(r.status, 201);
    assert_eq!(content_type(&r), "application/json");
    assert_eq!(r.headers["x-custom"], "one");
    assert_eq!(r.headers["x-other"], "two");
    assert_eq!(r.json_body(), Some(json!({"created": true})));
    let r = room.request(get("/accepted")).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json_body(), Some(json!({"queued": true})));
}

#[tokio::test(start_paused = true)]
async fn text_responses() {
    // checklist 70
    // `text/plain; charset=utf-8` (the original: `text/plain`). `Text` is the 200 shortcut; a
    // string given to `Json` is JSON-encoded with its quotes, as a string returned by an
    // original handler is (spec 8.5).
    let room = TestRoom::new::<Api>("default");
    let r = room.request(get("/text")).await;
    assert_eq!(r.status, 201);
    assert!(content_type(&r).starts_with("text/plain"));
    assert_eq!(&r.body[..], b"plain words");
    let r = room.request(get("/plain")).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"plain"[..]));
    assert!(content_type(&r).starts_with("text/plain"));
    let r = room.request(get("/string")).await;
    assert_eq!(&r.body[..], b"\"plain\"");
    assert_eq!(content_type(&r), "application/json");
}

#[tokio::test(start_paused = true)]
async fn redirect_and_error_helpers() {
    // checklist 74
    let room = TestRoom::new::<Api>("default");
    let r = room.request(get("/redirect")).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.headers[header::LOCATION], "/next");
    assert_eq!(r.json_body(), Some(json!({})));

    let r = RoomResponse::bad_request("Invalid", json!({"field": "name"}));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json_body(),
        Some(json!({"error": "Invalid", "field": "name"}))
    );
    let defaults: [(RoomResponse, u16, &str); 4] = [
        (RoomResponse::not_permitted(None), 403, "Not permitted"),
        (RoomResponse::unauthorized(None), 401, "Unauthorized"),
        (RoomResponse::not_found(None), 404, "Not found"),
        (
            RoomResponse::server_error(None),
            500,
            "Internal Server Error",
        ),
    ];
    for (r, status, message) in defaults {
        assert_eq!(r.status, status);
        assert_eq!(r.json_body(), Some(json!({"error": message})));
        assert_eq!(content_type(&r), "application/json");
    }
    assert_eq!(
        RoomResponse::not_found(Some("No such room")).json_body(),
        Some(json!({"error": "No such room"}))
    );
    assert_eq!(
        RoomResponse::success(&json!({"ok": 1})).status,
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn cors_headers_keep_the_status() {
    // checklist 75
    let mut r = RoomResponse::json(StatusCode::CREATED, &json!({"a": 1}));
    assert!(r.cors);
    r.apply_cors();
    assert_eq!(r.status, 201);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert_eq!(
        r.headers["access-control-allow-methods"],
        "GET, POST, PUT, DELETE, PATCH, OPTIONS"
    );
    assert_eq!(
        r.headers["access-control-allow-headers"],
        "Content-Type, Authorization, X-Requested-With"
    );
    assert_eq!(r.headers["access-control-max-age"], "86400");
    assert!(r.headers.get("access-control-allow-credentials").is_none());
    assert!(r.headers.get("access-control-expose-headers").is_none());
    assert_eq!(r.json_body(), Some(json!({"a": 1})));
    // Raw responses do not get them.
    assert!(!RoomResponse::raw(StatusCode::IM_A_TEAPOT, HeaderMap::new(), "custom").cors);
    // Nor does a room answer OPTIONS differently from the spec: 200 `{}`.
    let room = TestRoom::new::<Api>("default");
    let r = room
        .request(RoomRequest::new(Method::OPTIONS, "/anything"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json_body(), Some(Value::Object(Default::default())));
}
