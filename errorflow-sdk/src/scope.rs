//! Context attached to events: tags, user, request, breadcrumbs.
//!
//! # Which scope is current
//!
//! 1. Inside a future wrapped with [`ScopeFutureExt::with_scope`] (or
//!    [`bind_scope`]), that future's scope. Like a tokio task-local, it is
//!    made current for each poll of the future, so it follows the future
//!    across worker threads and never leaks to other tasks that happen to
//!    run on the same thread.
//! 2. Inside [`with_thread_scope`] (synchronous code), that scope.
//! 3. Otherwise the process-wide root scope.
//!
//! Events get the root scope's data overlaid with the current scope's.
//!
//! **Propagation is explicit.** A task started with `tokio::spawn` or a
//! thread started with `std::thread::spawn` does *not* inherit the scope of
//! the code that spawned it: sentry-rust's thread-local hubs made spawned
//! work inherit (or miss) context by accident. To carry it over, wrap the
//! spawned future:
//!
//! ```
//! use errorflow_sdk::scope::{self, ScopeFutureExt};
//!
//! # async fn demo() {
//! let handle = tokio::spawn(async { /* … */ }.with_scope(scope::current_scope()));
//! # handle.await.unwrap();
//! # }
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::protocol::{Breadcrumb, Event, Level, Request, User};
use crate::record::{convert_level, CrumbFields};

/// Fills in an event's context when it is captured, for context that is
/// dear to build and seldom needed: middleware keeps a request's parts and
/// turns them into a [`Request`] only for the requests that report something.
///
/// It runs while the scope is applied to an event, after the scope's own
/// values, and should only fill fields that are still empty (values already
/// on the event are more specific). It must not use the scope itself.
pub trait EventProcessor: Send + Sync + 'static {
    /// Adds context to `event`.
    fn process(&self, event: &mut Event);
}

#[derive(Clone)]
pub(crate) struct Processor(pub(crate) Arc<dyn EventProcessor>);

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventProcessor")
    }
}

/// Context merged into every event captured while the scope is current.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Boxed, and only once something is set: middleware makes a scope per
    /// request and most requests set nothing, so a fresh scope is small to
    /// build, move and drop.
    data: Option<Box<ScopeData>>,
    breadcrumbs: VecDeque<Crumb>,
    /// The id of a panic event captured inside this scope; a middleware that
    /// catches the unwind uses it to avoid reporting the same panic twice.
    panic_event: Option<uuid::Uuid>,
    /// Set by middleware that catches unwinds: the panic hook then does not
    /// block the (async) thread on a flush, since the process goes on.
    catches_panics: bool,
    /// How many error or fatal events were captured in this scope; lets
    /// middleware skip a redundant "responded 500" event.
    errors_captured: u32,
    processor: Option<Processor>,
}

/// What a scope merges into events, besides breadcrumbs.
#[derive(Debug, Clone, Default)]
struct ScopeData {
    tags: BTreeMap<String, String>,
    extra: BTreeMap<String, serde_json::Value>,
    user: Option<User>,
    request: Option<Request>,
    transaction: Option<String>,
    trace_id: Option<String>,
}

/// The tags of a scope that has none.
static NO_TAGS: BTreeMap<String, String> = BTreeMap::new();

impl Scope {
    fn data_mut(&mut self) -> &mut ScopeData {
        self.data.get_or_insert_default()
    }

    /// An empty scope.
    pub fn new() -> Scope {
        Scope::default()
    }

    /// Sets a searchable tag.
    pub fn set_tag(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.data_mut().tags.insert(key.into(), value.into());
    }

    /// Removes a tag.
    pub fn remove_tag(&mut self, key: &str) {
        if let Some(data) = &mut self.data {
            data.tags.remove(key);
        }
    }

    /// Sets free-form context.
    pub fn set_extra(&mut self, key: impl Into<String>, value: serde_json::Value) {
        self.data_mut().extra.insert(key.into(), value);
    }

    /// Sets (or clears) the affected user.
    pub fn set_user(&mut self, user: Option<User>) {
        if user.is_some() || self.data.is_some() {
            self.data_mut().user = user;
        }
    }

