//! Event content: breadcrumbs, span fields, scopes, scrubbing, fingerprints.

mod common;

use std::sync::Arc;

use common::{serial, Memory};
use errorflow_sdk::protocol::Level;
use errorflow_sdk::scope::{self, ScopeFutureExt};
use errorflow_sdk::{ClientOptions, Scope};
use tracing::instrument::WithSubscriber;
use tracing_subscriber::prelude::*;

fn with_memory(max_breadcrumbs: usize, f: impl FnOnce()) -> Vec<errorflow_sdk::protocol::Event> {
    let memory = Arc::new(Memory::default());
    let guard = errorflow_sdk::init(
        ClientOptions::new()
            .transport(memory.clone())
            .max_breadcrumbs(max_breadcrumbs)
            .panic_hook(false),
    );
    let subscriber = tracing_subscriber::registry().with(errorflow_sdk::layer());
    tracing::subscriber::with_default(subscriber, || scope::with_thread_scope(Scope::new(), f));
    drop(guard);
    memory.events()
}

#[test]
fn same_callsite_different_arguments_share_a_fingerprint() {
    let _serial = serial();
    let events = with_memory(10, || {
        for id in [1, 2] {
            tracing::error!("payment for order {} failed", id);
        }
        tracing::error!("refund for order {} failed", 3);
    });
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].fingerprint, events[1].fingerprint);
    assert_ne!(events[0].fingerprint, events[2].fingerprint);
    assert!(!events[0]
        .fingerprint
        .as_ref()
        .unwrap()
        .iter()
        .any(|p| p.contains("{{")));
}

#[test]
fn breadcrumbs_are_attached_and_bounded() {
    let _serial = serial();
    let before = chrono::Utc::now();
    let events = with_memory(2, || {
        tracing::info!("step one");
        tracing::warn!(attempt = 2, "step two");
        tracing::info!("step three");
        tracing::debug!("not a breadcrumb");
        tracing::error!("failed");
    });
    let crumbs = &events[0].breadcrumbs;
    let messages: Vec<_> = crumbs
        .iter()
        .map(|b| b.message.as_deref().unwrap())
        .collect();
    assert_eq!(messages, ["step two", "step three"]);
    assert_eq!(crumbs[0].level, Level::Warning);
    assert_eq!(crumbs[0].data["attempt"], 2);
    assert_eq!(crumbs[0].category.as_deref(), Some("context"));
    // Breadcrumb times come from the kernel's coarse wall clock: the real
    // time, up to a tick (a few milliseconds) behind the precise clock.
    let after = chrono::Utc::now();
    for crumb in crumbs {
        let at = crumb.timestamp.expect("a breadcrumb has a time");
        assert!(
            at >= before - chrono::Duration::milliseconds(50) && at <= after,
            "{at} not within {before}..{after}"
        );
    }
}

#[test]
fn span_fields_are_attached() {
    let _serial = serial();
    let events = with_memory(10, || {
        let outer = tracing::info_span!("checkout", cart_id = 7, user = "bob");
        let _o = outer.enter();
        let inner = tracing::info_span!("charge", provider = "stripe");
        let _i = inner.enter();
        tracing::error!(user = "alice", "charge failed");
    });
    let e = &events[0];
    assert_eq!(e.tags["cart_id"], "7");
    assert_eq!(e.tags["provider"], "stripe");
    // The event's own field wins over the span's.
    assert_eq!(e.tags["user"], "alice");
    let spans = e.extra["spans"].as_array().unwrap();
    assert_eq!(spans[0]["name"], "checkout");
    assert_eq!(spans[1]["fields"]["provider"], "stripe");
}

#[test]
fn span_fields_win_over_scope_tags_and_follow_record() {
    let _serial = serial();
    let events = with_memory(10, || {
        errorflow_sdk::configure_scope(|s| {
            s.set_tag("tenant", "from-scope");
            s.set_tag("region", "eu");
        });
        let outer =
            tracing::info_span!("request", tenant = "outer", attempt = tracing::field::Empty);
        let _o = outer.enter();
        let inner = tracing::info_span!("handler", tenant = "inner");
        let _i = inner.enter();
        tracing::error!("first");
        // Recorded after an event took the span's fields: that event keeps
        // the old ones, the next one sees the new field.
        outer.record("attempt", 2);
        tracing::error!("second");
    });
    // The outermost span wins over inner spans, and spans over the scope.
    assert_eq!(events[0].tags["tenant"], "outer");
    assert_eq!(events[0].tags["region"], "eu");
    assert!(!events[0].tags.contains_key("attempt"));
    assert_eq!(events[1].tags["attempt"], "2");
    assert_eq!(events[1].extra["spans"][0]["fields"]["attempt"], 2);
}

