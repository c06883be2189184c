//! tower middleware that reports handler panics and 5xx responses to errorflow,
//! and gives every event captured while serving a request that request's context.
//!
//! # Quickstart
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use tracing_subscriber::prelude::*;
//!
//! # async fn run() {
//! let _guard = errorflow_sdk::init(errorflow_sdk::ClientOptions::from_env());
//! tracing_subscriber::registry().with(errorflow_sdk::layer()).init();
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "ok" }))
//!     .layer(errorflow_tower::ErrorflowLayer::new());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```
//!
//! What the layer does for each request:
//!
//! - It binds a fresh [`errorflow_sdk::Scope`] holding the request context
//!   (method, route, path, scrubbed query, allow-listed headers, client IP,
//!   trace id) to the request's future, so `tracing::error!` in handlers is
//!   reported with it; breadcrumbs logged during the request stay with it.
//! - It takes the trace id from W3C `traceparent`, else from `x-request-id`,
//!   else generates one, and returns it as `x-request-id`.
//! - It catches panics in `call` and in the response future, answers 500 and
//!   reports a fatal event (once: the SDK's panic hook, when installed,
//!   already captured it with a backtrace).
//! - It reports responses whose status matches [`ErrorflowLayer::report_status`]
//!   (5xx by default; 4xx are client mistakes, not incidents), unless an
//!   error event was already captured while serving the request (typically
//!   the handler's own `error!`), which would make a second event noise.
//!
//! With the `axum` feature the matched route (`/users/{id}`) is read from
//! `axum::extract::MatchedPath`; add the layer with `Router::layer` so that
//! it runs after routing.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use errorflow_sdk::protocol::{Event, Exception, Level, Request as RequestContext};
use errorflow_sdk::scope::{self, Scope, ScopeHandle, Scoped};
use errorflow_sdk::scrub::scrub_query;
use futures_util::future::{CatchUnwind, FutureExt};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::Layer;
use tower::Service;

/// Headers copied into the request context unless configured otherwise.
/// Credentials (`authorization`, `cookie`, …) are never copied, whatever the list says.
pub const DEFAULT_HEADERS: &[&str] = &[
    "user-agent",
    "content-type",
    "content-length",
    "accept",
    "accept-language",
    "referer",
    "host",
    "origin",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-real-ip",
    "x-request-id",
    "traceparent",
];

/// The request id header set on every response.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

struct Config {
    report_status: Box<dyn Fn(StatusCode) -> bool + Send + Sync>,
    headers: Vec<HeaderName>,
    client_ip_header: Option<HeaderName>,
}

/// The middleware's [`Layer`]; see the [crate docs](crate).
#[derive(Clone)]
pub struct ErrorflowLayer {
    config: Arc<Config>,
}

impl Default for ErrorflowLayer {
    fn default() -> ErrorflowLayer {
        ErrorflowLayer::new()
    }
}

impl std::fmt::Debug for ErrorflowLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorflowLayer")
            .field("headers", &self.config.headers)
            .field("client_ip_header", &self.config.client_ip_header)
            .finish_non_exhaustive()
    }
}

