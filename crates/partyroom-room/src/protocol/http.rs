//! HTTP requests to a room: request and response types, routes, response helpers, CORS
//! (spec section 8).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

/// An HTTP request addressed to one room (`/parties/<party>/<room>/<path>`).
#[derive(Debug, Clone)]
pub struct RoomRequest {
    /// The method.
    pub method: Method,
    /// The room-relative path, starting with `/` (`/state` for `/parties/main/r1/state`).
    pub path: String,
    /// The raw query string (without `?`), if any.
    pub query: Option<String>,
    /// Request headers.
    pub headers: HeaderMap,
    /// The body, fully read (bounded by the server's body limit).
    pub body: Bytes,
}

impl RoomRequest {
    /// A request with no headers and no body.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: None,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// Set a JSON body and its content type.
    #[must_use]
    pub fn with_json(mut self, body: &Value) -> Self {
        self.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.body = Bytes::from(body.to_string());
        self
    }
}

/// An HTTP response from a room.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
    /// Whether the default CORS headers are added (true for responses built by partyroom;
    /// false for [`RoomResponse::raw`], like a raw `Response` in `@signe/room`).
    pub cors: bool,
}

impl RoomResponse {
    /// A JSON response with the given status.
    pub fn json(status: StatusCode, body: &impl Serialize) -> Self {
        let body = serde_json::to_vec(body).unwrap_or_else(|_| b"null".to_vec());
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Self {
            status,
            headers,
            body: Bytes::from(body),
            cors: true,
        }
    }

    /// A `text/plain` response.
    pub fn text(status: StatusCode, body: impl Into<String>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Self {
            status,
            headers,
            body: Bytes::from(body.into()),
            cors: true,
        }
    }

