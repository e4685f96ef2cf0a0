//! What the API needs to be served through `lambda_http` intact.
//!
//! `lambda_http` (1.3) puts a response body with a text content type (`text/*`, JSON, XML, YAML,
//! or none) into the API Gateway response as a string, decoding its bytes with the declared
//! charset and replacing invalid ones with U+FFFD; only other content types go base64-encoded.
//! Run logs and text artifacts are raw bytes that an agent printed: they need not be UTF-8, and a
//! log page read at an offset can start or end inside a character. [`binary_safe_text`] therefore
//! relabels a text-typed body that is not valid UTF-8 as `application/octet-stream`, so
//! `lambda_http` sends it base64-encoded and the client gets every byte (the declared charset was
//! wrong for those bytes anyway). Valid UTF-8 bodies are left as they are.
//!
//! Lambda buffers a whole response (at most 6 MB) before answering, so reading the body here costs
//! no streaming. Plain-HTTP serving does not use this layer.

use crate::routes::router;
use crate::state::AppState;
use axum::body::Body;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Router;

/// The API router with [`binary_safe_text`] added, for `lambda_http::run`.
pub fn lambda_router(state: AppState) -> Router {
    router(state).layer(axum::middleware::map_response(binary_safe_text))
}

/// Whether `lambda_http` would send a body of this content type as text.
fn sent_as_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime.is_empty()
        || mime.starts_with("text/")
        || matches!(
            mime.as_str(),
            "application/json" | "application/javascript" | "application/xml" | "application/yaml"
        )
        || mime.ends_with("+json")
        || mime.ends_with("+xml")
        || mime.ends_with("+yaml")
}

/// Relabels a text-typed body that is not valid UTF-8 as `application/octet-stream`.
pub async fn binary_safe_text(resp: Response) -> Response {
    let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if !sent_as_text(content_type) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "could not read a response body");
            return crate::error::ApiError::internal(&e).into_response();
        }
    };
    if std::str::from_utf8(&bytes).is_err() {
        parts
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    }
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn response(content_type: Option<&str>, body: &'static [u8]) -> Response {
        let mut b = Response::builder().status(StatusCode::OK);
        if let Some(ct) = content_type {
            b = b.header(CONTENT_TYPE, ct);
        }
        b.body(Body::from(body)).expect("response")
    }

    async fn relabelled(content_type: Option<&str>, body: &'static [u8]) -> (Option<String>, Vec<u8>) {
        let resp = binary_safe_text(response(content_type, body)).await;
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        (ct, bytes.to_vec())
    }

    #[tokio::test]
    async fn invalid_utf8_text_becomes_octet_stream_with_every_byte() {
        let body: &[u8] = b"A\xff\xfeB caf\xc3\xa9\n";
        let (ct, bytes) = relabelled(Some("text/plain; charset=utf-8"), body).await;
        assert_eq!(ct.as_deref(), Some("application/octet-stream"));
        assert_eq!(bytes, body);
        // A page cut inside a character is not UTF-8 either.
        let (ct, _) = relabelled(Some("text/plain"), b"caf\xc3").await;
        assert_eq!(ct.as_deref(), Some("application/octet-stream"));
        let (ct, _) = relabelled(None, b"\xff").await;
        assert_eq!(ct.as_deref(), Some("application/octet-stream"));
    }

    #[tokio::test]
    async fn valid_text_and_binary_types_are_untouched() {
        let (ct, bytes) = relabelled(Some("application/json"), b"{\"ok\":true}").await;
        assert_eq!(ct.as_deref(), Some("application/json"));
        assert_eq!(bytes, b"{\"ok\":true}");
        let (ct, _) = relabelled(Some("text/plain; charset=utf-8"), "café".as_bytes()).await;
        assert_eq!(ct.as_deref(), Some("text/plain; charset=utf-8"));
        let (ct, bytes) = relabelled(Some("image/png"), b"\x89PNG\xff").await;
        assert_eq!(ct.as_deref(), Some("image/png"));
        assert_eq!(bytes, b"\x89PNG\xff");
    }

    #[test]
    fn text_types_are_the_ones_lambda_http_sends_as_text() {
        for t in [
            None,
            Some("text/plain"),
            Some("Text/HTML; charset=utf-8"),
            Some("application/json"),
            Some("application/problem+json"),
            Some("application/xml"),
        ] {
            assert!(sent_as_text(t), "{t:?}");
        }
        for t in [
            Some("application/octet-stream"),
            Some("image/png"),
            Some("application/gzip"),
        ] {
            assert!(!sent_as_text(t), "{t:?}");
        }
    }
}