impl ErrorflowLayer {
    /// Reports 5xx and panics, copies [`DEFAULT_HEADERS`], takes the client
    /// IP from `x-forwarded-for` (first hop) or `x-real-ip`.
    pub fn new() -> ErrorflowLayer {
        ErrorflowLayer {
            config: Arc::new(Config {
                report_status: Box::new(|s| s.is_server_error()),
                headers: DEFAULT_HEADERS
                    .iter()
                    .map(|h| HeaderName::from_static(h))
                    .collect(),
                client_ip_header: None,
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::get_mut(&mut self.config).expect("ErrorflowLayer is configured before it is cloned")
    }

    /// Which response statuses are reported (default: 5xx).
    ///
    /// ```
    /// let layer = errorflow_tower::ErrorflowLayer::new().report_status(|s| s.as_u16() >= 400);
    /// ```
    pub fn report_status(
        mut self,
        f: impl Fn(StatusCode) -> bool + Send + Sync + 'static,
    ) -> ErrorflowLayer {
        self.config_mut().report_status = Box::new(f);
        self
    }

    /// The headers copied into the request context. Credentials are
    /// removed from the list here, once, rather than on every request.
    pub fn headers<I: IntoIterator<Item = HeaderName>>(mut self, headers: I) -> ErrorflowLayer {
        self.config_mut().headers = headers
            .into_iter()
            .filter(|h| !errorflow_sdk::scrub::is_sensitive(h.as_str()))
            .collect();
        self
    }

    /// The header holding the client IP (its first comma-separated value is used),
    /// for proxies that use neither `x-forwarded-for` nor `x-real-ip`.
    pub fn client_ip_header(mut self, header: HeaderName) -> ErrorflowLayer {
        self.config_mut().client_ip_header = Some(header);
        self
    }
}

impl<S> Layer<S> for ErrorflowLayer {
    type Service = ErrorflowService<S>;

    fn layer(&self, inner: S) -> ErrorflowService<S> {
        ErrorflowService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The middleware's [`Service`].
#[derive(Clone)]
pub struct ErrorflowService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for ErrorflowService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorflowService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ErrorflowService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        // Without a bound client there is nothing to report: skip the
        // context work so that a disabled SDK costs next to nothing, but
        // still turn panics into 500 answers so that behaviour does not
        // depend on whether a DSN is configured.
        if errorflow_sdk::Client::current().is_none() {
            let inner = &mut self.inner;
            return match std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(request))) {
                Ok(future) => ResponseFuture {
                    kind: Kind::Passthrough {
                        future: AssertUnwindSafe(future).catch_unwind(),
                    },
                },
                Err(_) => ResponseFuture {
                    kind: Kind::PassthroughPanicked,
                },
            };
        }
        let (trace_id, request_id) = trace_ids(request.headers());
        let context = request_context(&request, &self.config);
        let mut scope = Scope::new();
        scope.set_transaction(Some(match &context.route {
            Some(route) => format!("{} {route}", request.method()),
            None => format!("{} {}", request.method(), request.uri().path()),
        }));
        scope.set_trace_id(Some(trace_id));
        scope.set_request(Some(context));
        scope.set_catches_panics(true);
        let handle = ScopeHandle::new(scope);

        let inner = &mut self.inner;
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| {
            scope::sync_scope(handle.clone(), || inner.call(request))
        }));
        let state = State {
            handle: handle.clone(),
            config: self.config.clone(),
            start,
            request_id,
        };
        match called {
            Ok(future) => ResponseFuture {
                kind: Kind::Running {
                    future: scope::bind_scope(handle, AssertUnwindSafe(future).catch_unwind()),
                    state: Some(state),
                },
            },
            Err(payload) => ResponseFuture {
                kind: Kind::Panicked {
                    payload: Some(payload),
                    state: Some(state),
                },
            },
        }
    }
}

struct State {
    handle: ScopeHandle,
    config: Arc<Config>,
    start: Instant,
    request_id: HeaderValue,
}

pin_project! {
    /// The response future of [`ErrorflowService`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Passthrough { #[pin] future: CatchUnwind<AssertUnwindSafe<F>> },
        PassthroughPanicked,
        Running { #[pin] future: Scoped<CatchUnwind<AssertUnwindSafe<F>>>, state: Option<State> },
        Panicked { payload: Option<Box<dyn Any + Send>>, state: Option<State> },
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: Default,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { future } => {
                Poll::Ready(match std::task::ready!(future.poll(cx)) {
                    Ok(output) => output,
                    Err(_) => Ok(internal_error()),
                })
            }
            KindProj::PassthroughPanicked => Poll::Ready(Ok(internal_error())),
            KindProj::Running { future, state } => {
                let output = std::task::ready!(future.poll(cx));
                let state = state
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(match output {
                    Ok(Ok(response)) => Ok(finish(state, response)),
                    Ok(Err(err)) => Err(err),
                    Err(payload) => Ok(panicked(state, payload)),
                })
            }
            KindProj::Panicked { payload, state } => {
                let state = state
                    .take()
                    .expect("ResponseFuture polled after completion");
                let payload = payload.take().unwrap_or_else(|| Box::new("panic"));
                Poll::Ready(Ok(panicked(state, payload)))
            }
        }
    }
}

fn finish<B>(state: State, mut response: Response<B>) -> Response<B> {
    let status = response.status();
    // A handler that failed usually logged why with `error!` (already
    // reported with this request's context); a second "responded 500"
    // event would only be noise, so it is sent when nothing else was.
    if (state.config.report_status)(status) && state.handle.lock().errors_captured() == 0 {
        let mut event = Event::new(if status.is_server_error() {
            Level::Error
        } else {
            Level::Warning
        });
        let transaction = state.handle.lock().snapshot_transaction();
        event.message = Some(format!("{transaction} responded {status}"));
        event.message_template = event.message.clone();
        event
            .tags
            .insert("http.status_code".into(), status.as_u16().to_string());
        event.fingerprint = Some(vec![
            "http-status".into(),
            transaction,
            status.as_u16().to_string(),
        ]);
        capture(&state, event, status);
    }
    response
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), state.request_id);
    response
}

