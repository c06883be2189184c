//! The labelled triage benchmark's incidents: kinds of incidents from
//! public postmortems and on-call practice, each a small generator of
//! realistic events in one of several SDK shapes, with an urgency tier
//! (1 page now, 2 fix today, 3 this week, 4 backlog) and the reason.
//! Volume is deliberately unrelated to urgency.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

/// The wire an incident's events arrive on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sdk {
    /// sentry-python through `POST /api/{project}/store/`.
    PythonStore,
    /// @sentry/node through an envelope.
    NodeEnvelope,
    /// sentry-java through an envelope.
    JavaEnvelope,
    /// The seed's `POST /errors/custom`.
    Custom,
    /// errorflow's own SDK batch (`POST /api/v1/events`).
    Rust,
}

/// When the events happen.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// `n` events in the last `hours` hours: a new incident.
    New { n: usize, hours: i64 },
    /// `n` events spread over `days` days up to now.
    Steady { n: usize, days: i64 },
    /// `base` events over `days` days, then `burst` in the last hour.
    Spike {
        base: usize,
        burst: usize,
        days: i64,
    },
    /// `n` events over `days` days, none in the last 8 hours.
    Fading { n: usize, days: i64 },
    /// `old` events days ago, resolved, then `new` in the last 2 hours in a new release.
    Regression { old: usize, new: usize },
}

impl Shape {
    pub fn total(self) -> usize {
        match self {
            Shape::New { n, .. } | Shape::Steady { n, .. } | Shape::Fading { n, .. } => n,
            Shape::Spike { base, burst, .. } => base + burst,
            Shape::Regression { old, new } => old + new,
        }
    }

    /// The same shape with at most about `cap` events (quick mode).
    pub fn capped(self, cap: usize) -> Shape {
        let c = |n: usize, total: usize| -> usize {
            if total <= cap {
                n
            } else {
                ((n * cap) / total).max(1)
            }
        };
        let t = self.total();
        match self {
            Shape::New { n, hours } => Shape::New { n: c(n, t), hours },
            Shape::Steady { n, days } => Shape::Steady { n: c(n, t), days },
            Shape::Fading { n, days } => Shape::Fading { n: c(n, t), days },
            Shape::Spike { base, burst, days } => Shape::Spike {
                base: c(base, t),
                burst: c(burst, t).max(5),
                days,
            },
            Shape::Regression { old, new } => Shape::Regression {
                old: c(old, t),
                new: c(new, t),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub tier: u8,
    pub reason: &'static str,
    pub sdk: Sdk,
    pub service: &'static str,
    pub env: &'static str,
    /// Another environment a few events come from (noise).
    pub other_env: Option<&'static str>,
    pub release: &'static str,
    pub level: &'static str,
    pub error_type: &'static str,
    /// Message variants; `{id}` and `{n}` become varying identifiers and numbers.
    pub messages: &'static [&'static str],
    /// `(method, route, status)` of the request, when there is one.
    pub request: Option<(&'static str, &'static str, u16)>,
    /// Extra request paths some events hit (reach across routes).
    pub paths: &'static [&'static str],
    /// In-app frames, outermost first: `(function, file, line)`.
    pub frames: &'static [(&'static str, &'static str, u32)],
    pub handled: bool,
    /// Distinct users among the events (0: none named).
    pub users: usize,
    pub hosts: usize,
    pub breadcrumbs: &'static [&'static str],
    pub shape: Shape,
    /// One in this many events is sent twice (a client retry).
    pub retry_every: usize,
}

fn base() -> Scenario {
    Scenario {
        name: "",
        tier: 0,
        reason: "",
        sdk: Sdk::PythonStore,
        service: "api",
        env: "production",
        other_env: None,
        release: "1.4.2",
        level: "error",
        error_type: "Exception",
        messages: &[],
        request: None,
        paths: &[],
        frames: &[],
        handled: true,
        users: 0,
        hosts: 1,
        breadcrumbs: &[],
        shape: Shape::Steady { n: 10, days: 3 },
        retry_every: 0,
    }
}

/// One event before it is shaped for an SDK.
#[derive(Debug, Clone)]
pub struct Ev {
    pub timestamp: DateTime<Utc>,
    pub env: &'static str,
    pub release: String,
    pub message: String,
    pub user: Option<String>,
    pub host: String,
    pub path: Option<String>,
}

/// A deterministic pseudo-random sequence (no dependency, same events every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