    /// Sets (or clears) the HTTP request being served.
    pub fn set_request(&mut self, request: Option<Request>) {
        if request.is_some() || self.data.is_some() {
            self.data_mut().request = request;
        }
    }

    /// The request being served, if any.
    pub fn request(&self) -> Option<&Request> {
        self.data.as_ref()?.request.as_ref()
    }

    /// Sets the route or operation (`GET /users/{id}`).
    pub fn set_transaction(&mut self, transaction: Option<String>) {
        if transaction.is_some() || self.data.is_some() {
            self.data_mut().transaction = transaction;
        }
    }

    /// Sets the trace id that links events of one request.
    pub fn set_trace_id(&mut self, trace_id: Option<String>) {
        if trace_id.is_some() || self.data.is_some() {
            self.data_mut().trace_id = trace_id;
        }
    }

    /// Sets (or clears) the scope's [`EventProcessor`].
    pub fn set_event_processor(&mut self, processor: Option<Arc<dyn EventProcessor>>) {
        self.processor = processor.map(Processor);
    }

    /// The scope's tags.
    pub fn tags(&self) -> &BTreeMap<String, String> {
        self.data.as_ref().map_or(&NO_TAGS, |data| &data.tags)
    }

    /// Marks the scope as served by code that catches panics (see `errorflow-tower`).
    pub fn set_catches_panics(&mut self, catches: bool) {
        self.catches_panics = catches;
    }

    /// The id of the panic event captured in this scope, if any.
    pub fn panic_event(&self) -> Option<uuid::Uuid> {
        self.panic_event
    }

    /// How many error or fatal events were captured in this scope.
    pub fn errors_captured(&self) -> u32 {
        self.errors_captured
    }

    pub(crate) fn count_error(&mut self) {
        self.errors_captured = self.errors_captured.saturating_add(1);
    }

    pub(crate) fn catches_panics(&self) -> bool {
        self.catches_panics
    }

    pub(crate) fn set_panic_event(&mut self, id: uuid::Uuid) {
        self.panic_event = Some(id);
    }

    /// Adds a breadcrumb, forgetting the oldest beyond `max`.
    pub fn add_breadcrumb(&mut self, breadcrumb: Breadcrumb, max: usize) {
        if max == 0 {
            return;
        }
        while self.breadcrumbs.len() >= max {
            self.breadcrumbs.pop_front();
        }
        self.breadcrumbs.push_back(Crumb::Given(breadcrumb));
    }

    /// Adds a breadcrumb recorded by the tracing layer. When the ring is
    /// full, the oldest recorded breadcrumb's buffers are swapped into
    /// `scratch` for the next one to reuse, so that a busy scope records
    /// breadcrumbs without allocating.
    pub(crate) fn push_recorded(&mut self, scratch: &mut RecordedCrumb, max: usize) {
        if max == 0 {
            return;
        }
        while self.breadcrumbs.len() > max {
            self.breadcrumbs.pop_front();
        }
        if self.breadcrumbs.len() == max {
            if let Some(mut oldest) = self.breadcrumbs.pop_front() {
                if let Crumb::Recorded(slot) = &mut oldest {
                    std::mem::swap(slot, scratch);
                    self.breadcrumbs.push_back(oldest);
                    return;
                }
            }
        }
        self.breadcrumbs
            .push_back(Crumb::Recorded(std::mem::take(scratch)));
    }

    /// The scope's event processor, which [`Client`](crate::Client) runs
    /// when it finishes an event (possibly on the transport's thread).
    pub(crate) fn processor(&self) -> Option<Arc<dyn EventProcessor>> {
        self.processor.as_ref().map(|p| p.0.clone())
    }

    /// Whether [`Scope::apply`] would merge anything.
    pub(crate) fn has_data(&self) -> bool {
        self.data.is_some()
    }

