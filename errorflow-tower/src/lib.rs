//! tower middleware that reports handler panics and 5xx responses to errorflow,
//! and gives every event captured while serving a request that request's context.
//!
//! # Quickstart
//!
//! ```
//! use axum::{routing::get, Router};
//! use tracing_subscriber::prelude::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let _guard = errorflow_sdk::init(errorflow_sdk::ClientOptions::from_env());
//! tracing_subscriber::registry().with(errorflow_sdk::layer()).init();
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "ok" }))
//!     .layer(errorflow_tower::ErrorflowLayer::new());
//! # // The doctest sends one request through the layer instead of serving;
//! # // without ERRORFLOW_DSN the SDK is off and the layer passes it through.
//! # use tower::ServiceExt as _;
//! # let request = axum::http::Request::get("/").body(axum::body::Body::empty()).unwrap();
//! # let response = app.clone().oneshot(request).await.unwrap();
//! # assert_eq!(response.status(), 200);
//! # if false {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! # }
//! ```
//!
//! What the layer does for each request:
//!
//! - It binds a scope of its own to the request's future, so
//!   `tracing::error!` in handlers is reported with the request context
//!   (method, route, path, scrubbed query, allow-listed headers, client IP,
//!   trace id); breadcrumbs logged during the request stay with it. The
//!   scope is made only when the request's code uses it (sets context,
//!   records a breadcrumb, captures an event). The layer keeps only the
//!   request's parts (method, route, and one buffer with the path, query,
//!   allow-listed headers and client IP) and an
//!   [`errorflow_sdk::EventProcessor`] builds the context from them when an
//!   event is captured, so requests that report nothing pay for no scope
//!   and no context.
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

#![forbid(unsafe_code)]

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use errorflow_sdk::protocol::{Event, Exception, Level, Request as RequestContext};
use errorflow_sdk::scope::{self, Scoped, TaskScope};
use errorflow_sdk::scrub::scrub_query;
use futures_util::future::{CatchUnwind, FutureExt};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
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
        // Without a bound client there is nothing to report: skip the
        // context work so that a disabled SDK costs next to nothing, but
        // still turn panics into 500 answers so that behaviour does not
        // depend on whether a DSN is configured.
        if !errorflow_sdk::is_active() {
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
        let start = Instant::now();
        // Only the parts are kept (clones that share the request's buffers);
        // the request context is built from them when an event is captured,
        // which most requests never do.
        let (parts, request_id) = RequestParts::of(&request, &self.config);
        let parts = Arc::new(parts);
        // The request's scope is made only if its code uses one (sets
        // context, records a breadcrumb, captures an event); most requests
        // never do, and then cost no scope.
        let mut task_scope = TaskScope::lazy(Some(parts.clone()), true);

        let inner = &mut self.inner;
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| {
            scope::sync_scope(&mut task_scope, || inner.call(request))
        }));
        let state = State {
            config: self.config.clone(),
            parts,
            start,
            request_id,
        };
        match called {
            Ok(future) => ResponseFuture {
                kind: Kind::Running {
                    future: scope::bind_scope(task_scope, AssertUnwindSafe(future).catch_unwind()),
                    state: Some(state),
                },
            },
            Err(payload) => ResponseFuture {
                kind: Kind::Panicked {
                    payload: Some(payload),
                    state: Some(state),
                    task_scope,
                },
            },
        }
    }
}

struct State {
    config: Arc<Config>,
    parts: Arc<RequestParts>,
    start: Instant,
    /// The incoming `x-request-id`; without one the trace id is returned.
    request_id: Option<HeaderValue>,
}

impl State {
    fn request_id(self) -> HeaderValue {
        match self.request_id {
            Some(id) => id,
            None => self.parts.trace_id.header_value(),
        }
    }
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
        Panicked { payload: Option<Box<dyn Any + Send>>, state: Option<State>, task_scope: TaskScope },
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
            KindProj::Running { mut future, state } => {
                let output = std::task::ready!(future.as_mut().poll(cx));
                let state = state
                    .take()
                    .expect("ResponseFuture polled after completion");
                let task_scope = future.task_scope();
                Poll::Ready(match output {
                    Ok(Ok(response)) => Ok(finish(state, task_scope, response)),
                    Ok(Err(err)) => Err(err),
                    Err(payload) => Ok(panicked(state, task_scope, payload)),
                })
            }
            KindProj::Panicked {
                payload,
                state,
                task_scope,
            } => {
                let state = state
                    .take()
                    .expect("ResponseFuture polled after completion");
                let payload = payload.take().unwrap_or_else(|| Box::new("panic"));
                Poll::Ready(Ok(panicked(state, task_scope, payload)))
            }
        }
    }
}