#[test]
fn long_messages_and_many_fields_are_kept_whole() {
    let _serial = serial();
    let long = "x".repeat(300);
    let events = with_memory(10, || {
        tracing::info!(a = 1, b = "two", c = true, d = 4.5, e = -5, f = %"six", "{long}");
        tracing::error!(a = 1, b = "two", c = true, d = 4.5, e = -5, f = %"six", g = ?"seven", "{long} failed");
    });
    let e = &events[0];
    assert_eq!(
        e.message.as_deref(),
        Some(format!("{long} failed").as_str())
    );
    assert_eq!(e.tags["a"], "1");
    assert_eq!(e.tags["b"], "two");
    assert_eq!(e.tags["c"], "true");
    assert_eq!(e.tags["d"], "4.5");
    assert_eq!(e.tags["e"], "-5");
    assert_eq!(e.tags["f"], "six");
    assert_eq!(e.tags["g"], "\"seven\"");
    let crumb = &e.breadcrumbs[0];
    assert_eq!(crumb.message.as_deref(), Some(long.as_str()));
    assert_eq!(crumb.data["b"], "two");
    assert_eq!(crumb.data["e"], -5);
    assert_eq!(crumb.data["f"], "six");
}

#[test]
fn sensitive_values_are_scrubbed() {
    let _serial = serial();
    let events = with_memory(10, || {
        errorflow_sdk::configure_scope(|s| {
            s.set_tag("session_id", "abc");
            s.set_request(Some(errorflow_sdk::protocol::Request {
                query_string: Some("page=2&access_token=xyz".into()),
                headers: [("Authorization".to_string(), "Bearer xyz".to_string())].into(),
                ..Default::default()
            }));
        });
        tracing::info!(api_key = "k", "calling");
        tracing::error!(password = "hunter2", user = "bob", "login failed");
    });
    let e = &events[0];
    assert_eq!(e.tags["password"], "[Filtered]");
    assert_eq!(e.tags["session_id"], "[Filtered]");
    assert_eq!(e.tags["user"], "bob");
    assert_eq!(e.breadcrumbs[0].data["api_key"], "[Filtered]");
    let request = e.request.as_ref().unwrap();
    assert_eq!(request.headers["Authorization"], "[Filtered]");
    assert_eq!(
        request.query_string.as_deref(),
        Some("page=2&access_token=[Filtered]")
    );
}

/// A client that keeps its events in memory (no panic hook), and a
/// dispatcher with the SDK's layer for futures to run with.
fn memory_client() -> (Arc<Memory>, errorflow_sdk::ClientGuard, tracing::Dispatch) {
    let memory = Arc::new(Memory::default());
    let guard = errorflow_sdk::init(
        ClientOptions::new()
            .transport(memory.clone())
            .panic_hook(false),
    );
    let subscriber = tracing_subscriber::registry().with(errorflow_sdk::layer());
    (memory, guard, tracing::Dispatch::new(subscriber))
}

#[test]
fn concurrent_tasks_keep_their_own_scope() {
    let _serial = serial();
    let (memory, guard, dispatch) = memory_client();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut handles = Vec::new();
        for tenant in ["a", "b"] {
            let mut scope = Scope::new();
            scope.set_tag("tenant", tenant);
            let fut = async move {
                for i in 0..20 {
                    tracing::info!(i, "working for {}", tenant);
                    tokio::task::yield_now().await;
                    tracing::error!(expected = tenant, "failure {}", i);
                    tokio::task::yield_now().await;
                }
                // A spawned task does not inherit the scope by accident…
                let orphan =
                    tokio::spawn(async { scope::current_scope().tags().get("tenant").cloned() });
                assert_eq!(orphan.await.unwrap(), None);
                // …but does when it is propagated explicitly.
                let child = tokio::spawn(
                    async { scope::current_scope().tags().get("tenant").cloned() }
                        .with_scope(scope::current_scope()),
                );
                assert_eq!(child.await.unwrap().as_deref(), Some(tenant));
            };
            // `with_subscriber` sets the dispatcher on every poll, on whichever worker thread.
            handles.push(tokio::spawn(
                fut.with_subscriber(dispatch.clone()).with_scope(scope),
            ));
        }
        for h in handles {
            h.await.unwrap();
        }
    });
    drop(guard);
    let events = memory.events();
    assert_eq!(events.len(), 40);
    for e in &events {
        assert_eq!(e.tags["tenant"], e.tags["expected"]);
        for crumb in &e.breadcrumbs {
            assert!(crumb
                .message
                .as_deref()
                .unwrap()
                .ends_with(e.tags["tenant"].as_str()));
        }
    }
}