    /// Merges the scope into an event; values already on the event win,
    /// since they are more specific than the scope's. Breadcrumbs are not
    /// merged here (see [`Scope::breadcrumb_snapshot`]), nor is the event
    /// processor run (see [`Scope::processor`]).
    pub(crate) fn apply(&self, event: &mut Event) {
        if let Some(data) = &self.data {
            for (k, v) in &data.tags {
                event.tags.entry(k.clone()).or_insert_with(|| v.clone());
            }
            for (k, v) in &data.extra {
                event.extra.entry(k.clone()).or_insert_with(|| v.clone());
            }
            if event.user.is_none() {
                event.user.clone_from(&data.user);
            }
            if event.request.is_none() {
                event.request.clone_from(&data.request);
            }
            if event.transaction.is_none() {
                event.transaction.clone_from(&data.transaction);
            }
            if event.trace_id.is_none() {
                event.trace_id.clone_from(&data.trace_id);
            }
        }
    }

    /// The scope's breadcrumbs as an event captured now takes them: a copy
    /// made with a few allocations, whatever their number, and converted
    /// to [`Breadcrumb`]s where the event is finished (on the transport's
    /// thread with the HTTP transport). `None` when there are none.
    pub(crate) fn breadcrumb_snapshot(&self) -> Option<BreadcrumbSnapshot> {
        if self.breadcrumbs.is_empty() {
            return None;
        }
        let (mut text, mut values) = (0, 0);
        for crumb in &self.breadcrumbs {
            if let Crumb::Recorded(recorded) = crumb {
                let (t, v) = recorded.fields.sizes();
                text += t;
                values += v;
            }
        }
        let mut fields = CrumbFields::default();
        fields.reserve(text, values);
        let mut crumbs = Vec::with_capacity(self.breadcrumbs.len());
        for crumb in &self.breadcrumbs {
            crumbs.push(match crumb {
                Crumb::Given(given) => SnapshotCrumb::Given(given.clone()),
                Crumb::Recorded(recorded) => {
                    let (message, values) = fields.append(&recorded.fields);
                    SnapshotCrumb::Recorded {
                        metadata: recorded.metadata,
                        timestamp: recorded.timestamp,
                        message,
                        values,
                    }
                }
            });
        }
        Some(BreadcrumbSnapshot { fields, crumbs })
    }
}

/// A scope's breadcrumbs taken by an event: the recorded ones' text and
/// fields copied into one buffer.
#[derive(Debug)]
pub(crate) struct BreadcrumbSnapshot {
    fields: CrumbFields,
    crumbs: Vec<SnapshotCrumb>,
}

#[derive(Debug)]
enum SnapshotCrumb {
    Given(Breadcrumb),
    Recorded {
        metadata: Option<&'static tracing::Metadata<'static>>,
        timestamp: Option<std::time::SystemTime>,
        /// Ranges in the snapshot's buffer.
        message: Option<(u32, u32)>,
        values: (u32, u32),
    },
}

impl BreadcrumbSnapshot {
    /// The breadcrumbs, oldest first.
    pub(crate) fn into_breadcrumbs(self) -> Vec<Breadcrumb> {
        let fields = &self.fields;
        self.crumbs
            .into_iter()
            .map(|crumb| match crumb {
                SnapshotCrumb::Given(given) => given,
                SnapshotCrumb::Recorded {
                    metadata,
                    timestamp,
                    message,
                    values,
                } => Breadcrumb {
                    timestamp: timestamp.map(chrono::DateTime::<chrono::Utc>::from),
                    category: metadata.map(|m| m.target().to_string()),
                    level: metadata.map_or(Level::Debug, |m| convert_level(*m.level())),
                    message: message.map(|range| fields.text_at(range).to_owned()),
                    data: fields
                        .values_at(values)
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                },
            })
            .collect()
    }
}

/// A breadcrumb as kept in a scope: given through the API, or recorded by
/// the tracing layer in a compact form that is converted when an event
/// takes it.
#[derive(Debug, Clone)]
enum Crumb {
    Given(Breadcrumb),
    Recorded(RecordedCrumb),
}

/// A `warn!`/`info!` event as the layer records it: its static metadata,
/// time, message and fields, in buffers that are reused (see
/// [`Scope::push_recorded`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordedCrumb {
    pub(crate) metadata: Option<&'static tracing::Metadata<'static>>,
    /// The clock as read, converted to a date only when an event takes the breadcrumb.
    pub(crate) timestamp: Option<std::time::SystemTime>,
    pub(crate) fields: CrumbFields,
}

