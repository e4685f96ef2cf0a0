//! Where the tools' REST calls go: [`RemoteApi`] over the network, or [`InProcessApi`] into the
//! API's own router ([`RouterTransport`]) with the served request's `Authorization` header.

use axum::Router;
use bytes::Bytes;
use http::header::AUTHORIZATION;
use outpost_api::client::{ApiTransport, ClientError, HttpTransport, OutpostClient};
use rmcp::service::RequestContext;
use rmcp::RoleServer;
use tower::ServiceExt;

/// Base URL of in-process requests: only the path reaches the router.
pub const IN_PROCESS_BASE: &str = "http://outpost.internal";

/// Most bytes read from one in-process answer (log pages are far smaller).
const MAX_IN_PROCESS_BODY: usize = 64 * 1024 * 1024;

/// Gives the tools a client of the API for the request being served.
pub trait ApiAccess: Clone + Send + Sync + 'static {
    type Transport: ApiTransport + Clone + Send + Sync + 'static;

    /// The client for this request (with its credentials).
    fn client(&self, context: &RequestContext<RoleServer>) -> Result<OutpostClient<Self::Transport>, ClientError>;

    /// Absolute URL of an API path (`/v1/runs/…`), when the API's public address is known.
    fn absolute(&self, path: &str) -> String;
}

/// The API at a URL, with the key given at start (stdio mode).
#[derive(Debug, Clone)]
pub struct RemoteApi {
    client: OutpostClient<HttpTransport>,
}

impl RemoteApi {
    pub fn new(client: OutpostClient<HttpTransport>) -> Self {
        Self { client }
    }
}

impl ApiAccess for RemoteApi {
    type Transport = HttpTransport;

    fn client(&self, _context: &RequestContext<RoleServer>) -> Result<OutpostClient<HttpTransport>, ClientError> {
        Ok(self.client.clone())
    }

    fn absolute(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("{}{path}", self.client.base_url())
        } else {
            path.to_owned()
        }
    }
}

/// Sends a request to an axum router in the same process (`tower::ServiceExt::oneshot`).
#[derive(Clone)]
pub struct RouterTransport {
    router: Router,
}

impl RouterTransport {
    pub fn new(router: Router) -> Self {
        Self { router }
    }
}

impl ApiTransport for RouterTransport {
    async fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, ClientError> {
        let request = request.map(axum::body::Body::from);
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_IN_PROCESS_BODY)
            .await
            .map_err(|e| ClientError::Transport(format!("cannot read the API's answer: {e}")))?;
        Ok(http::Response::from_parts(parts, bytes))
    }
}

/// The API router of this process, called with the `/mcp` request's own `Authorization` header
/// (HTTP mode). Links stay API paths, relative to the server the client talks to.
#[derive(Clone)]
pub struct InProcessApi {
    transport: RouterTransport,
}

impl InProcessApi {
    pub fn new(router: Router) -> Self {
        Self {
            transport: RouterTransport::new(router),
        }
    }
}

impl ApiAccess for InProcessApi {
    type Transport = RouterTransport;

    fn client(&self, context: &RequestContext<RoleServer>) -> Result<OutpostClient<RouterTransport>, ClientError> {
        let authorization = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.headers.get(AUTHORIZATION))
            .cloned();
        OutpostClient::with_transport(self.transport.clone(), IN_PROCESS_BASE, authorization)
    }

    fn absolute(&self, path: &str) -> String {
        path.to_owned()
    }
}