#[test]
fn own_target_and_before_send() {
    let _serial = serial();
    let memory = Arc::new(Memory::default());
    let guard = errorflow_sdk::init(
        ClientOptions::new()
            .transport(memory.clone())
            .panic_hook(false)
            .before_send(|mut e| {
                if e.message.as_deref() == Some("drop me") {
                    return None;
                }
                e.tags.insert("seen".into(), "yes".into());
                Some(e)
            }),
    );
    let subscriber = tracing_subscriber::registry().with(errorflow_sdk::layer());
    tracing::subscriber::with_default(subscriber, || {
        tracing::error!(target: "errorflow_sdk::transport", "internal");
        tracing::error!("drop me");
        tracing::error!("keep me");
    });
    drop(guard);
    let events = memory.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].tags["seen"], "yes");
}

/// Adds a tag to events, as middleware adds request context.
struct TagProcessor;

impl errorflow_sdk::EventProcessor for TagProcessor {
    fn process(&self, event: &mut errorflow_sdk::protocol::Event) {
        event
            .tags
            .entry("from".into())
            .or_insert("processor".into());
    }
}

#[test]
fn lazy_scopes_are_made_only_when_used_and_bindings_nest() {
    let _serial = serial();
    let (memory, guard, dispatch) = memory_client();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lazy = || scope::TaskScope::lazy(Some(Arc::new(TagProcessor)), false);
    rt.block_on(
        async {
            // A future that uses no scope leaves none made.
            let mut quiet = std::pin::pin!(scope::bind_scope(lazy(), async {
                tokio::task::yield_now().await;
                tracing::debug!("not a breadcrumb");
            }));
            quiet.as_mut().await;
            assert!(quiet.as_mut().task_scope().made().is_none());

            // One that reports makes it, with the binding's processor.
            let mut used = std::pin::pin!(scope::bind_scope(lazy(), async {
                errorflow_sdk::configure_scope(|s| s.set_tag("layer", "outer"));
                tokio::task::yield_now().await;
                // An inner binding wins while its future runs…
                let mut inner = Scope::new();
                inner.set_tag("layer", "inner");
                async { tracing::error!("inner failure") }
                    .with_scope(inner)
                    .await;
                // …and the outer one is current again afterwards.
                tracing::error!("outer failure");
            }));
            used.as_mut().await;
            let made = used.as_mut().task_scope().made().expect("a scope was made");
            assert_eq!(made.lock().tags()["layer"], "outer");
            assert_eq!(made.lock().errors_captured(), 1);
            // Nothing stays bound once the futures are done.
            assert!(scope::current_scope().tags().get("layer").is_none());

            // A future dropped before it finished (a cancelled request) is
            // dropped inside its scope, so its drop code reports with it.
            struct ReportOnDrop;
            impl Drop for ReportOnDrop {
                fn drop(&mut self) {
                    tracing::error!("cancelled");
                }
            }
            let mut tagged = Scope::new();
            tagged.set_tag("layer", "cancelled");
            let pending = async {
                let _report = ReportOnDrop;
                std::future::pending::<()>().await;
            }
            .with_scope(tagged);
            let _ = tokio::time::timeout(std::time::Duration::from_millis(1), pending).await;
        }
        .with_subscriber(dispatch),
    );
    drop(guard);
    let events = memory.events();
    let tags: Vec<(&str, &str, Option<&str>)> = events
        .iter()
        .map(|e| {
            (
                e.message.as_deref().unwrap(),
                e.tags["layer"].as_str(),
                e.tags.get("from").map(String::as_str),
            )
        })
        .collect();
    assert_eq!(
        tags,
        [
            // Bindings do not stack: an event takes the innermost scope
            // (and the root), not the outer binding's processor.
            ("inner failure", "inner", None),
            ("outer failure", "outer", Some("processor")),
            ("cancelled", "cancelled", None),
        ]
    );
}

#[test]
fn a_sync_binding_keeps_its_scope_after_a_panic() {
    let _serial = serial();
    let mut bound = scope::TaskScope::lazy(None, true);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        scope::sync_scope(&mut bound, || {
            errorflow_sdk::configure_scope(|s| s.set_tag("step", "before the panic"));
            panic!("boom");
        })
    }));
    assert!(result.is_err());
    let made = bound
        .made()
        .expect("the scope made before the panic is kept");
    assert_eq!(made.lock().tags()["step"], "before the panic");
    // The binding is undone: the panic did not leave it current.
    assert!(scope::current_scope().tags().get("step").is_none());
}

#[test]
fn logging_inside_configure_scope_does_not_deadlock() {
    let _serial = serial();
    let events = with_memory(10, || {
        errorflow_sdk::configure_scope(|s| {
            s.set_tag("tenant", "acme");
            tracing::info!("while configuring");
            tracing::error!("failed while configuring");
        });
        tracing::error!("after");
    });
    // The event logged inside the closure is reported, without the scope
    // being configured (its lock is held); the breadcrumb logged there is
    // not kept; the scope has its tag afterwards.
    let messages: Vec<_> = events
        .iter()
        .map(|e| e.message.as_deref().unwrap())
        .collect();
    assert_eq!(messages, ["failed while configuring", "after"]);
    assert!(!events[0].tags.contains_key("tenant"));
    assert_eq!(events[1].tags["tenant"], "acme");
    assert!(
        events[1].breadcrumbs.is_empty(),
        "{:#?}",
        events[1].breadcrumbs
    );
}