    /// A response returned exactly as built: no CORS headers are added.
    pub fn raw(status: StatusCode, headers: HeaderMap, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers,
            body: body.into(),
            cors: false,
        }
    }

    /// `200` with a JSON body.
    pub fn success(body: &impl Serialize) -> Self {
        Self::json(StatusCode::OK, body)
    }

    /// `400 {"error": message, ...details}`.
    pub fn bad_request(message: &str, details: Value) -> Self {
        let mut body = json!({ "error": message });
        if let (Value::Object(b), Value::Object(d)) = (&mut body, details) {
            b.extend(d);
        }
        Self::json(StatusCode::BAD_REQUEST, &body)
    }

    /// `403 {"error": "Not permitted"}` (or the given message).
    pub fn not_permitted(message: Option<&str>) -> Self {
        Self::error(StatusCode::FORBIDDEN, message.unwrap_or("Not permitted"))
    }

    /// `401 {"error": "Unauthorized"}` (or the given message).
    pub fn unauthorized(message: Option<&str>) -> Self {
        Self::error(StatusCode::UNAUTHORIZED, message.unwrap_or("Unauthorized"))
    }

    /// `404 {"error": "Not found"}` (or the given message).
    pub fn not_found(message: Option<&str>) -> Self {
        Self::error(StatusCode::NOT_FOUND, message.unwrap_or("Not found"))
    }

    /// `500 {"error": "Internal Server Error"}` (or the given message).
    pub fn server_error(message: Option<&str>) -> Self {
        Self::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            message.unwrap_or("Internal Server Error"),
        )
    }

    /// A redirect (`Location: url`) with body `{}`.
    pub fn redirect(url: &str, status: StatusCode) -> Self {
        let mut r = Self::json(status, &json!({}));
        if let Ok(v) = HeaderValue::from_str(url) {
            r.headers.insert(header::LOCATION, v);
        }
        r
    }

    /// `{"error": message}` with the given status.
    pub fn error(status: StatusCode, message: &str) -> Self {
        Self::json(status, &json!({ "error": message }))
    }

    /// Set a header (chainable).
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Set the status (chainable).
    #[must_use]
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Add the default CORS headers of spec 8.8 (done by the server for every response whose
    /// `cors` flag is set).
    pub fn apply_cors(&mut self) {
        for (name, value) in CORS_HEADERS {
            self.headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
    }

    /// The body parsed as JSON (for tests and tools).
    pub fn json_body(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// The default CORS headers every partyroom-built response carries (spec 8.8).
pub const CORS_HEADERS: [(&str, &str); 4] = [
    ("access-control-allow-origin", "*"),
    (
        "access-control-allow-methods",
        "GET, POST, PUT, DELETE, PATCH, OPTIONS",
    ),
    (
        "access-control-allow-headers",
        "Content-Type, Authorization, X-Requested-With",
    ),
    ("access-control-max-age", "86400"),
];

/// Serialize a value as a `200` JSON response.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

/// A `200 text/plain` response.
#[derive(Debug, Clone, Default)]
pub struct Text(pub String);

/// What a request handler may return.
pub trait IntoRoomResponse {
    /// Convert into a response.
    fn into_room_response(self) -> RoomResponse;
}

impl IntoRoomResponse for RoomResponse {
    fn into_room_response(self) -> RoomResponse {
        self
    }
}

impl<T: Serialize> IntoRoomResponse for Json<T> {
    fn into_room_response(self) -> RoomResponse {
        RoomResponse::json(StatusCode::OK, &self.0)
    }
}

impl IntoRoomResponse for Value {
    fn into_room_response(self) -> RoomResponse {
        RoomResponse::json(StatusCode::OK, &self)
    }
}

impl IntoRoomResponse for Text {
    fn into_room_response(self) -> RoomResponse {
        RoomResponse::text(StatusCode::OK, self.0)
    }
}

/// `()` answers `200 {}`, as a handler returning `undefined` does in `@signe/room`.
impl IntoRoomResponse for () {
    fn into_room_response(self) -> RoomResponse {
        RoomResponse::json(StatusCode::OK, &json!({}))
    }
}

impl<A: IntoRoomResponse, B: IntoRoomResponse> IntoRoomResponse for Result<A, B> {
    fn into_room_response(self) -> RoomResponse {
        match self {
            Ok(a) => a.into_room_response(),
            Err(b) => b.into_room_response(),
        }
    }
}

/// A compiled route path: literal segments and `:name` / `{name}` parameters, matched exactly
/// (segment by segment). `@signe/room` matches routes as prefixes, so `/status` also answered
/// `/statusXYZ` and earlier routes shadowed later ones (quirk Q18); partyroom does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePath {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

impl RoutePath {
    /// Compile a route path (a leading `/` is optional).
    pub fn parse(path: &str) -> Self {
        let segments = split_path(path)
            .map(|s| {
                if let Some(name) = s.strip_prefix(':') {
                    Segment::Param(name.to_owned())
                } else if let Some(name) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Segment::Param(name.to_owned())
                } else {
                    Segment::Literal(s.to_owned())
                }
            })
            .collect();
        Self { segments }
    }

    /// Match a room-relative path; parameters are percent-decoded.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let mut params = Vec::new();
        let mut parts = split_path(path);
        for seg in &self.segments {
            let part = parts.next()?;
            match seg {
                Segment::Literal(l) => {
                    if l != part {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let value = percent_encoding::percent_decode_str(part)
                        .decode_utf8()
                        .ok()?
                        .into_owned();
                    params.push((name.clone(), value));
                }
            }
        }
        parts.next().is_none().then_some(params)
    }
}

fn split_path(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// Why a JSON body was refused.
pub(crate) fn body_error<T: DeserializeOwned>(req: &RoomRequest) -> Result<T, RoomResponse> {
    let value: Value = serde_json::from_slice(&req.body).map_err(|_| {
        RoomResponse::json(
            StatusCode::BAD_REQUEST,
            &json!({"error": "Failed to parse request body"}),
        )
    })?;
    serde_json::from_value(value).map_err(|e| {
        RoomResponse::bad_request(
            "Invalid request body",
            json!({"details": {"issues": [{"message": e.to_string()}], "name": "ValidationError"}}),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_route_matching() {
        let r = RoutePath::parse("/users/:id/items/{item}");
        assert_eq!(
            r.matches("/users/u1/items/i%202"),
            Some(vec![
                ("id".into(), "u1".into()),
                ("item".into(), "i 2".into())
            ])
        );
        assert_eq!(r.matches("/users/u1/items"), None);
        assert_eq!(r.matches("/users/u1/items/i2/x"), None);
        let s = RoutePath::parse("status");
        assert_eq!(s.matches("/status"), Some(vec![]));
        assert_eq!(s.matches("/status/"), Some(vec![]));
        assert_eq!(s.matches("/statusXYZ"), None);
        assert_eq!(RoutePath::parse("/").matches("/"), Some(vec![]));
    }

    #[test]
    fn helpers_have_spec_bodies() {
        assert_eq!(
            RoomResponse::bad_request("Invalid", json!({"field":"name"})).json_body(),
            Some(json!({"error":"Invalid","field":"name"}))
        );
        assert_eq!(
            RoomResponse::not_found(None).json_body(),
            Some(json!({"error":"Not found"}))
        );
        assert_eq!(RoomResponse::unauthorized(None).status, 401);
        let r = RoomResponse::redirect("/next", StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.headers[header::LOCATION], "/next");
        let mut c = ().into_room_response();
        c.apply_cors();
        assert_eq!(c.headers["access-control-allow-origin"], "*");
        assert_eq!(c.json_body(), Some(json!({})));
    }
}
