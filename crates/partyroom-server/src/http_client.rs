//! A small HTTP/1.1 client for process-to-process calls (shard → world stats, shard → main
//! room HTTP): one connection per request over tokio, `http://` only, bounded in time and
//! body size.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

/// An `http://host:port` base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    authority: String,
}

/// Why a base URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid base URL `{0}`: expected http://host:port (https is not supported)")]
pub struct BaseUrlError(pub String);

impl BaseUrl {
    /// Parse `http://host[:port][/]`.
    pub fn parse(url: &str) -> Result<Self, BaseUrlError> {
        let err = || BaseUrlError(url.to_owned());
        let uri: Uri = url.parse().map_err(|_| err())?;
        if uri.scheme_str() != Some("http") {
            return Err(err());
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(err());
        }
        let authority = uri.authority().ok_or_else(err)?;
        let authority = if authority.port().is_some() {
            authority.to_string()
        } else {
            format!("{}:80", authority.host())
        };
        Ok(Self { authority })
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `http://host:port`.
    pub fn http(&self) -> String {
        format!("http://{}", self.authority)
    }

    /// `ws://host:port`.
    pub fn ws(&self) -> String {
        format!("ws://{}", self.authority)
    }
}

/// Why a request failed before a response arrived.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Connecting, sending or reading failed.
    #[error("{0}")]
    Io(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The response body is larger than allowed.
    #[error("response body too large")]
    TooLarge,
}

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Response {
    /// The `error` field of a JSON body, if any.
    pub fn error_message(&self) -> Option<String> {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()?
            .get("error")?
            .as_str()
            .map(str::to_owned)
    }
}

/// Send one request to `base` (`path_and_query` starts with `/`). `Host` and
/// `Content-Length` are set here.
pub async fn send(
    base: &BaseUrl,
    method: Method,
    path_and_query: &str,
    mut headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
    max_body: usize,
) -> Result<Response, ClientError> {
    let run = async {
        let stream = tokio::net::TcpStream::connect(base.authority())
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        headers.insert(
            header::HOST,
            HeaderValue::from_str(base.authority()).map_err(|e| ClientError::Io(e.to_string()))?,
        );
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path_and_query)
            .body(Full::new(body))
            .map_err(|e| ClientError::Io(e.to_string()))?;
        *request.headers_mut() = headers;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let (parts, incoming) = response.into_parts();
        let body = Limited::new(incoming, max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ClientError::TooLarge
                } else {
                    ClientError::Io(e.to_string())
                }
            })?
            .to_bytes();
        driver.abort();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| ClientError::Timeout)?
}

/// POST a JSON body.
pub async fn post_json(
    base: &BaseUrl,
    path: &str,
    mut headers: HeaderMap,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<Response, ClientError> {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    send(
        base,
        Method::POST,
        path,
        headers,
        Bytes::from(body.to_string()),
        timeout,
        1024 * 1024,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let b = BaseUrl::parse("http://127.0.0.1:3000/").unwrap();
        assert_eq!(b.authority(), "127.0.0.1:3000");
        assert_eq!(b.ws(), "ws://127.0.0.1:3000");
        assert_eq!(
            BaseUrl::parse("http://example.com").unwrap().authority(),
            "example.com:80"
        );
        assert!(BaseUrl::parse("https://example.com").is_err());
        assert!(BaseUrl::parse("http://example.com/api").is_err());
        assert!(BaseUrl::parse("example.com:80").is_err());
    }
}