fn panicked<B: Default>(state: State, payload: Box<dyn Any + Send>) -> Response<B> {
    let status = StatusCode::INTERNAL_SERVER_ERROR;
    // The panic hook reports panics with a backtrace and this request's
    // scope; report here only when it did not (hook not installed).
    let already = state.handle.lock().panic_event().is_some();
    if !already {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".into());
        let mut event = Event::new(Level::Fatal);
        event.message = Some(message.clone());
        let mut exception = Exception::new("panic", message);
        exception.mechanism = Some("panic".into());
        exception.handled = Some(false);
        event.exception.push(exception);
        capture(&state, event, status);
    }
    let mut response = internal_error();
    response
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), state.request_id);
    response
}

fn internal_error<B: Default>() -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

fn capture(state: &State, mut event: Event, status: StatusCode) {
    let Some(client) = errorflow_sdk::Client::current() else {
        return;
    };
    {
        let mut scope = state.handle.lock();
        let mut request = scope.request().cloned().unwrap_or_default();
        request.status = Some(status.as_u16());
        request.latency_ms = Some(state.start.elapsed().as_secs_f64() * 1000.0);
        scope.set_request(Some(request));
    }
    event.exception.iter_mut().for_each(|e| {
        e.mechanism.get_or_insert_with(|| "middleware".into());
    });
    client.capture_event_in(event, Some(&state.handle));
}

trait TransactionExt {
    fn snapshot_transaction(&self) -> String;
}

impl TransactionExt for Scope {
    fn snapshot_transaction(&self) -> String {
        self.request()
            .map(|r| {
                format!(
                    "{} {}",
                    r.method.as_deref().unwrap_or("?"),
                    r.route.as_deref().or(r.url.as_deref()).unwrap_or("?")
                )
            })
            .unwrap_or_default()
    }
}

/// The trace id (for events) and request id (for the response header).
fn trace_ids(headers: &HeaderMap) -> (String, HeaderValue) {
    let incoming_request_id = headers
        .get(&X_REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .cloned();
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    let trace_id = match (&traceparent, &incoming_request_id) {
        (Some(trace), _) => trace.to_string(),
        (None, Some(id)) => String::from_utf8_lossy(id.as_bytes()).into_owned(),
        (None, None) => uuid::Uuid::new_v4().simple().to_string(),
    };
    let request_id = incoming_request_id
        .or_else(|| HeaderValue::from_str(&trace_id).ok())
        .unwrap_or_else(|| HeaderValue::from_static("invalid"));
    (trace_id, request_id)
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn parse_traceparent(value: &str) -> Option<&str> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent_id = parts.next()?;
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = version.len() == 2
        && hex(version)
        && trace_id.len() == 32
        && hex(trace_id)
        && trace_id.bytes().any(|b| b != b'0')
        && parent_id.len() == 16
        && hex(parent_id);
    valid.then_some(trace_id)
}

fn request_context<B>(request: &Request<B>, config: &Config) -> RequestContext {
    let headers = request.headers();
    let mut copied = BTreeMap::new();
    // A request has a handful of headers and the allow-list a dozen names:
    // walking the request's headers once is cheaper than a hash lookup per
    // allowed name.
    for (name, value) in headers {
        if config.headers.contains(name) {
            if let Ok(value) = value.to_str() {
                copied.insert(name.as_str().to_string(), value.to_string());
            }
        }
    }
    RequestContext {
        method: Some(request.method().as_str().to_string()),
        url: Some(request.uri().path().to_string()),
        route: matched_route(request),
        query_string: request.uri().query().map(scrub_query),
        headers: copied,
        status: None,
        latency_ms: None,
        client_ip: client_ip(headers, config),
    }
}

fn client_ip(headers: &HeaderMap, config: &Config) -> Option<String> {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    match &config.client_ip_header {
        Some(header) => first(header.as_str()),
        None => first("x-forwarded-for").or_else(|| first("x-real-ip")),
    }
}

#[cfg(feature = "axum")]
fn matched_route<B>(request: &Request<B>) -> Option<String> {
    request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
}

#[cfg(not(feature = "axum"))]
fn matched_route<B>(_request: &Request<B>) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent() {
        assert_eq!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(parse_traceparent("garbage"), None);
    }

    #[test]
    fn ids_fall_back_to_request_id_then_generated() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("req-1"));
        assert_eq!(trace_ids(&headers).0, "req-1");
        let (trace, request_id) = trace_ids(&HeaderMap::new());
        assert_eq!(trace.len(), 32);
        assert_eq!(request_id.to_str().unwrap(), trace);
    }
}
