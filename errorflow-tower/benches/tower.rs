//! Cost of the middleware on a 200 response: around a bare tower service
//! (the middleware's own cost, undiluted), and inside a one-route axum
//! router, the "bare router" a service really runs.
//!
//! Run with `cargo bench -p errorflow-tower --bench tower`. Each comparison
//! also prints a ratio from a plain timing loop (best of several runs).
//!
//! Instruction counts, which a noisy machine does not move: build with
//! `--no-run`, then run one variant of the router bench alone under
//! callgrind, twice with different request counts, and divide the
//! difference of the totals by the difference of the counts:
//!
//! ```sh
//! TOWER_ONLY=ours TOWER_N=20000 valgrind --tool=callgrind target/release/deps/tower-<hash> --bench
//! ```
//!
//! `TOWER_ONLY` is one of `bare`, `identity` (an empty layer), `floor` (a
//! layer that only sets a generated `x-request-id`) and `ours`.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use tower::{Service, ServiceBuilder};

#[path = "../../errorflow-sdk/benches/support/mod.rs"]
mod support;
use support::{interleaved, ns_per_call, sentry_init, single_variant};

type Req = Request<()>;

fn bare() -> impl Service<
    Req,
    Response = Response<String>,
    Error = Infallible,
    Future = Ready<Result<Response<String>, Infallible>>,
> + Clone {
    tower::service_fn(|_req: Req| ready(Ok::<_, Infallible>(Response::new(String::from("ok")))))
}

/// The bench's request, with `body`: a path with a parameter, a query and
/// two of the headers the layer keeps.
fn request<B>(body: B) -> Request<B> {
    Request::builder()
        .uri("/users/42?page=2")
        .header("user-agent", "bench/1.0")
        .header("x-forwarded-for", "203.0.113.9")
        .body(body)
        .unwrap()
}

/// Calls the service once with `request` and polls its (always ready)
/// future to completion.
fn call<S, B, R>(service: &mut S, request: Request<B>)
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let future = pin!(service.call(request));
    match future.poll(&mut cx) {
        Poll::Ready(response) => {
            black_box(response.unwrap());
        }
        Poll::Pending => unreachable!("the bench service is always ready"),
    }
}

struct Sink;
impl errorflow_sdk::Transport for Sink {
    fn send(&self, event: errorflow_sdk::protocol::Event) {
        drop(black_box(event));
    }
}

fn errorflow_init() -> errorflow_sdk::ClientGuard {
    errorflow_sdk::init(
        errorflow_sdk::ClientOptions::new()
            .transport(Arc::new(Sink))
            .panic_hook(false),
    )
}

fn ok_response(c: &mut Criterion) {
    if single_variant("TOWER").is_some() {
        return; // axum_router runs it
    }
    let mut group = c.benchmark_group("tower_200");
    let mut bare_svc = bare();
    group.bench_function("bare", |b| b.iter(|| call(&mut bare_svc, request(()))));
    let mut ours_svc = ServiceBuilder::new()
        .layer(errorflow_tower::ErrorflowLayer::new())
        .service(bare());
    {
        let _guard = errorflow_init();
        group.bench_function("errorflow", |b| b.iter(|| call(&mut ours_svc, request(()))));
    }
    let mut sentry_svc = ServiceBuilder::new()
        .layer(sentry_tower::NewSentryLayer::<Req>::new_from_top())
        .layer(sentry_tower::SentryHttpLayer::new())
        .service(bare());
    {
        let _guard = sentry_init();
        group.bench_function("sentry-tower", |b| {
            b.iter(|| call(&mut sentry_svc, request(())))
        });
    }
    group.finish();

    // Not a target, a floor: the bare service plus the one thing the layer
    // must do on every response, setting `x-request-id` (a generated id,
    // hex-encoded, as the layer does).
    let mut floor_svc = tower::service_fn(|_req: Req| {
        let mut response = Response::new(String::from("ok"));
        let mut hex = [0u8; 32];
        uuid::Uuid::new_v4().simple().encode_lower(&mut hex);
        response.headers_mut().insert(
            errorflow_tower::X_REQUEST_ID.clone(),
            http::HeaderValue::from_bytes(&hex).unwrap(),
        );
        ready(Ok::<_, Infallible>(response))
    });
    let best = interleaved(&mut [
        &mut || ns_per_call(200_000, || call(&mut floor_svc, request(()))),
        &mut || ns_per_call(200_000, || call(&mut bare_svc, request(()))),
        &mut || {
            let _guard = errorflow_init();
            ns_per_call(200_000, || call(&mut ours_svc, request(())))
        },
        &mut || {
            let _guard = sentry_init();
            ns_per_call(200_000, || call(&mut sentry_svc, request(())))
        },
    ]);
    let (floor, bare_ns, ours, theirs) = (best[0], best[1], best[2], best[3]);
    println!(
        "RATIO tower 200 floor (bare + x-request-id header)/bare = {:.2} ({floor:.0} ns vs {bare_ns:.0} ns)",
        floor / bare_ns
    );
    println!(
        "RATIO tower 200 errorflow/bare = {:.2} ({ours:.0} ns vs {bare_ns:.0} ns; target <= 1.1)",
        ours / bare_ns
    );
    println!(
        "RATIO tower 200 errorflow/sentry-tower = {:.2} ({ours:.0} ns vs {theirs:.0} ns; target <= 1.0)",
        ours / theirs
    );
}