#[test]
fn configure_scope_inside_configure_scope_panics_instead_of_hanging() {
    let _serial = serial();
    scope::with_thread_scope(Scope::new(), || {
        let nested = std::panic::catch_unwind(|| {
            errorflow_sdk::configure_scope(|_| {
                errorflow_sdk::configure_scope(|s| s.set_tag("a", "1"))
            })
        });
        let message = nested.unwrap_err();
        let message = message
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| message.downcast_ref::<&str>().copied())
            .unwrap();
        assert!(message.contains("inside configure_scope"), "{message}");
        // The scope is usable afterwards.
        errorflow_sdk::configure_scope(|s| s.set_tag("b", "2"));
        assert_eq!(scope::current_scope().tags()["b"], "2");
    });
}

#[test]
fn logging_while_a_thread_is_torn_down_is_reported_not_a_crash() {
    let _serial = serial();
    /// Logs when this thread's thread-locals are destroyed, after the
    /// SDK's own (made later, so destroyed first).
    struct LogsOnDrop;
    impl Drop for LogsOnDrop {
        fn drop(&mut self) {
            tracing::info!("connection pool closing");
            tracing::error!("connection pool lost a connection");
        }
    }
    thread_local! {
        static POOL: std::cell::RefCell<Option<LogsOnDrop>> = const { std::cell::RefCell::new(None) };
    }
    let (memory, guard, dispatch) = memory_client();
    std::thread::spawn(move || {
        tracing::dispatcher::set_global_default(dispatch.clone()).ok();
        let _default = tracing::dispatcher::set_default(&dispatch);
        POOL.with(|pool| *pool.borrow_mut() = Some(LogsOnDrop));
        // The SDK's thread-locals are made after the pool's.
        tracing::info!("serving");
        tracing::error!("request failed");
        errorflow_sdk::configure_scope(|s| s.set_tag("thread", "worker"));
    })
    .join()
    .expect("the thread ends without a panic");
    drop(guard);
    let messages: Vec<_> = memory
        .events()
        .iter()
        .map(|e| e.message.clone().unwrap())
        .collect();
    assert_eq!(
        messages,
        ["request failed", "connection pool lost a connection"]
    );
}

#[test]
fn sample_rate_keeps_that_share_of_events() {
    let _serial = serial();
    let sampled = |rate: f32| {
        let memory = Arc::new(Memory::default());
        let guard = errorflow_sdk::init(
            ClientOptions::new()
                .transport(memory.clone())
                .sample_rate(rate)
                .panic_hook(false),
        );
        for i in 0..2_000 {
            errorflow_sdk::capture_message(&format!("event {i}"), Level::Error);
        }
        drop(guard);
        memory.events().len()
    };
    assert_eq!(sampled(0.0), 0);
    assert_eq!(sampled(1.0), 2_000);
    // Binomial(2000, 0.5): a standard deviation of about 22 events.
    let half = sampled(0.5);
    assert!((800..=1_200).contains(&half), "{half} of 2000 kept at 0.5");
}

#[test]
fn a_panic_while_another_thread_holds_the_root_scope_keeps_its_context() {
    let _serial = serial();
    let memory = Arc::new(Memory::default());
    let guard = errorflow_sdk::init(ClientOptions::new().transport(memory.clone()));
    // Another thread holds the root scope's lock for a moment, as every
    // breadcrumb or event outside a request scope does (for microseconds;
    // here long enough to outlast the hook's backtrace, which takes tens of
    // milliseconds in a debug build, and shorter than the hook's wait).
    let (locked, release) = (
        Arc::new(std::sync::Barrier::new(2)),
        std::time::Duration::from_millis(150),
    );
    let holder = {
        let locked = locked.clone();
        std::thread::spawn(move || {
            let root = scope::root_handle();
            let _held = root.lock();
            locked.wait();
            std::thread::sleep(release);
        })
    };
    locked.wait();
    let mut request = Scope::new();
    request.set_tag("route", "/checkout");
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        scope::with_thread_scope(request, || panic!("checkout exploded"))
    }));
    assert!(panicked.is_err());
    holder.join().unwrap();
    drop(guard);
    let events = memory.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].message.as_deref(), Some("checkout exploded"));
    assert_eq!(
        events[0].tags["route"], "/checkout",
        "the panic keeps its scope"
    );
}
