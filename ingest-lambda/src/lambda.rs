//! What the API needs to be served through `lambda_http` intact.
//!
//! `lambda_http` (1.3) makes the API Gateway response out of a handler's response with its own
//! [`lambda_http::IntoResponse`]: a body whose content type it takes for text (its private list:
//! `text/*`, JSON, XML, YAML, none, …) goes in as a string, decoded with the declared charset
//! (invalid bytes become U+FFFD, a byte-order mark is dropped); any other goes base64-encoded.
//! That conversion is applied to every body type, `lambda_http::Body` included: its one
//! `IntoResponse for Response<B>` collects any `http_body::Body` and decides by the headers alone
//! (`ConvertBody` in lambda_http 1.3.2's `response.rs`), so a `Response<lambda_http::Body>` that is
//! already `Body::Binary` but labelled `text/plain` is decoded as text again. Handing it ready-made
//! bodies therefore cannot keep bytes; only the headers steer it.
//!
//! Run logs and text artifacts are raw bytes that an agent printed: they need not be UTF-8, and a
//! log page read at an offset can start or end inside a character. [`binary_safe_text`] therefore
//! runs `lambda_http`'s own conversion on the body and, when what it would send does not give the
//! client the very same bytes, relabels the response `application/octet-stream`, which
//! `lambda_http` sends base64-encoded, so the client gets every byte (the declared charset was
//! wrong for those bytes anyway). Bodies that survive keep the content type the handler set. No
//! copy of `lambda_http`'s list of text types is kept here, so a change to that list cannot make
//! the two disagree; the tests below check, through `lambda_http` itself, that every byte arrives.
//!
//! Cost: Lambda buffers a whole response (at most 6 MB) before answering, so reading the body here
//! costs no streaming; the check is one more pass (a decode or a copy) over that buffer. Plain-HTTP
//! serving does not use this layer.

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

/// The bytes a client gets from what `lambda_http` made of a body (`None` for a kind of body this
/// code does not know, which is left alone).
fn delivered(body: &lambda_http::Body) -> Option<&[u8]> {
    match body {
        lambda_http::Body::Empty => Some(&[]),
        lambda_http::Body::Text(text) => Some(text.as_bytes()),
        lambda_http::Body::Binary(bytes) => Some(bytes),
        _ => None,
    }
}

/// Relabels as `application/octet-stream` a response whose body `lambda_http` would not deliver
/// byte for byte (a text-typed body that is not valid text in its declared charset).
pub async fn binary_safe_text(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "could not read a response body");
            return crate::error::ApiError::internal(&e).into_response();
        }
    };
    let mut probe = Response::new(Body::from(bytes.clone()));
    *probe.headers_mut() = parts.headers.clone();
    let sent = lambda_http::IntoResponse::into_response(probe).await.into_body();
    if delivered(&sent).is_some_and(|got| got != bytes.as_ref()) {
        parts
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    }
    if matches!(sent, lambda_http::Body::Text(_)) {
        parts.headers.remove(CONTENT_LENGTH);
    }
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

    /// The types `lambda_http` sends as text are relabelled for a body that is not text, the
    /// others are not (it sends those base64-encoded anyway). `Text/HTML` is in
    /// `every_byte_survives_lambda_http`: lambda_http 1.3.2 matches `text` case-sensitively and
    /// sends it base64-encoded, so whether it needs a new label is lambda_http's call.
    #[tokio::test]
    async fn text_types_are_the_ones_lambda_http_sends_as_text() {
        for t in [
            None,
            Some("text/plain"),
            Some("text/html; charset=utf-8"),
            Some("application/json"),
            Some("application/problem+json"),
            Some("application/xml"),
        ] {
            let (ct, bytes) = relabelled(t, b"\xff").await;
            assert_eq!(ct.as_deref(), Some("application/octet-stream"), "{t:?}");
            assert_eq!(bytes, b"\xff", "{t:?}");
        }
        for t in [
            Some("application/octet-stream"),
            Some("image/png"),
            Some("application/gzip"),
        ] {
            let (ct, bytes) = relabelled(t, b"\xff").await;
            assert_eq!(ct.as_deref(), t, "{t:?}");
            assert_eq!(bytes, b"\xff", "{t:?}");
        }
    }

    /// Through `lambda_http`'s own conversion, every byte of every body arrives.
    #[tokio::test]
    async fn every_byte_survives_lambda_http() {
        let cases: [(Option<&str>, &'static [u8]); 11] = [
            (Some("text/plain; charset=utf-8"), b"A\xff\xfeB caf\xc3\xa9\n"),
            (Some("text/plain"), b"caf\xc3"),
            (None, b"\xff\x00"),
            (Some("application/json"), b"{\"ok\":true}"),
            (Some("Text/HTML; charset=utf-8"), b"<p>\xff</p>"),
            (Some("text/plain; charset=utf-8"), "café ✓".as_bytes()),
            // A byte-order mark, dropped by a text decode.
            (Some("text/plain; charset=utf-8"), b"\xef\xbb\xbfhi"),
            // Valid UTF-8 declared as Latin-1 decodes to other characters.
            (Some("text/plain; charset=iso-8859-1"), "café".as_bytes()),
            (Some("image/png"), b"\x89PNG\r\n\x1a\n\xff"),
            (Some("application/octet-stream"), b""),
            (Some("text/markdown"), b""),
        ];
        for (content_type, body) in cases {
            let safe = binary_safe_text(response(content_type, body)).await;
            let sent = lambda_http::IntoResponse::into_response(safe).await;
            assert_eq!(
                delivered(sent.body()),
                Some(body),
                "{content_type:?} {body:?}: {:?}",
                sent.body()
            );
        }
    }

    /// Why the layer relabels instead of handing `lambda_http` a ready `Body::Binary`: it decodes
    /// that as text again when the content type says text.
    #[tokio::test]
    async fn lambda_http_decodes_a_ready_binary_body_by_its_content_type() {
        let resp = Response::builder()
            .header(CONTENT_TYPE, "text/plain")
            .body(lambda_http::Body::Binary(b"\xff".to_vec()))
            .expect("response");
        let sent = lambda_http::IntoResponse::into_response(resp).await;
        assert_eq!(sent.body(), &lambda_http::Body::Text("\u{fffd}".to_owned()));
    }
}