impl Scenario {
    /// The events in two phases: before a resolve (regressions only) and after.
    pub fn events(&self, seed: u64, now: DateTime<Utc>, shape: Shape) -> (Vec<Ev>, Vec<Ev>) {
        let mut rng = Lcg(seed.wrapping_add(17));
        let mut make = |ts: DateTime<Utc>, i: usize, release: &str| -> Ev {
            let template = self.messages[i % self.messages.len().max(1)];
            let id = format!("{:012x}", rng.next() * 7919);
            let n = (rng.next() % 9000 + 100).to_string();
            let env = match self.other_env {
                Some(other) if i % 7 == 3 => other,
                _ => self.env,
            };
            let path = if !self.paths.is_empty() && i % 2 == 1 {
                Some(self.paths[i % self.paths.len()].to_string())
            } else {
                self.request.map(|r| r.1.to_string())
            };
            Ev {
                timestamp: ts,
                env,
                release: release.to_string(),
                message: template.replace("{id}", &id).replace("{n}", &n),
                user: (self.users > 0).then(|| format!("user-{}", i % self.users)),
                host: format!("{}-{}", self.service, i % self.hosts.max(1)),
                path,
            }
        };
        let window = |n: usize, oldest: Duration, newest: Duration| -> Vec<DateTime<Utc>> {
            (0..n)
                .map(|i| {
                    let f = if n <= 1 {
                        1.0
                    } else {
                        i as f64 / (n - 1) as f64
                    };
                    let span = (oldest - newest).num_seconds() as f64;
                    now - oldest + Duration::seconds((span * f) as i64)
                })
                .collect()
        };
        let mut before = Vec::new();
        let mut after = Vec::new();
        let mut push = |out: &mut Vec<Ev>, ts: Vec<DateTime<Utc>>, release: &str, start: usize| {
            for (k, t) in ts.into_iter().enumerate() {
                let ev = make(t, start + k, release);
                if self.retry_every > 0 && (start + k) % self.retry_every == 0 {
                    let mut again = ev.clone();
                    again.timestamp = ev.timestamp + Duration::seconds(2);
                    out.push(ev);
                    out.push(again);
                } else {
                    out.push(ev);
                }
            }
        };
        match shape {
            Shape::New { n, hours } => push(
                &mut after,
                window(n, Duration::hours(hours), Duration::minutes(5)),
                self.release,
                0,
            ),
            Shape::Steady { n, days } => push(
                &mut after,
                window(n, Duration::days(days), Duration::minutes(10)),
                self.release,
                0,
            ),
            Shape::Fading { n, days } => push(
                &mut after,
                window(n, Duration::days(days), Duration::hours(8)),
                self.release,
                0,
            ),
            Shape::Spike { base, burst, days } => {
                push(
                    &mut after,
                    window(base, Duration::days(days), Duration::hours(2)),
                    self.release,
                    0,
                );
                push(
                    &mut after,
                    window(burst, Duration::minutes(50), Duration::minutes(1)),
                    self.release,
                    base,
                );
            }
            Shape::Regression { old, new } => {
                push(
                    &mut before,
                    window(old, Duration::days(5), Duration::days(3)),
                    "1.3.9",
                    0,
                );
                push(
                    &mut after,
                    window(new, Duration::hours(2), Duration::minutes(2)),
                    self.release,
                    old,
                );
            }
        }
        (before, after)
    }

    fn frames_json(&self, platform: &str) -> Vec<Value> {
        let mut frames = vec![json!({
            "function": match platform { "java" => "java.lang.Thread.run", "node" => "processTicksAndRejections", _ => "run" },
            "module": match platform { "java" => "java.lang.Thread", _ => "runtime" },
            "filename": match platform { "java" => "Thread.java", "node" => "node:internal/process/task_queues", _ => "threading.py" },
            "lineno": 833, "in_app": false
        })];
        for (function, file, line) in self.frames {
            frames.push(json!({
                "function": function, "filename": file, "abs_path": format!("/srv/app/{file}"),
                "lineno": line, "in_app": true
            }));
        }
        frames
    }

    fn breadcrumbs_json(&self, ts: DateTime<Utc>) -> Vec<Value> {
        self.breadcrumbs
            .iter()
            .enumerate()
            .map(|(i, m)| {
                json!({"timestamp": (ts - Duration::seconds(10 - i as i64)).timestamp() as f64,
                       "category": "log", "level": "info", "message": m})
            })
            .collect()
    }