type AxumReq = Request<axum::body::Body>;

/// A one-route axum router. The benches call `with_state(())` on it, as
/// `axum::serve` does (through `into_make_service`): that turns each route
/// into its service once, instead of on every request.
fn router() -> axum::Router {
    axum::Router::new().route(
        "/users/{id}",
        axum::routing::get(
            |axum::extract::Path(id): axum::extract::Path<u64>| async move {
                black_box(id);
                "ok"
            },
        ),
    )
}

fn axum_router(c: &mut Criterion) {
    let mut bare = router().with_state(());
    let mut ours = router()
        .layer(errorflow_tower::ErrorflowLayer::new())
        .with_state(());
    // sentry-tower's layers need `Sync` requests inside a router (axum's
    // body is not), so they wrap the router from outside, as its docs show
    // for services.
    let mut theirs = ServiceBuilder::new()
        .layer(sentry_tower::NewSentryLayer::<AxumReq>::new_from_top())
        .layer(sentry_tower::SentryHttpLayer::new())
        .service(router().with_state(()));
    let body = axum::body::Body::empty;
    // Not targets, floors: the router with an empty layer (what axum's
    // `Router::layer` costs before the layer does anything), and with a
    // layer that only sets a generated `x-request-id`, the one thing this
    // layer must do on every response.
    let mut floor = router()
        .layer(tower::util::MapResponseLayer::new(
            |mut response: axum::response::Response| {
                let mut hex = [0u8; 32];
                uuid::Uuid::new_v4().simple().encode_lower(&mut hex);
                response.headers_mut().insert(
                    errorflow_tower::X_REQUEST_ID.clone(),
                    http::HeaderValue::from_bytes(&hex).unwrap(),
                );
                response
            },
        ))
        .with_state(());
    let mut identity = router()
        .layer(tower::layer::util::Identity::new())
        .with_state(());
    if let Some((variant, n)) = single_variant("TOWER") {
        let _guard = errorflow_init();
        let service = match variant.as_str() {
            "bare" => &mut bare,
            "identity" => &mut identity,
            "floor" => &mut floor,
            "ours" => &mut ours,
            other => panic!("TOWER_ONLY={other}: expected bare, identity, floor or ours"),
        };
        for _ in 0..n {
            call(service, request(body()));
        }
        std::process::exit(0);
    }
    let mut group = c.benchmark_group("tower_axum_router_200");
    group.bench_function("bare", |b| b.iter(|| call(&mut bare, request(body()))));
    {
        let _guard = errorflow_init();
        group.bench_function("errorflow", |b| b.iter(|| call(&mut ours, request(body()))));
    }
    {
        let _guard = sentry_init();
        group.bench_function("sentry-tower", |b| {
            b.iter(|| call(&mut theirs, request(body())))
        });
    }
    group.finish();
    let best = interleaved(&mut [
        &mut || ns_per_call(200_000, || call(&mut floor, request(body()))),
        &mut || ns_per_call(200_000, || call(&mut bare, request(body()))),
        &mut || ns_per_call(200_000, || call(&mut identity, request(body()))),
        &mut || {
            let _guard = errorflow_init();
            ns_per_call(200_000, || call(&mut ours, request(body())))
        },
        &mut || {
            let _guard = sentry_init();
            ns_per_call(200_000, || call(&mut theirs, request(body())))
        },
    ]);
    let (floor_ns, bare_ns, identity_ns, ours, theirs) =
        (best[0], best[1], best[2], best[3], best[4]);
    println!(
        "RATIO tower axum router 200 empty layer (Identity through Router::layer)/bare = {:.2} ({identity_ns:.0} ns vs {bare_ns:.0} ns)",
        identity_ns / bare_ns
    );
    println!(
        "RATIO tower axum router 200 floor (bare + x-request-id header)/bare = {:.2} ({floor_ns:.0} ns vs {bare_ns:.0} ns)",
        floor_ns / bare_ns
    );
    println!(
        "RATIO tower axum router 200 errorflow/bare = {:.2} ({ours:.0} ns vs {bare_ns:.0} ns; target <= 1.1)",
        ours / bare_ns
    );
    println!(
        "RATIO tower axum router 200 errorflow/sentry-tower = {:.2} ({ours:.0} ns vs {theirs:.0} ns; target <= 1.0)",
        ours / theirs
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500)).sample_size(30);
    targets = ok_response, axum_router
}
criterion_main!(benches);