/// A shared, mutable scope: what futures and threads are bound to.
#[derive(Debug, Clone, Default)]
pub struct ScopeHandle(Arc<Mutex<Scope>>);

impl ScopeHandle {
    /// Wraps a scope.
    pub fn new(scope: Scope) -> ScopeHandle {
        ScopeHandle(Arc::new(Mutex::new(scope)))
    }

    /// Locks the scope. A poisoned lock is recovered: scope data stays
    /// usable even if a panic happened while it was held. Do not log while
    /// holding the guard: the SDK would wait for this lock to record the
    /// breadcrumb or event. [`configure_scope`] is the way that allows it.
    pub fn lock(&self) -> MutexGuard<'_, Scope> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the scope unless this thread already holds its lock in
    /// [`configure_scope`] (code inside the closure logs): then `None`,
    /// where locking would deadlock. The SDK's own paths lock this way.
    pub(crate) fn lock_unless_held_here(&self) -> Option<MutexGuard<'_, Scope>> {
        (!held_here(self)).then(|| self.lock())
    }

    /// A copy of the scope's current data.
    pub fn snapshot(&self) -> Scope {
        self.lock().clone()
    }

    /// Whether the lock is held right now (by any thread).
    pub(crate) fn is_locked(&self) -> bool {
        matches!(self.0.try_lock(), Err(std::sync::TryLockError::WouldBlock))
    }

    pub(crate) fn ptr_eq(&self, other: &ScopeHandle) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl From<Scope> for ScopeHandle {
    fn from(scope: Scope) -> ScopeHandle {
        ScopeHandle::new(scope)
    }
}

/// What a future (see [`bind_scope`]) or a synchronous call (see
/// [`sync_scope`]) is bound to: a scope, or the means to make one on first
/// use. Middleware binds a lazy one to every request, so that a request
/// whose code never sets context, records a breadcrumb or captures an event
/// pays for no scope at all.
#[derive(Debug, Default)]
pub struct TaskScope {
    handle: OnceLock<ScopeHandle>,
    /// For a scope made on first use: its event processor, and whether the
    /// code bound to it catches panics (see [`Scope::set_catches_panics`]).
    processor: Option<Processor>,
    catches_panics: bool,
}

impl TaskScope {
    /// A binding whose scope is made on first use, with `processor` as its
    /// event processor and [`Scope::set_catches_panics`] set to `catches_panics`.
    pub fn lazy(processor: Option<Arc<dyn EventProcessor>>, catches_panics: bool) -> TaskScope {
        TaskScope {
            handle: OnceLock::new(),
            processor: processor.map(Processor),
            catches_panics,
        }
    }

    /// The bound scope, made now if it was not yet.
    pub fn handle(&self) -> &ScopeHandle {
        self.handle.get_or_init(|| {
            ScopeHandle::new(Scope {
                processor: self.processor.clone(),
                catches_panics: self.catches_panics,
                ..Scope::default()
            })
        })
    }

    /// The bound scope if it was made: `None` means nothing used it.
    pub fn made(&self) -> Option<&ScopeHandle> {
        self.handle.get()
    }
}

impl From<ScopeHandle> for TaskScope {
    fn from(handle: ScopeHandle) -> TaskScope {
        TaskScope {
            handle: OnceLock::from(handle),
            processor: None,
            catches_panics: false,
        }
    }
}

impl From<Scope> for TaskScope {
    fn from(scope: Scope) -> TaskScope {
        TaskScope::from(ScopeHandle::new(scope))
    }
}

thread_local! {
    /// The binding of the future being polled (or of the synchronous call
    /// running) on this thread. Each poll of a [`Scoped`] future moves its
    /// binding in and the previous one out, and back when the poll returns,
    /// as tokio's task-locals do, so the binding follows the future across
    /// worker threads and nested bindings see the innermost one. Unlike a
    /// task-local, the binding stays with its owner between polls and after
    /// a panic, where middleware reads it.
    static TASK_SCOPE: RefCell<Option<TaskScope>> = const { RefCell::new(None) };
    /// The scope of [`with_thread_scope`].
    static THREAD_SCOPE: RefCell<Option<ScopeHandle>> = const { RefCell::new(None) };
}