    /// The request for one event: `(path, content type, body)`.
    pub fn request_for(&self, ev: &Ev, project_id: i64) -> (String, &'static str, Vec<u8>) {
        let event_id = uuid::Uuid::new_v4().simple().to_string();
        let (method, status) = self.request.map_or(("GET", 0), |r| (r.0, r.2));
        let url = ev
            .path
            .as_ref()
            .map(|p| format!("https://{}.example.com{p}", self.service));
        let exception_value = ev.message.clone();
        match self.sdk {
            Sdk::PythonStore | Sdk::NodeEnvelope | Sdk::JavaEnvelope => {
                let platform = match self.sdk {
                    Sdk::PythonStore => "python",
                    Sdk::NodeEnvelope => "node",
                    _ => "java",
                };
                let mut event = json!({
                    "event_id": event_id,
                    "timestamp": ev.timestamp.timestamp() as f64 + 0.25,
                    "platform": platform,
                    "level": self.level,
                    "logger": format!("{}.{}", self.service, platform),
                    "server_name": ev.host,
                    "release": ev.release,
                    "environment": ev.env,
                    "tags": {"service": self.service},
                    "breadcrumbs": {"values": self.breadcrumbs_json(ev.timestamp)},
                    "sdk": {"name": format!("sentry.{platform}"), "version": "2.19.0"},
                });
                if self.frames.is_empty() {
                    event["message"] =
                        json!({"formatted": format!("{}: {}", self.error_type, ev.message)});
                } else {
                    event["exception"] = json!({"values": [{
                        "type": self.error_type, "value": exception_value,
                        "module": if platform == "java" { json!("com.example") } else { Value::Null },
                        "mechanism": {"type": if self.handled { "logging" } else { "excepthook" }, "handled": self.handled},
                        "stacktrace": {"frames": self.frames_json(platform)}
                    }]});
                }
                if let Some(url) = url {
                    event["request"] = json!({"method": method, "url": url});
                    if status > 0 {
                        event["tags"]["http.status_code"] = json!(status.to_string());
                    }
                }
                if let Some(u) = &ev.user {
                    event["user"] = json!({"id": u, "ip_address": "203.0.113.9"});
                }
                if self.sdk == Sdk::PythonStore {
                    (
                        format!("/api/{project_id}/store/"),
                        "application/json",
                        event.to_string().into_bytes(),
                    )
                } else {
                    let payload = event.to_string();
                    let body = format!(
                        "{}\n{}\n{payload}\n",
                        json!({"event_id": event_id}),
                        json!({"type": "event", "length": payload.len()})
                    );
                    (
                        format!("/api/{project_id}/envelope/"),
                        "application/x-sentry-envelope",
                        body.into_bytes(),
                    )
                }
            }
            Sdk::Custom => {
                let mut tags = json!({"host": ev.host});
                if let Some(u) = &ev.user {
                    tags["user"] = json!(u);
                }
                if status > 0 {
                    tags["status_code"] = json!(status.to_string());
                }
                let body = json!({
                    "service": self.service, "error_type": self.error_type,
                    "message": ev.message, "path": ev.path.clone().unwrap_or_default(),
                    "env": ev.env, "release": ev.release, "level": self.level,
                    "timestamp": ev.timestamp, "tags": tags,
                });
                (
                    "/errors/custom".into(),
                    "application/json",
                    body.to_string().into_bytes(),
                )
            }
            Sdk::Rust => {
                let mut event = json!({
                    "event_id": uuid::Uuid::new_v4(),
                    "timestamp": ev.timestamp,
                    "level": self.level,
                    "platform": "rust",
                    "service": self.service,
                    "environment": ev.env,
                    "release": ev.release,
                    "host": ev.host,
                    "message": format!("{}: {}", self.error_type, ev.message),
                    "breadcrumbs": self.breadcrumbs.iter().map(|m| json!({"category": "log", "level": "info", "message": m})).collect::<Vec<_>>(),
                });
                if !self.frames.is_empty() {
                    event["exception"] = json!([{
                        "type": self.error_type, "value": exception_value,
                        "mechanism": if self.handled { "tracing" } else { "panic" }, "handled": self.handled,
                        "stacktrace": {"frames": self.frames_json("rust")}
                    }]);
                }
                if let Some(p) = &ev.path {
                    event["request"] = json!({"method": method, "url": p, "route": p,
                        "status": if status > 0 { json!(status) } else { Value::Null }});
                }
                if let Some(u) = &ev.user {
                    event["user"] = json!({"id": u});
                }
                (
                    "/api/v1/events".into(),
                    "application/json",
                    json!({"events": [event]}).to_string().into_bytes(),
                )
            }
        }
    }
}

macro_rules! scenario {
    ($($field:ident : $value:expr),* $(,)?) => {
        Scenario { $($field: $value,)* ..base() }
    };
}