fn finish<B>(state: State, task_scope: &TaskScope, mut response: Response<B>) -> Response<B> {
    let status = response.status();
    // A handler that failed usually logged why with `error!` (already
    // reported with this request's context); a second "responded 500"
    // event would only be noise, so it is sent when nothing else was.
    if (state.config.report_status)(status)
        && task_scope
            .made()
            .is_none_or(|scope| scope.lock().errors_captured() == 0)
    {
        let mut event = Event::new(if status.is_server_error() {
            Level::Error
        } else {
            Level::Warning
        });
        let transaction = state.parts.transaction();
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
        capture(&state, task_scope, event, status);
    }
    response
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), state.request_id());
    response
}

fn panicked<B: Default>(
    state: State,
    task_scope: &TaskScope,
    payload: Box<dyn Any + Send>,
) -> Response<B> {
    let status = StatusCode::INTERNAL_SERVER_ERROR;
    // The panic hook reports panics with a backtrace and this request's
    // scope; report here only when it did not (hook not installed).
    let already = task_scope
        .made()
        .is_some_and(|scope| scope.lock().panic_event().is_some());
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
        capture(&state, task_scope, event, status);
    }
    let mut response = internal_error();
    response
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), state.request_id());
    response
}

fn internal_error<B: Default>() -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

fn capture(state: &State, task_scope: &TaskScope, mut event: Event, status: StatusCode) {
    let Some(client) = errorflow_sdk::Client::current() else {
        return;
    };
    let latency_ms = state.start.elapsed().as_secs_f64() * 1000.0;
    event.request = Some(state.parts.request(Some(status.as_u16()), Some(latency_ms)));
    event.exception.iter_mut().for_each(|e| {
        e.mechanism.get_or_insert_with(|| "middleware".into());
    });
    client.capture_event_in(event, Some(task_scope.handle()));
}

/// What the request context is built from, kept from the request before it
/// is handed to the inner service.
struct RequestParts {
    method: Method,
    route: Option<Route>,
    /// The path, the query, the allow-listed headers (`name:value\n`, the
    /// ones that are text) and the client IP header's value, one after the
    /// other: one allocation, whatever the request holds.
    text: String,
    path_end: usize,
    /// `None` when the URI has no query.
    query_end: Option<usize>,
    headers_end: usize,
    trace_id: TraceId,
}

/// A trace id as 32 hex digits (generated or from `traceparent`), or an
/// incoming `x-request-id`.
enum TraceId {
    Hex([u8; 32]),
    Header(HeaderValue),
}

impl TraceId {
    fn as_bytes(&self) -> &[u8] {
        match self {
            TraceId::Hex(hex) => hex,
            TraceId::Header(value) => value.as_bytes(),
        }
    }

    fn header_value(&self) -> HeaderValue {
        match self {
            TraceId::Hex(hex) => {
                HeaderValue::from_bytes(hex).expect("hex digits are a valid header value")
            }
            TraceId::Header(value) => value.clone(),
        }
    }
}

impl RequestParts {
    /// The parts, and the incoming `x-request-id` (returned as is in the
    /// response; without it the trace id is). The trace id comes from W3C
    /// `traceparent`, else `x-request-id`, else is generated.
    fn of<B>(request: &Request<B>, config: &Config) -> (RequestParts, Option<HeaderValue>) {
        let uri = request.uri();
        let mut text =
            String::with_capacity(uri.path().len() + uri.query().map_or(0, str::len) + 128);
        text.push_str(uri.path());
        let path_end = text.len();
        let query_end = uri.query().map(|query| {
            text.push_str(query);
            text.len()
        });
        let mut request_id = None;
        let mut traceparent = None;
        let mut forwarded_for = None;
        let mut real_ip = None;
        let mut custom_ip = None;
        // One walk over the request's headers (a handful) instead of a hash
        // lookup per interesting name.
        for (name, value) in request.headers() {
            if config.headers.contains(name) {
                if let Ok(value) = value.to_str() {
                    text.push_str(name.as_str());
                    text.push(':');
                    text.push_str(value);
                    text.push('\n');
                }
            }
            if config.client_ip_header.as_ref() == Some(name) {
                custom_ip.get_or_insert(value);
            }
            if name == X_REQUEST_ID {
                request_id.get_or_insert(value);
            } else if name == "traceparent" {
                traceparent.get_or_insert(value);
            } else if name == "x-forwarded-for" {
                forwarded_for.get_or_insert(value);
            } else if name == "x-real-ip" {
                real_ip.get_or_insert(value);
            }
        }
        let headers_end = text.len();
        let client_ip = match &config.client_ip_header {
            Some(_) => custom_ip,
            None => forwarded_for.or(real_ip),
        };
        if let Some(ip) = client_ip.and_then(|v| v.to_str().ok()) {
            text.push_str(ip);
        }
        let request_id = request_id
            .filter(|v| !v.is_empty() && v.len() <= 200)
            .cloned();
        let traced = traceparent
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let trace_id = match (traced, &request_id) {
            (Some(trace), _) => {
                let mut hex = [0u8; 32];
                hex.copy_from_slice(trace.as_bytes());
                TraceId::Hex(hex)
            }
            (None, Some(id)) => TraceId::Header(id.clone()),
            (None, None) => {
                // A random (version 4) id, hex-encoded on the stack.
                TraceId::Hex(hex32(uuid::Uuid::new_v4().as_u128()))
            }
        };
        let parts = RequestParts {
            method: request.method().clone(),
            route: matched_route(request),
            text,
            path_end,
            query_end,
            headers_end,
            trace_id,
        };
        (parts, request_id)
    }