/// Makes `scope` current until dropped, then puts it back into `scope`
/// and restores the previous binding, also when the code in between panics.
/// While the thread is being torn down (its thread-locals destroyed) nothing
/// is bound.
struct Entered<'a> {
    scope: &'a mut TaskScope,
    /// The binding before this one, if this one was made.
    previous: Option<Option<TaskScope>>,
}

fn enter(scope: &mut TaskScope) -> Entered<'_> {
    let bound = std::mem::take(scope);
    let mut bound = Some(bound);
    let previous = TASK_SCOPE
        .try_with(|current| current.replace(bound.take()))
        .ok();
    if let Some(bound) = bound {
        *scope = bound;
    }
    Entered { scope, previous }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        let Some(previous) = self.previous.take() else {
            return;
        };
        if let Ok(Some(bound)) = TASK_SCOPE.try_with(|current| current.replace(previous)) {
            *self.scope = bound;
        }
    }
}

fn root() -> &'static ScopeHandle {
    static ROOT: OnceLock<ScopeHandle> = OnceLock::new();
    ROOT.get_or_init(ScopeHandle::default)
}

/// Runs `f` with the current scope's handle, without cloning it.
pub(crate) fn with_current<R>(f: impl FnOnce(&ScopeHandle) -> R) -> R {
    let mut f = Some(f);
    let bound = TASK_SCOPE.try_with(|current| {
        let current = current.borrow();
        let scope = current.as_ref()?;
        Some((f.take().expect("called once"))(scope.handle()))
    });
    if let Ok(Some(r)) = bound {
        return r;
    }
    let f = f.take().expect("not called yet");
    match thread_scope() {
        Some(handle) => f(&handle),
        None => f(root()),
    }
}

/// The scope that events captured here would use (see the module docs).
pub fn current_handle() -> ScopeHandle {
    let bound = TASK_SCOPE.try_with(|current| {
        let current = current.borrow();
        current.as_ref().map(|scope| scope.handle().clone())
    });
    if let Ok(Some(handle)) = bound {
        return handle;
    }
    if let Some(handle) = thread_scope() {
        return handle;
    }
    root().clone()
}

/// The scope bound by [`with_thread_scope`], if any. While the thread's
/// thread-locals are destroyed, none: code logging from a destructor then
/// reports with the root scope instead of making the SDK panic.
fn thread_scope() -> Option<ScopeHandle> {
    THREAD_SCOPE.try_with(|s| s.borrow().clone()).ok().flatten()
}

pub(crate) fn root_ref() -> &'static ScopeHandle {
    root()
}

/// The process-wide root scope.
pub fn root_handle() -> ScopeHandle {
    root().clone()
}

/// A copy of the current scope's data, to hand to spawned work.
pub fn current_scope() -> Scope {
    current_handle().snapshot()
}

/// Changes the current scope (see the module docs for which one that is).
///
/// ```
/// errorflow_sdk::configure_scope(|scope| {
///     scope.set_tag("tenant", "acme");
/// });
/// ```
///
/// Code inside `f` may log: an `error!` there is reported without the
/// scope being configured (its lock is held), and an `info!` or `warn!`
/// there is not kept as a breadcrumb of it. Calling `configure_scope`
/// again from inside `f` panics instead of deadlocking.
pub fn configure_scope<R>(f: impl FnOnce(&mut Scope) -> R) -> R {
    /// Takes the scope off this thread's list when `f` returns or panics.
    struct Configured;
    impl Drop for Configured {
        fn drop(&mut self) {
            let _ = CONFIGURING.try_with(|held| held.borrow_mut().pop());
        }
    }
    let handle = current_handle();
    // Locking it again would hang this thread for good.
    assert!(
        !held_here(&handle),
        "errorflow_sdk::configure_scope called from inside configure_scope on the same scope; \
         change the scope in the outer closure"
    );
    let mut scope = handle.lock();
    let _ = CONFIGURING.try_with(|held| held.borrow_mut().push(handle.clone()));
    let _configured = Configured;
    f(&mut scope)
}

thread_local! {
    /// The scopes this thread is configuring (inside [`configure_scope`]):
    /// their locks are held here, so the SDK's own paths (breadcrumbs and
    /// events logged from inside the closure) must not take them again,
    /// which would deadlock.
    static CONFIGURING: RefCell<Vec<ScopeHandle>> = const { RefCell::new(Vec::new()) };
}

