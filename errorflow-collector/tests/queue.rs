//! Queue mode on the real NATS JetStream (the machine's server, or
//! `ERRORFLOW_TEST_NATS_URL`; a private `nats-server` where the test
//! restarts it) and real Postgres: ingest nodes and writers as separate
//! processes of the real binary. Each test has its own stream, deleted at
//! the end, and its own database.
//!
//! In every case: each event acknowledged with a 2xx is stored exactly
//! once, the incidents' counts add up, and a regression is detected once.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::binary::{command, Backend, Collector};
use serde_json::{json, Value};

const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// How long the stored events may take to match the acknowledged ones.
const DRAIN_DEADLINE: Duration = Duration::from_secs(90);

fn nats_url() -> String {
    std::env::var("ERRORFLOW_TEST_NATS_URL").unwrap_or_else(|_| DEFAULT_NATS_URL.to_string())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A stream name of this test's own; the stream is deleted on drop.
struct Stream {
    name: String,
    url: String,
}

impl Stream {
    fn new(url: &str) -> Stream {
        Stream {
            name: format!("ef_test_{}", uuid::Uuid::new_v4().simple()),
            url: url.to_string(),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // A thread of its own: drop may run inside a runtime.
        let _ = std::thread::spawn(move || {
            runtime().block_on(async {
                let client = async_nats::connect(url.as_str()).await?;
                let js = async_nats::jetstream::new(client);
                js.delete_stream(&name).await?;
                Ok::<_, async_nats::Error>(())
            })
        })
        .join();
    }
}

/// A process of the binary (an ingest node or a writer), killed on drop.
struct Proc {
    child: Option<Child>,
    url: String,
}

impl Proc {
    /// Starts `role` (`serve` or `writer`) on `db` with the queue flags;
    /// returns once it listens (the line it prints with its URL).
    fn start(role: &str, db: &str, nats: &str, stream: &str) -> Proc {
        let mut cmd = command(db);
        cmd.args([role, "--listen", "127.0.0.1:0", "--queue", nats])
            .args(["--queue-stream", stream, "--queue-partitions", "8"])
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let prefix = if role == "writer" {
            "writer: "
        } else {
            "dashboard: "
        };
        let url = common::binary::printed_url(&mut child, prefix);
        let url = url.trim_end_matches("/readyz").to_string();
        Proc {
            child: Some(child),
            url,
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the senders were told: each acknowledged event id, once.
#[derive(Default)]
struct Acked(Mutex<HashSet<String>>);

impl Acked {
    fn ids(&self) -> HashSet<String> {
        self.0.lock().unwrap().clone()
    }
}

/// One event of incident `kind` (a distinct error type per kind).
fn event(kind: usize) -> Value {
    json!({"event_id": uuid::Uuid::new_v4(), "level": "error", "service": "shop",
        "environment": "prod", "exception": [{"type": format!("Failure{kind}"),
        "value": format!("order {} failed", kind * 7),
        "stacktrace": {"frames": [{"function": format!("shop::step{kind}"), "in_app": true, "lineno": 10}]}}]})
}

/// Sends `events` to one of `nodes` as an SDK does: again (to the next
/// node) after a refusal or a connection error, until a 2xx, which is
/// recorded. Returns the statuses of the refusals seen.
async fn send(
    http: &reqwest::Client,
    nodes: &[String],
    key: &str,
    events: Vec<Value>,
    acked: &Acked,
) -> Vec<u16> {
    let mut refused = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for attempt in 0.. {
        assert!(Instant::now() < deadline, "never acknowledged: {refused:?}");
        let node = &nodes[attempt % nodes.len()];
        let answer = http
            .post(format!("{node}/api/v1/events"))
            .header("x-errorflow-key", key)
            .json(&json!({ "events": events }))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => {
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["rejected"], json!([]), "{body}");
                let mut a = acked.0.lock().unwrap();
                for e in &events {
                    a.insert(e["event_id"].as_str().unwrap().to_string());
                }
                return refused;
            }
            Ok(r) => {
                refused.push(r.status().as_u16());
                let wait = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(wait).min(Duration::from_secs(2))).await;
            }
            Err(_) => {
                refused.push(0);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    unreachable!()
}

/// Waits until the stored event ids are the acknowledged ones, then checks
/// that none is stored twice and the incidents' counts add up.
fn assert_stored_exactly(c: &Collector, acked: &HashSet<String>) {
    let deadline = Instant::now() + DRAIN_DEADLINE;
    let stored = loop {
        let stored = c.db.stored_event_ids();
        if stored.len() >= acked.len() || Instant::now() > deadline {
            break stored;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let unique: HashSet<String> = stored.iter().cloned().collect();
    assert_eq!(unique.len(), stored.len(), "an event was stored twice");
    let missing: Vec<&String> = acked.difference(&unique).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events are not stored, e.g. {missing:?}",
        acked.difference(&unique).count()
    );
    assert_eq!(
        unique.len(),
        acked.len(),
        "stored events nobody was told of"
    );
    assert_eq!(c.db.incident_count_sum(), acked.len() as i64);
}

/// Stores one event of incident `kind` through `node` and resolves its
/// incident, so that the load's events of that kind make one regression.
fn resolved_incident(
    c: &Collector,
    rt: &tokio::runtime::Runtime,
    node: &str,
    acked: &Acked,
) -> i64 {
    let http = reqwest::Client::new();
    rt.block_on(send(
        &http,
        &[node.to_string()],
        &c.key,
        vec![event(0)],
        acked,
    ));
    let deadline = Instant::now() + DRAIN_DEADLINE;
    let id = loop {
        if let Some(g) = c.groups().first() {
            break g["id"].as_i64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the first event was never stored"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let r = rt
        .block_on(
            http.post(format!("{node}/api/v1/groups/{id}/resolve"))
                .bearer_auth(&c.token)
                .json(&json!({}))
                .send(),
        )
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.status());
    id
}

fn regressions(c: &Collector, id: i64) -> i64 {
    c.get(&format!("/api/v1/groups/{id}"))["regression_count"]
        .as_i64()
        .unwrap()
}

/// Two ingest nodes and two writers on one Postgres; clients send batches
/// (some twice, as a client retrying a lost answer would) to both nodes;
/// one writer is killed with SIGKILL mid-load and started again.
#[test]
fn two_nodes_two_writers_and_a_killed_writer_lose_and_duplicate_nothing() {
    let nats = nats_url();
    let stream = Stream::new(&nats);
    let mut c = Collector::prepare(Backend::Postgres);
    let a = Proc::start("serve", &c.db.url, &nats, &stream.name);
    let b = Proc::start("serve", &c.db.url, &nats, &stream.name);
    c.base = a.url.clone();
    let mut w1 = Proc::start("writer", &c.db.url, &nats, &stream.name);
    let _w2 = Proc::start("writer", &c.db.url, &nats, &stream.name);
    let rt = runtime();
    let acked = Arc::new(Acked::default());
    let regressed = resolved_incident(&c, &rt, &a.url, &acked);

    const SENDERS: usize = 4;
    const BATCHES: usize = 30;
    let sent = Arc::new(AtomicUsize::new(0));
    let nodes = vec![a.url.clone(), b.url.clone()];
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (nodes, key, acked, sent) =
                (nodes.clone(), c.key.clone(), acked.clone(), sent.clone());
            std::thread::spawn(move || {
                let rt = runtime();
                let http = reqwest::Client::new();
                for i in 0..BATCHES {
                    let events: Vec<Value> = (0..10).map(|j| event((s + i + j) % 20)).collect();
                    let order = if i % 2 == 0 {
                        nodes.clone()
                    } else {
                        nodes.iter().rev().cloned().collect()
                    };
                    rt.block_on(send(&http, &order, &key, events.clone(), &acked));
                    if i % 5 == 0 {
                        // The same batch again, to the other node.
                        let other: Vec<String> = order.iter().rev().cloned().collect();
                        rt.block_on(send(&http, &other, &key, events, &acked));
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Mid-load, one writer dies at once; its partitions move to the other.
    while sent.load(Ordering::SeqCst) < SENDERS * BATCHES / 3 {
        std::thread::sleep(Duration::from_millis(20));
    }
    w1.kill();
    while sent.load(Ordering::SeqCst) < SENDERS * BATCHES * 2 / 3 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _w1 = Proc::start("writer", &c.db.url, &nats, &stream.name);
    for s in senders {
        s.join().unwrap();
    }
    let acked = acked.ids();
    assert_eq!(acked.len(), 1 + SENDERS * BATCHES * 10);
    assert_stored_exactly(&c, &acked);
    assert_eq!(c.groups().len(), 20);
    assert_eq!(
        regressions(&c, regressed),
        1,
        "one regression, not one per writer"
    );
}

/// The database unreachable for 30 s under load (connections to this
/// test's database refused and ended, as in an outage): the ingest node
/// keeps acknowledging events for its known key and stays ready; the writer
/// drains the backlog once the database is back.
#[test]
fn a_database_outage_loses_nothing_and_ingest_goes_on() {
    let nats = nats_url();
    let stream = Stream::new(&nats);
    let mut c = Collector::prepare(Backend::Postgres);
    let node = Proc::start("serve", &c.db.url, &nats, &stream.name);
    c.base = node.url.clone();
    let _writer = Proc::start("writer", &c.db.url, &nats, &stream.name);
    let rt = runtime();
    let acked = Acked::default();
    let regressed = resolved_incident(&c, &rt, &node.url, &acked);
    let name = c.db.url.rsplit('/').next().unwrap().to_string();
    let admin = common::binary::pg_admin_url();
    // Generated names only: identifiers cannot be bound.
    common::binary::pg_execute(
        &admin,
        &format!("ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS false"),
    )
    .unwrap();
    common::binary::pg_execute(
        &admin,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ),
    )
    .unwrap();
    let down_since = Instant::now();
    let http = reqwest::Client::new();
    let nodes = [node.url.clone()];
    let mut refusals = Vec::new();
    let mut batches = 0;
    while down_since.elapsed() < Duration::from_secs(30) {
        let events: Vec<Value> = (0..10).map(|j| event((batches + j) % 5)).collect();
        refusals.extend(rt.block_on(send(&http, &nodes, &c.key, events, &acked)));
        batches += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let ready: Value = rt
        .block_on(async {
            http.get(format!("{}/readyz", node.url))
                .send()
                .await?
                .json()
                .await
        })
        .unwrap();
    assert_eq!(
        ready,
        json!({"status": "ready", "queue": "up", "database": "down"})
    );
    common::binary::pg_execute(
        &admin,
        &format!("ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS true"),
    )
    .unwrap();
    assert!(batches > 20, "only {batches} batches in 30 s");
    assert!(
        refusals.iter().all(|s| *s == 503),
        "during the outage the node refused only with 503: {refusals:?}"
    );
    let acked = acked.ids();
    assert_stored_exactly(&c, &acked);
    assert_eq!(regressions(&c, regressed), 1);
}

/// A private NATS server with JetStream on a port the OS handed out, its
/// store in a temporary directory; stopped on drop.
struct Nats {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nats {
    fn start() -> Nats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut n = Nats {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        n.run();
        n
    }

    /// Starts the server on the same port and store.
    fn run(&mut self) {
        let bin = which_nats_server();
        let child = std::process::Command::new(bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `nats-server`, which the README's test command installs.
fn which_nats_server() -> String {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/bin"])
    {
        let p = std::path::Path::new(dir).join("nats-server");
        if p.is_file() {
            return p.display().to_string();
        }
    }
    panic!("nats-server is required for this test; ./scripts/test.sh installs it (apt-get install nats-server)");
}

/// NATS killed and started again under load: while it is down the node
/// answers 503 with `Retry-After` (never a 2xx for an event that is not
/// durable); once it is back, node and writer reconnect by themselves and
/// every acknowledged event is stored once.
#[test]
fn a_nats_restart_answers_503_meanwhile_and_loses_nothing() {
    let mut nats = Nats::start();
    let stream = Stream::new(&nats.url());
    let mut c = Collector::prepare(Backend::Postgres);
    let node = Proc::start("serve", &c.db.url, &nats.url(), &stream.name);
    c.base = node.url.clone();
    let _writer = Proc::start("writer", &c.db.url, &nats.url(), &stream.name);
    let rt = runtime();
    let acked = Arc::new(Acked::default());
    let regressed = resolved_incident(&c, &rt, &node.url, &acked);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (url, key, acked, stop) =
            (node.url.clone(), c.key.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = runtime();
            let http = reqwest::Client::new();
            let mut refusals = BTreeMap::<u16, usize>::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let events: Vec<Value> = (0..5).map(|j| event((i + j) % 5)).collect();
                for s in rt.block_on(send(
                    &http,
                    std::slice::from_ref(&url),
                    &key,
                    events,
                    &acked,
                )) {
                    *refusals.entry(s).or_default() += 1;
                }
                i += 1;
            }
            refusals
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    nats.stop();
    // Down long enough for requests to be refused.
    std::thread::sleep(Duration::from_secs(8));
    nats.run();
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::SeqCst);
    let refusals = sender.join().unwrap();
    assert!(
        refusals.get(&503).copied().unwrap_or(0) >= 1,
        "the node refused while NATS was down: {refusals:?}"
    );
    assert!(
        refusals.keys().all(|s| *s == 503),
        "only 503 while NATS was down: {refusals:?}"
    );
    let acked = acked.ids();
    assert_stored_exactly(&c, &acked);
    assert_eq!(regressions(&c, regressed), 1);
    drop(stream);
}

/// `infra/scale-out/docker-compose.yml` runs what the README says: NATS
/// with JetStream, Postgres, ingest nodes (`serve`) and writers (`writer`)
/// on one stream, behind a balancer; images pinned, no credential written.
#[test]
fn the_scale_out_compose_file_runs_both_roles_on_one_stream() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/scale-out/docker-compose.yml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    // The writers take the ingest nodes' environment with a merge key.
    yaml.apply_merge().unwrap();
    let services = yaml["services"].as_mapping().unwrap();
    let names: Vec<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(names, ["nats", "postgres", "ingest", "writer", "balancer"]);
    let nats = &yaml["services"]["nats"];
    assert!(nats["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|a| a == "-js"));
    for (role, command) in [("ingest", "serve"), ("writer", "writer")] {
        let s = &yaml["services"][role];
        assert_eq!(s["command"][0], command, "{role}");
        let env = &s["environment"];
        assert_eq!(env["ERRORFLOW_QUEUE_URL"], "nats://nats:4222", "{role}");
        assert_eq!(env["ERRORFLOW_QUEUE_STREAM"], "errorflow", "{role}");
        assert_eq!(env["PGPASSWORD"], "${POSTGRES_PASSWORD}", "{role}");
        assert!(
            !env["DATABASE_URL"].as_str().unwrap().contains('@'),
            "{role}"
        );
    }
    for (name, s) in services {
        if let Some(image) = s["image"].as_str() {
            let tag = image.rsplit(':').next().unwrap();
            assert!(
                image.contains(':') && tag != "latest",
                "{name:?} pins its image: {image}"
            );
        }
    }
    let nginx = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/scale-out/nginx.conf"
    ))
    .unwrap();
    assert!(nginx.contains("server ingest:8000 resolve;"));
}

/// Events queued for a project that is deleted before a writer stores
/// them can never be stored: the writer drops them (and says so in its
/// metrics) instead of retrying them forever, and the partition goes on.
#[test]
fn queued_events_of_a_deleted_project_do_not_hold_up_the_partition() {
    let nats = nats_url();
    let stream = Stream::new(&nats);
    let mut c = Collector::prepare(Backend::Postgres);
    let node = Proc::start("serve", &c.db.url, &nats, &stream.name);
    c.base = node.url.clone();
    let rt = runtime();
    let http = reqwest::Client::new();
    let doomed =
        common::binary::collector_cli(&c.db.url, &["project", "create", "doomed", "--json"]);
    let doomed_key = doomed["key"].as_str().unwrap().to_string();
    let nodes = [node.url.clone()];
    let gone = Acked::default();
    // No writer yet: the events wait in the stream.
    for kind in 0..8 {
        rt.block_on(send(&http, &nodes, &doomed_key, vec![event(kind)], &gone));
    }
    let r = rt
        .block_on(
            http.delete(format!("{}/api/v1/projects/{}", node.url, doomed["id"]))
                .bearer_auth(&c.token)
                .send(),
        )
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.status());
    let writer = Proc::start("writer", &c.db.url, &nats, &stream.name);
    let acked = Acked::default();
    for kind in 0..8 {
        rt.block_on(send(&http, &nodes, &c.key, vec![event(kind)], &acked));
    }
    assert_stored_exactly(&c, &acked.ids());
    // Each of the deleted project's events is dropped once a writer takes
    // its partition; the metric says when all were.
    let deadline = Instant::now() + DRAIN_DEADLINE;
    loop {
        let metrics = rt
            .block_on(async {
                http.get(format!("{}/metrics", writer.url))
                    .send()
                    .await?
                    .text()
                    .await
            })
            .unwrap();
        let dropped: f64 = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("errorflow_events_rejected_total{reason=\"project_deleted\"} ")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0);
        if dropped == 8.0 {
            break;
        }
        assert!(Instant::now() < deadline && dropped < 8.0, "{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_stored_exactly(&c, &acked.ids());
}