    fn route(&self) -> Option<&str> {
        self.route.as_ref().map(route_str)
    }

    fn path(&self) -> &str {
        &self.text[..self.path_end]
    }

    fn query(&self) -> Option<&str> {
        self.query_end.map(|end| &self.text[self.path_end..end])
    }

    /// `GET /users/{id}`: the route when known, else the path.
    fn transaction(&self) -> String {
        let target = self.route().unwrap_or_else(|| self.path());
        format!("{} {target}", self.method)
    }

    fn request(&self, status: Option<u16>, latency_ms: Option<f64>) -> RequestContext {
        let start = self.query_end.unwrap_or(self.path_end);
        let mut headers = BTreeMap::new();
        for line in self.text[start..self.headers_end].lines() {
            if let Some((name, value)) = line.split_once(':') {
                headers
                    .entry(name.to_string())
                    .or_insert_with(|| value.to_string());
            }
        }
        let client_ip = self.text[self.headers_end..]
            .split(',')
            .next()
            .map(str::trim)
            .filter(|ip| !ip.is_empty())
            .map(str::to_string);
        RequestContext {
            method: Some(self.method.as_str().to_string()),
            url: Some(self.path().to_string()),
            route: self.route().map(str::to_string),
            query_string: self.query().map(scrub_query),
            headers,
            status,
            latency_ms,
            client_ip,
        }
    }
}

impl errorflow_sdk::EventProcessor for RequestParts {
    fn process(&self, event: &mut Event) {
        if event.request.is_none() {
            // A panic while serving is answered 500 by this middleware.
            let panicked = event
                .exception
                .first()
                .is_some_and(|e| e.mechanism.as_deref() == Some("panic"));
            event.request = Some(self.request(panicked.then_some(500), None));
        }
        if event.transaction.is_none() {
            event.transaction = Some(self.transaction());
        }
        if event.trace_id.is_none() {
            event.trace_id = Some(String::from_utf8_lossy(self.trace_id.as_bytes()).into_owned());
        }
    }
}

/// `n` as 32 lowercase hex digits; a plain loop is several times cheaper
/// than `uuid`'s formatter, and this runs for every request.
fn hex32(mut n: u128) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 32];
    for digit in hex.iter_mut().rev() {
        *digit = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
    hex
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

#[cfg(feature = "axum")]
type Route = axum::extract::MatchedPath;

#[cfg(feature = "axum")]
fn matched_route<B>(request: &Request<B>) -> Option<Route> {
    request.extensions().get::<Route>().cloned()
}

#[cfg(feature = "axum")]
fn route_str(route: &Route) -> &str {
    route.as_str()
}

#[cfg(not(feature = "axum"))]
type Route = std::convert::Infallible;

#[cfg(not(feature = "axum"))]
fn matched_route<B>(_request: &Request<B>) -> Option<Route> {
    None
}

#[cfg(not(feature = "axum"))]
fn route_str(route: &Route) -> &str {
    match *route {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids() {
        let id = uuid::Uuid::new_v4();
        assert_eq!(&hex32(id.as_u128()), id.simple().to_string().as_bytes());
        assert_eq!(&hex32(0xab), b"000000000000000000000000000000ab");
    }

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
        let config = ErrorflowLayer::new().config;
        let request = Request::builder()
            .header("x-request-id", "req-1")
            .body(())
            .unwrap();
        let (parts, request_id) = RequestParts::of(&request, &config);
        assert_eq!(parts.trace_id.as_bytes(), b"req-1");
        assert_eq!(request_id.unwrap(), "req-1");
        let (parts, request_id) = RequestParts::of(&Request::new(()), &config);
        assert_eq!(parts.trace_id.as_bytes().len(), 32);
        assert!(request_id.is_none());
    }
}