/// Whether this thread holds `handle`'s lock in [`configure_scope`].
pub(crate) fn held_here(handle: &ScopeHandle) -> bool {
    CONFIGURING
        .try_with(|held| held.borrow().iter().any(|h| h.ptr_eq(handle)))
        .unwrap_or(false)
}

/// Runs `f` with `scope` as the current scope of this thread (synchronous code).
pub fn with_thread_scope<R>(scope: impl Into<ScopeHandle>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<ScopeHandle>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            let _ = THREAD_SCOPE.try_with(|s| *s.borrow_mut() = previous);
        }
    }
    // While the thread's thread-locals are destroyed, `f` runs unbound.
    let Ok(previous) = THREAD_SCOPE.try_with(|s| s.borrow_mut().replace(scope.into())) else {
        return f();
    };
    let _restore = Restore(previous);
    f()
}

/// Runs the synchronous `f` with `scope` as the current task scope; used by
/// middleware so that the synchronous part of `Service::call` sees the
/// request's scope too. The binding, and a scope made in it on first use,
/// stay in `scope`, also when `f` panics.
pub fn sync_scope<R>(scope: &mut TaskScope, f: impl FnOnce() -> R) -> R {
    let _entered = enter(scope);
    f()
}

pin_project_lite::pin_project! {
    /// A future running inside a scope (see [`bind_scope`]). The scope is
    /// also current while the future is dropped, so that what its drop code
    /// reports (a cancelled request, say) has the same context.
    pub struct Scoped<F> {
        // `None` once finished or dropped.
        #[pin]
        future: Option<F>,
        scope: TaskScope,
    }

    impl<F> PinnedDrop for Scoped<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if this.future.is_some() {
                let _entered = enter(this.scope);
                this.future.set(None);
            }
        }
    }
}

impl<F> Scoped<F> {
    /// The future's binding: with [`TaskScope::made`], whether its code made
    /// a scope and what was recorded in it.
    pub fn task_scope(self: Pin<&mut Self>) -> &TaskScope {
        self.project().scope
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let mut this = self.project();
        let _entered = enter(this.scope);
        let future = this
            .future
            .as_mut()
            .as_pin_mut()
            .expect("Scoped future polled after completion");
        let output = future.poll(cx);
        if output.is_ready() {
            // Dropped here, inside the scope, rather than in a second
            // binding when the `Scoped` is dropped.
            this.future.set(None);
        }
        output
    }
}

impl<F> std::fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoped")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Runs `fut` with `scope` as its scope.
pub fn bind_scope<F: Future>(scope: impl Into<TaskScope>, fut: F) -> Scoped<F> {
    Scoped {
        future: Some(fut),
        scope: scope.into(),
    }
}

/// `.with_scope(scope)` on any future.
pub trait ScopeFutureExt: Future + Sized {
    /// Runs the future with `scope` as its scope, wherever it is polled.
    fn with_scope(self, scope: impl Into<TaskScope>) -> Scoped<Self> {
        bind_scope(scope, self)
    }
}

impl<F: Future> ScopeFutureExt for F {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breadcrumb_ring_is_bounded() {
        let mut scope = Scope::new();
        for i in 0..5 {
            scope.add_breadcrumb(
                Breadcrumb {
                    timestamp: None,
                    category: None,
                    level: crate::protocol::Level::Info,
                    message: Some(i.to_string()),
                    data: BTreeMap::new(),
                },
                3,
            );
        }
        let kept: Vec<_> = scope
            .breadcrumb_snapshot()
            .unwrap()
            .into_breadcrumbs()
            .into_iter()
            .map(|b| b.message.unwrap())
            .collect();
        assert_eq!(kept, ["2", "3", "4"]);
    }

    #[test]
    fn thread_scope_is_restored() {
        let mut s = Scope::new();
        s.set_tag("a", "1");
        with_thread_scope(s, || {
            assert_eq!(current_scope().tags()["a"], "1");
        });
        assert!(!current_handle().lock().tags().contains_key("a"));
    }
}