/// The labelled incidents.
pub fn scenarios() -> Vec<Scenario> {
    use Sdk::*;
    use Shape::*;
    vec![
        // ---------------- Tier 1: page now ----------------
        scenario!(name: "db pool exhausted at checkout", tier: 1,
            reason: "every checkout request waits for a connection and fails",
            sdk: PythonStore, service: "checkout", error_type: "TimeoutError",
            messages: &["QueuePool limit of size 20 overflow 10 reached, connection timed out, timeout 30.00"],
            request: Some(("POST", "/api/orders", 500)), paths: &["/api/orders", "/api/cart", "/api/payments"],
            frames: &[("create_order", "checkout/views.py", 88), ("get_session", "checkout/db.py", 31)],
            users: 40, hosts: 4, shape: Spike { base: 5, burst: 60, days: 2 }, retry_every: 5),
        scenario!(name: "node worker out of memory crash loop", tier: 1,
            reason: "the API process is OOM-killed and restarts; few events because it dies",
            sdk: NodeEnvelope, service: "gateway", level: "fatal", error_type: "Error",
            messages: &["FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"],
            frames: &[("handleUpload", "src/upload.js", 142)], handled: false, hosts: 3,
            shape: New { n: 4, hours: 1 }),
        scenario!(name: "ledger imbalance after transfer", tier: 1,
            reason: "money no longer adds up; quiet but every minute adds divergent records",
            sdk: PythonStore, service: "ledger", error_type: "AssertionError",
            messages: &["ledger imbalance: debits 10420.00 != credits 10400.00 for batch {id}"],
            frames: &[("post_transfer", "ledger/posting.py", 210), ("check_balanced", "ledger/invariants.py", 44)],
            users: 1, shape: New { n: 2, hours: 3 }),
        scenario!(name: "duplicate shipment created", tier: 1,
            reason: "orders ship twice: a retry without idempotency; real money lost",
            sdk: JavaEnvelope, service: "fulfilment", error_type: "com.example.DuplicateShipmentException",
            messages: &["order {n} already shipped; second shipment {id} created by retry"],
            frames: &[("ShipmentService.ship", "ShipmentService.java", 97)], users: 3,
            shape: New { n: 3, hours: 5 }),
        scenario!(name: "postgres volume full", tier: 1,
            reason: "writes fail everywhere once the disk is full",
            sdk: Custom, service: "orders-db-writer", error_type: "OperationalError",
            messages: &["could not extend file \"base/16384/2619\": No space left on device"],
            request: Some(("POST", "/internal/flush", 500)), hosts: 1, shape: New { n: 6, hours: 1 }),
        scenario!(name: "mTLS client certificate expired", tier: 1,
            reason: "service-to-service calls all fail the TLS handshake",
            sdk: JavaEnvelope, service: "payments", error_type: "javax.net.ssl.SSLHandshakeException",
            messages: &["PKIX path validation failed: java.security.cert.CertPathValidatorException: validity check failed: certificate expired on 20261207235959GMT+00:00"],
            frames: &[("LedgerClient.post", "LedgerClient.java", 61)], hosts: 4, users: 12,
            shape: Spike { base: 0, burst: 40, days: 1 }),
        scenario!(name: "payment provider DNS failure", tier: 1,
            reason: "every payment call fails to resolve the provider's host",
            sdk: NodeEnvelope, service: "payments", error_type: "Error",
            messages: &["getaddrinfo ENOTFOUND api.payments-provider.example"],
            request: Some(("POST", "/v1/charges", 502)),
            frames: &[("createCharge", "src/providers/charge.js", 77)], users: 30, hosts: 3,
            shape: Spike { base: 2, burst: 120, days: 1 }, retry_every: 4),
        scenario!(name: "schema drift after deploy", tier: 1,
            reason: "code needs a column the migration never added; every order page fails",
            sdk: PythonStore, service: "shop", error_type: "ProgrammingError",
            messages: &["column orders.discount_code does not exist\nLINE 1: SELECT orders.id, orders.discount_code FROM orders WHERE ..."],
            request: Some(("GET", "/orders/{id}", 500)), paths: &["/orders/{id}", "/account/orders"],
            frames: &[("order_detail", "shop/views/orders.py", 54)], users: 25, release: "2.7.0",
            shape: New { n: 50, hours: 1 }),
        scenario!(name: "session redis unreachable", tier: 1,
            reason: "no session store: nobody can stay signed in",
            sdk: Rust, service: "web", error_type: "RedisError",
            messages: &["Connection refused (os error 111) connecting to redis://sessions:6379"],
            request: Some(("GET", "/dashboard", 500)), paths: &["/dashboard", "/settings", "/billing"],
            frames: &[("web::session::load", "src/session.rs", 48)], users: 60, hosts: 5,
            shape: Spike { base: 10, burst: 200, days: 2 }),
        scenario!(name: "login broken: JWKS unreachable", tier: 1,
            reason: "signing keys cannot be fetched; every sign-in fails",
            sdk: NodeEnvelope, service: "auth", error_type: "JwksError",
            messages: &["Unable to fetch signing keys from https://idp.example.com/.well-known/jwks.json: ETIMEDOUT"],
            request: Some(("POST", "/login", 500)), frames: &[("verifyToken", "src/jwt.js", 33)],
            users: 25, shape: New { n: 30, hours: 1 }),
        scenario!(name: "worker cannot import after deploy", tier: 1,
            reason: "the new release crashes at start: background jobs stopped",
            sdk: PythonStore, service: "worker", level: "fatal", error_type: "ModuleNotFoundError",
            messages: &["No module named 'invoices.tasks_v2'"], frames: &[("<module>", "worker/celery.py", 12)],
            handled: false, hosts: 2, release: "3.1.0", shape: New { n: 5, hours: 1 }),
        scenario!(name: "kafka brokers unavailable", tier: 1,
            reason: "no events are consumed or produced",
            sdk: PythonStore, service: "events", error_type: "NoBrokersAvailable",
            messages: &["NoBrokersAvailable"], frames: &[("start_consumer", "events/consumer.py", 22)],
            hosts: 3, shape: New { n: 25, hours: 2 }),
        scenario!(name: "customer charged twice", tier: 1,
            reason: "a double charge is a customer-visible money error",
            sdk: Custom, service: "billing", error_type: "DoubleChargeDetected",
            messages: &["customer cus_{id} charged twice for invoice inv_{id}"], users: 1,
            shape: New { n: 1, hours: 2 }),
        scenario!(name: "sqlite database full", tier: 1,
            reason: "the edge store cannot write anything",
            sdk: Rust, service: "edge-cache", error_type: "SqliteError",
            messages: &["database or disk is full"], frames: &[("edge::store::put", "src/store.rs", 120)],
            hosts: 1, shape: New { n: 3, hours: 1 }),
        scenario!(name: "go service concurrent map writes", tier: 1,
            reason: "the process crashes on a data race and restarts in a loop",
            sdk: Custom, service: "router", level: "fatal", error_type: "fatal",
            messages: &["fatal error: concurrent map writes"], hosts: 3,
            shape: New { n: 3, hours: 1 }),
        // ---------------- Tier 2: fix today ----------------
        scenario!(name: "NPE in new checkout release", tier: 2,
            reason: "a new bug breaks checkout for some customers",
            sdk: JavaEnvelope, service: "checkout", error_type: "java.lang.NullPointerException",
            messages: &["Cannot invoke \"com.example.Address.getCountry()\" because \"shipping\" is null"],
            request: Some(("POST", "/checkout", 500)), frames: &[("CheckoutController.submit", "CheckoutController.java", 118)],
            users: 5, release: "2.3.0", shape: New { n: 15, hours: 4 }),
        scenario!(name: "TypeError on cart page", tier: 2,
            reason: "a front-end bug breaks the cart for many users",
            sdk: NodeEnvelope, service: "storefront", error_type: "TypeError",
            messages: &["Cannot read properties of undefined (reading 'price')"],
            request: Some(("GET", "/cart", 500)), frames: &[("renderCart", "src/cart.js", 41)],
            users: 35, release: "5.2.0", shape: New { n: 60, hours: 6 }),
        scenario!(name: "TLS certificate expires in 3 days", tier: 2,
            reason: "will be an outage in days; renew today",
            sdk: Custom, service: "cert-monitor", level: "warning", error_type: "CertificateExpiring",
            messages: &["certificate for api.example.com expires in 3 days"], shape: Steady { n: 2, days: 1 }),
        scenario!(name: "disk almost full on db host", tier: 2,
            reason: "fill rate says full tomorrow",
            sdk: Custom, service: "db-monitor", level: "warning", error_type: "DiskSpace",
            messages: &["disk usage at 92% on /var/lib/postgresql"], shape: Steady { n: 4, days: 1 }),
        scenario!(name: "KeyError regression in 1.8.1", tier: 2,
            reason: "a resolved bug came back with the new release",
            sdk: PythonStore, service: "profile", error_type: "KeyError",
            messages: &["'preferred_locale'"], request: Some(("GET", "/profile", 500)),
            frames: &[("profile_view", "profile/views.py", 77)], users: 3, release: "1.8.1",
            shape: Regression { old: 6, new: 8 }),
        scenario!(name: "webhook signatures all fail", tier: 2,
            reason: "a rotated secret: payment webhooks are rejected and state drifts",
            sdk: PythonStore, service: "payments", error_type: "SignatureVerificationError",
            messages: &["No signatures found matching the expected signature for payload"],
            request: Some(("POST", "/webhooks/stripe", 400)), frames: &[("stripe_webhook", "payments/webhooks.py", 29)],
            shape: New { n: 20, hours: 5 }),
        scenario!(name: "search upstream 502 spike", tier: 2,
            reason: "search degrades badly; a dependency misbehaves",
            sdk: Custom, service: "search-proxy", error_type: "UpstreamError",
            messages: &["upstream returned 502 Bad Gateway from search-backend"],
            request: Some(("GET", "/search", 502)), users: 20,
            shape: Spike { base: 20, burst: 70, days: 2 }),
        scenario!(name: "IndexError in invoice PDF", tier: 2,
            reason: "customers cannot download invoices since the release",
            sdk: PythonStore, service: "billing", error_type: "IndexError",
            messages: &["list index out of range"], request: Some(("GET", "/invoices/{id}/pdf", 500)),
            frames: &[("render_invoice", "billing/pdf.py", 133)], users: 4, shape: New { n: 7, hours: 8 }),
        scenario!(name: "rust unwrap on None in orders", tier: 2,
            reason: "a new panic on the order path",
            sdk: Rust, service: "orders", error_type: "panic",
            messages: &["called `Option::unwrap()` on a `None` value"], request: Some(("POST", "/orders", 500)),
            frames: &[("orders::api::create", "src/api.rs", 212)], handled: false, users: 3,
            shape: New { n: 6, hours: 3 }),
        scenario!(name: "too many open files", tier: 2,
            reason: "a descriptor leak; hosts fail soon",
            sdk: Rust, service: "ingest", error_type: "IoError",
            messages: &["Too many open files (os error 24)"], frames: &[("ingest::accept", "src/server.rs", 90)],
            hosts: 3, shape: Steady { n: 12, days: 1 }),
        scenario!(name: "LLM quota exhausted", tier: 2,
            reason: "a paid feature is down until the quota is raised",
            sdk: PythonStore, service: "assistant", error_type: "RateLimitError",
            messages: &["You exceeded your current quota, please check your plan and billing details. insufficient_quota"],
            frames: &[("complete", "assistant/llm.py", 51)], users: 15, shape: New { n: 40, hours: 6 }),
        scenario!(name: "payment constraint refused write", tier: 2,
            reason: "the database stopped a negative balance: a money bug",
            sdk: PythonStore, service: "wallet", error_type: "IntegrityError",
            messages: &["new row for relation \"wallets\" violates check constraint \"wallets_balance_nonnegative\""],
            frames: &[("debit", "wallet/service.py", 66)], users: 2, shape: Steady { n: 5, days: 2 }),
        scenario!(name: "staging pool exhausted", tier: 3,
            reason: "staging outage blocks QA but no customer",
            sdk: PythonStore, service: "checkout", env: "staging", error_type: "TimeoutError",
            messages: &["QueuePool limit of size 5 overflow 0 reached, connection timed out"],
            frames: &[("get_session", "checkout/db.py", 31)], shape: New { n: 30, hours: 2 }),
        scenario!(name: "unhandled rejection crashes worker", tier: 2,
            reason: "an image worker dies on some inputs and restarts",
            sdk: NodeEnvelope, service: "images", level: "fatal", error_type: "Error",
            messages: &["Worker process exited with code 1 after unhandled rejection"],
            frames: &[("resize", "src/resize.js", 18)], handled: false,
            shape: Steady { n: 4, days: 2 }),
        scenario!(name: "auth provider down for SSO", tier: 1,
            reason: "enterprise users cannot sign in at all",
            sdk: Custom, service: "sso", error_type: "OIDCError",
            messages: &["identity provider unavailable: okta returned 503"], users: 18,
            request: Some(("GET", "/sso/callback", 502)), shape: New { n: 22, hours: 1 }),
        // ---------------- Tier 3: this week ----------------
        scenario!(name: "recommendations timeout with fallback", tier: 3,
            reason: "the page still renders without recommendations",
            sdk: NodeEnvelope, service: "storefront", level: "warning", error_type: "TimeoutError",
            messages: &["recommendations request timed out after 800ms, using fallback"],
            frames: &[("fetchRecs", "src/recs.js", 25)], users: 80, shape: Steady { n: 150, days: 3 }),
        scenario!(name: "GitHub API rate limited", tier: 3,
            reason: "a sync job slows down and retries",
            sdk: PythonStore, service: "sync", level: "warning", error_type: "RateLimitExceeded",
            messages: &["403 API rate limit exceeded for installation {n}; retrying after reset"],
            frames: &[("sync_repos", "sync/github.py", 88)], shape: Steady { n: 80, days: 3 }),
        scenario!(name: "slow query warnings", tier: 3,
            reason: "latency creeps but nothing fails",
            sdk: Custom, service: "reports", level: "warning", error_type: "SlowQuery",
            messages: &["slow query took {n}ms: SELECT * FROM events WHERE ..."],
            shape: Steady { n: 300, days: 5 }),
        scenario!(name: "ZeroDivisionError in export", tier: 3,
            reason: "one report export fails for one user",
            sdk: PythonStore, service: "reports", error_type: "ZeroDivisionError",
            messages: &["division by zero"], request: Some(("GET", "/reports/export", 500)),
            frames: &[("conversion_rate", "reports/metrics.py", 19)], users: 1, shape: Steady { n: 2, days: 4 }),
        scenario!(name: "AttributeError in admin", tier: 3,
            reason: "an internal admin page is broken",
            sdk: PythonStore, service: "admin", error_type: "AttributeError",
            messages: &["'NoneType' object has no attribute 'email'"], request: Some(("GET", "/admin/users/{id}", 500)),
            frames: &[("user_admin", "admin/views.py", 140)], users: 1, shape: Steady { n: 6, days: 5 }),
        scenario!(name: "partner feed JSON parse errors", tier: 3,
            reason: "one partner sends malformed data; import skips it",
            sdk: Rust, service: "importer", error_type: "serde_json::Error",
            messages: &["expected value at line 1 column {n}"], frames: &[("importer::feed::parse", "src/feed.rs", 55)],
            shape: Steady { n: 20, days: 4 }),
        scenario!(name: "staging NPE in new release", tier: 3,
            reason: "caught before production; fix before shipping",
            sdk: JavaEnvelope, service: "checkout", env: "staging", error_type: "java.lang.NullPointerException",
            messages: &["Cannot invoke \"String.length()\" because \"code\" is null"],
            frames: &[("PromoService.apply", "PromoService.java", 44)], release: "2.4.0-rc1",
            shape: New { n: 10, hours: 5 }),
        scenario!(name: "certificate expires in 3 weeks", tier: 3,
            reason: "there is time; schedule the renewal",
            sdk: Custom, service: "cert-monitor", level: "warning", error_type: "CertificateExpiring",
            messages: &["certificate for cdn.example.com expires in 21 days"], shape: Steady { n: 1, days: 1 }),
        scenario!(name: "retry warnings to email provider", tier: 3,
            reason: "retries succeed; watch the trend",
            sdk: PythonStore, service: "mailer", level: "warning", error_type: "SMTPServerDisconnected",
            messages: &["Connection unexpectedly closed; retrying (attempt 2 of 5)"],
            frames: &[("send", "mailer/smtp.py", 71)], shape: Steady { n: 100, days: 3 }),
        scenario!(name: "deadlocks retried in order updates", tier: 3,
            reason: "transactions retry and succeed; contention to fix",
            sdk: JavaEnvelope, service: "orders", level: "warning", error_type: "org.postgresql.util.PSQLException",
            messages: &["ERROR: deadlock detected\n  Detail: Process {n} waits for ShareLock on transaction {n}"],
            frames: &[("OrderRepository.updateStatus", "OrderRepository.java", 202)], shape: Steady { n: 25, days: 3 }),
        scenario!(name: "staging out of memory", tier: 3,
            reason: "staging box is undersized; no customer impact",
            sdk: PythonStore, service: "analytics", env: "staging", level: "fatal", error_type: "MemoryError",
            messages: &["MemoryError"], frames: &[("aggregate", "analytics/jobs.py", 90)], handled: false,
            shape: Steady { n: 3, days: 2 }),
        scenario!(name: "nightly job time limit", tier: 3,
            reason: "a batch job is slow; rerun works",
            sdk: PythonStore, service: "worker", error_type: "SoftTimeLimitExceeded",
            messages: &["SoftTimeLimitExceeded()"], frames: &[("rebuild_search_index", "worker/tasks.py", 140)],
            shape: Steady { n: 3, days: 3 }),
        scenario!(name: "CSV import ValueError for one customer", tier: 3,
            reason: "one customer's file has a date format we do not read",
            sdk: PythonStore, service: "imports", error_type: "ValueError",
            messages: &["time data '31/12/2026' does not match format '%Y-%m-%d'"],
            frames: &[("parse_row", "imports/csv.py", 38)], users: 1, shape: Steady { n: 5, days: 2 }),
        scenario!(name: "inventory circuit breaker open", tier: 3,
            reason: "stock shows cached values for a while",
            sdk: JavaEnvelope, service: "catalog", level: "warning", error_type: "io.github.resilience4j.circuitbreaker.CallNotPermittedException",
            messages: &["CircuitBreaker 'inventory' is OPEN and does not permit further calls"],
            frames: &[("StockClient.get", "StockClient.java", 30)], users: 10, shape: Steady { n: 40, days: 2 }),
        scenario!(name: "admin tool assertion fading", tier: 3,
            reason: "rare bug in a rarely used tool, already fading",
            sdk: Rust, service: "backoffice", error_type: "panic",
            messages: &["assertion failed: rows.len() <= page_size"], frames: &[("backoffice::export", "src/export.rs", 71)],
            handled: false, shape: Fading { n: 4, days: 4 }),
        scenario!(name: "flaky third-party geocoder 503", tier: 3,
            reason: "addresses fall back to manual entry",
            sdk: Custom, service: "geo", level: "warning", error_type: "GeocoderUnavailable",
            messages: &["geocoder timed out; falling back to manual address entry"], users: 12,
            shape: Steady { n: 35, days: 3 }),
        // ---------------- Tier 4: backlog ----------------
        scenario!(name: "client aborts", tier: 4,
            reason: "users close tabs; nothing is wrong",
            sdk: JavaEnvelope, service: "api", error_type: "org.apache.catalina.connector.ClientAbortException",
            messages: &["java.io.IOException: Broken pipe"], frames: &[("StreamingController.download", "StreamingController.java", 55)],
            users: 90, hosts: 4, shape: Spike { base: 300, burst: 100, days: 3 }),
        scenario!(name: "404 for static assets", tier: 4,
            reason: "old bundles and crawlers ask for missing files",
            sdk: Custom, service: "web", level: "warning", error_type: "NotFound",
            messages: &["Not Found"], request: Some(("GET", "/static/app.3f9a.js.map", 404)),
            paths: &["/favicon.ico", "/static/app.3f9a.js.map", "/apple-touch-icon.png"], shape: Steady { n: 300, days: 3 }),
        scenario!(name: "scanners probing paths", tier: 4,
            reason: "bots; correct rejections",
            sdk: NodeEnvelope, service: "web", level: "warning", error_type: "NotFoundError",
            messages: &["Not Found"], request: Some(("GET", "/wp-login.php", 404)),
            paths: &["/wp-login.php", "/.env", "/phpmyadmin/index.php", "/.git/config"],
            shape: Spike { base: 50, burst: 200, days: 2 }),
        scenario!(name: "card declined", tier: 4,
            reason: "business outcome, not a fault",
            sdk: PythonStore, service: "payments", error_type: "CardError",
            messages: &["Your card was declined. (card_declined)"], request: Some(("POST", "/pay", 402)),
            frames: &[("charge", "payments/stripe.py", 40)], users: 120, shape: Steady { n: 150, days: 3 }),
        scenario!(name: "datetime.utcnow deprecation", tier: 4,
            reason: "upgrade work for the backlog",
            sdk: PythonStore, service: "api", level: "warning", error_type: "DeprecationWarning",
            messages: &["datetime.datetime.utcnow() is deprecated and scheduled for removal in a future version"],
            shape: Steady { n: 500, days: 5 }),
        scenario!(name: "one caller's revoked API key", tier: 4,
            reason: "a single integration uses an old key; theirs to fix",
            sdk: Rust, service: "public-api", level: "warning", error_type: "Unauthorized",
            messages: &["invalid api key: key revoked"], request: Some(("GET", "/v2/items", 401)),
            shape: Spike { base: 150, burst: 50, days: 2 }),
        scenario!(name: "email validation failures", tier: 4,
            reason: "users mistype emails; expected",
            sdk: PythonStore, service: "signup", error_type: "ValidationError",
            messages: &["1 validation error for SignupForm\nemail\n  value is not a valid email address"],
            request: Some(("POST", "/signup", 422)), frames: &[("signup", "signup/views.py", 20)],
            users: 100, shape: Steady { n: 120, days: 3 }),
        scenario!(name: "dev KeyError", tier: 4,
            reason: "a developer's local run",
            sdk: PythonStore, service: "api", env: "development", error_type: "KeyError",
            messages: &["'tenant_id'"], frames: &[("load_tenant", "api/tenants.py", 14)], shape: New { n: 30, hours: 2 }),
        scenario!(name: "dev laptop OOM", tier: 4,
            reason: "a developer ran a big import locally",
            sdk: Rust, service: "importer", env: "dev", level: "fatal", error_type: "panic",
            messages: &["memory allocation of 8589934592 bytes failed"], frames: &[("importer::load_all", "src/load.rs", 12)],
            handled: false, shape: New { n: 2, hours: 3 }),
        scenario!(name: "staging deprecation warnings", tier: 4,
            reason: "noise in a test environment",
            sdk: NodeEnvelope, service: "storefront", env: "staging", level: "warning", error_type: "DeprecationWarning",
            messages: &["(node:1) [DEP0005] DeprecationWarning: Buffer() is deprecated"], shape: Steady { n: 50, days: 3 }),
        scenario!(name: "product not found", tier: 4,
            reason: "stale links to deleted products",
            sdk: PythonStore, service: "shop", level: "warning", error_type: "Product.DoesNotExist",
            messages: &["Product matching query does not exist."], request: Some(("GET", "/p/{slug}", 404)),
            frames: &[("product_detail", "shop/views/products.py", 30)], users: 40, shape: Steady { n: 80, days: 3 }),
        scenario!(name: "go context canceled by client", tier: 4,
            reason: "clients hang up; expected",
            sdk: Custom, service: "router", error_type: "RequestError",
            messages: &["context canceled"], request: Some(("GET", "/v1/stream", 499)), users: 25,
            shape: Spike { base: 60, burst: 30, days: 2 }),
        scenario!(name: "caller rate limited by our API", tier: 4,
            reason: "our limiter does its job on one noisy caller",
            sdk: Rust, service: "public-api", level: "warning", error_type: "TooManyRequests",
            messages: &["rate limit exceeded for api key pk_{id}"], request: Some(("GET", "/v2/search", 429)),
            shape: Steady { n: 70, days: 2 }),
        scenario!(name: "staging validation errors", tier: 4,
            reason: "QA testing bad input",
            sdk: Custom, service: "signup", env: "staging", error_type: "ValidationError",
            messages: &["phone must be a valid E.164 number"], request: Some(("POST", "/signup", 422)),
            shape: Steady { n: 40, days: 3 }),
        scenario!(name: "dev TypeError", tier: 4,
            reason: "local development noise",
            sdk: NodeEnvelope, service: "storefront", env: "local", error_type: "TypeError",
            messages: &["Cannot read properties of null (reading 'map')"], frames: &[("ProductList", "src/list.js", 9)],
            shape: New { n: 10, hours: 4 }),
        scenario!(name: "request aborted by client", tier: 4,
            reason: "uploads cancelled by users",
            sdk: NodeEnvelope, service: "uploads", error_type: "BadRequestError",
            messages: &["request aborted"], request: Some(("POST", "/upload", 400)),
            frames: &[("receiveUpload", "src/upload.js", 60)], users: 30, shape: Steady { n: 60, days: 3 }),
        scenario!(name: "CSRF token missing", tier: 4,
            reason: "expired forms and bots",
            sdk: PythonStore, service: "web", level: "warning", error_type: "CSRFError",
            messages: &["Forbidden (CSRF token missing.): /account/settings"], request: Some(("POST", "/account/settings", 403)),
            users: 10, shape: Steady { n: 30, days: 3 }),
        scenario!(name: "CI database refused", tier: 4,
            reason: "a CI job ran before its database started",
            sdk: PythonStore, service: "api", env: "ci", error_type: "OperationalError",
            messages: &["connection to server at \"localhost\" (127.0.0.1), port 5432 failed: Connection refused"],
            frames: &[("connect", "api/db.py", 10)], shape: New { n: 20, hours: 2 }),
        scenario!(name: "cache miss info logs", tier: 4,
            reason: "informational; the fallback is the design",
            sdk: Custom, service: "catalog", level: "info", error_type: "CacheMiss",
            messages: &["cache miss for product {n}; loaded from database"], shape: Steady { n: 200, days: 2 }),
        scenario!(name: "expired session tokens", tier: 4,
            reason: "users come back after their session expired",
            sdk: NodeEnvelope, service: "api", level: "warning", error_type: "TokenExpiredError",
            messages: &["jwt expired"], request: Some(("GET", "/me", 401)), users: 70,
            frames: &[("authenticate", "src/auth.js", 22)], shape: Steady { n: 100, days: 3 }),
    ]
}
