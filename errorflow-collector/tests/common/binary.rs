//! The collector binary as a child process, for the end-to-end tests: a
//! throwaway database on either backend, one project and one management
//! token made with the CLI, `serve` on a port chosen up front (so that the
//! DSN is known before it starts), and blocking REST API helpers.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sqlx::Connection;

pub const BIN: &str = env!("CARGO_BIN_EXE_errorflow-collector");
const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// How long the API is polled for events that should arrive.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The collector binary on database `db`, with quiet logs and no
/// configuration file taken from the environment.
pub fn command(db: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("DATABASE_URL", db)
        .env("ERRORFLOW_LOG", "warn")
        .env_remove("ERRORFLOW_CONFIG");
    cmd
}

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists for one test: a temporary SQLite file, or a
/// Postgres database dropped at the end.
pub struct Database {
    pub url: String,
    postgres: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Database {
    pub fn create(backend: Backend) -> Database {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => Database {
                url: format!("sqlite://{}", dir.path().join("e2e.db").display()),
                postgres: None,
                _dir: dir,
            },
            Backend::Postgres => {
                let admin = pg_admin_url();
                // Generated here, never taken from input; identifiers cannot be bound.
                let name = format!("errorflow_e2e_{}", uuid::Uuid::new_v4().simple());
                let sql = format!("CREATE DATABASE \"{name}\"");
                pg_execute(&admin, &sql).unwrap_or_else(|e| {
                    panic!(
                        "cannot create a Postgres database through {admin} ({e}); start \
                         Postgres or point ERRORFLOW_TEST_PG_URL at a server where this user \
                         may CREATE DATABASE"
                    )
                });
                Database {
                    url: pg_database_url(&name),
                    postgres: Some((admin, name)),
                    _dir: dir,
                }
            }
        }
    }
}

impl Database {
    /// Runs a query whose one column reads as text, on either backend.
    pub fn texts(&self, sql: &str) -> Vec<String> {
        let url = self.url.clone();
        let sql = sql.to_string();
        let postgres = self.postgres.is_some();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if postgres {
                        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                        sqlx::query_scalar::<_, String>(&sql)
                            .fetch_all(&mut conn)
                            .await
                            .unwrap()
                    } else {
                        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                        sqlx::query_scalar::<_, String>(&sql)
                            .fetch_all(&mut conn)
                            .await
                            .unwrap()
                    }
                })
        })
        .join()
        .unwrap()
    }

    /// Runs one statement and returns the rows it affected, on either backend.
    pub fn execute(&self, sql: &str) -> u64 {
        let url = self.url.clone();
        let sql = sql.to_string();
        let postgres = self.postgres.is_some();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if postgres {
                        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                        sqlx::query(&sql)
                            .execute(&mut conn)
                            .await
                            .unwrap()
                            .rows_affected()
                    } else {
                        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                        sqlx::query(&sql)
                            .execute(&mut conn)
                            .await
                            .unwrap()
                            .rows_affected()
                    }
                })
        })
        .join()
        .unwrap()
    }

    /// The ids of every stored event.
    pub fn stored_event_ids(&self) -> Vec<String> {
        self.texts("SELECT CAST(event_id AS TEXT) FROM errors")
    }

    /// The sum of the incidents' event counts.
    pub fn incident_count_sum(&self) -> i64 {
        self.texts("SELECT CAST(COALESCE(SUM(count), 0) AS TEXT) FROM error_groups")[0]
            .parse()
            .unwrap()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.postgres {
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(e) = pg_execute(admin, &sql) {
                eprintln!("could not drop test database {name}: {e}");
            }
        }
    }
}

/// The Postgres server the tests use: `ERRORFLOW_TEST_PG_URL`, which
/// `./scripts/test.sh` points at a throwaway cluster when the default
/// server does not answer.
pub fn pg_admin_url() -> String {
    std::env::var("ERRORFLOW_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

/// The URL of database `name` on the tests' Postgres server.
pub fn pg_database_url(name: &str) -> String {
    let admin = pg_admin_url();
    match admin.rfind('/') {
        Some(slash) if slash > "postgres://".len() => format!("{}/{name}", &admin[..slash]),
        _ => format!("{admin}/{name}"),
    }
}

pub fn pg_execute(url: &str, sql: &str) -> Result<(), sqlx::Error> {
    let url = url.to_string();
    let sql = sql.to_string();
    // A thread of its own: this may run inside a test's runtime.
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::query(&sql).execute(&mut conn).await?;
                conn.close().await
            })
    })
    .join()
    .unwrap()
}

/// The collector binary with one project and one management token. It
/// listens on a port the OS hands out (`--listen 127.0.0.1:0`) and keeps
/// bound; the port is read from the address it prints.
pub struct Collector {
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    pub dsn: String,
    pub token: String,
    pub key: String,
    pub project_id: i64,
    /// Extra arguments of `serve`.
    pub serve_args: Vec<String>,
    /// A front holding `base` across restarts (see [`Collector::fronted`]).
    front: Option<Front>,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
    pub db: Database,
}

pub fn collector_cli(db: &str, args: &[&str]) -> Value {
    let out = command(db).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The DSN of a project at `base` (`http://host:port`).
pub fn dsn(base: &str, key: &str, project_id: i64) -> String {
    let rest = base.strip_prefix("http://").expect("an http:// base URL");
    format!("http://{key}@{rest}/{project_id}")
}

/// Reads `child`'s standard output up to the line `dashboard: URL/` that
/// `serve` prints once it listens, and returns the URL; the rest of the
/// output is drained by a thread. Synchronised on that line, not on time:
/// should the process exit first, its end of output fails the test.
pub fn listening_url(child: &mut Child) -> String {
    printed_url(child, "dashboard: ")
}

/// Reads `child`'s standard output up to the first line starting with
/// `prefix` and returns the rest of that line without a trailing `/`
/// (`writer: URL/readyz` for a queue writer); see [`listening_url`].
pub fn printed_url(child: &mut Child, prefix: &str) -> String {
    use std::io::BufRead as _;
    let stdout = child.stdout.take().expect("serve's stdout is piped");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => match line.strip_prefix(prefix) {
                Some(url) => break url.trim_end_matches('/').to_string(),
                None => seen.push(line),
            },
            _ => panic!(
                "the collector exited before listening ({:?}); it printed {seen:#?}",
                child.wait()
            ),
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    url
}

impl Collector {
    /// Creates the database, project and token, without serving yet.
    pub fn prepare(backend: Backend) -> Collector {
        let db = Database::create(backend);
        let project = collector_cli(&db.url, &["project", "create", "shop", "--json"]);
        for field in ["id", "name", "key", "dsn"] {
            assert!(!project[field].is_null(), "project create: {project}");
        }
        let token = collector_cli(&db.url, &["token", "create", "--name", "e2e", "--json"]);
        Collector {
            child: None,
            port: 0,
            base: String::new(),
            dsn: String::new(),
            token: token["token"].as_str().unwrap().to_owned(),
            key: project["key"].as_str().unwrap().to_owned(),
            project_id: project["id"].as_i64().unwrap(),
            serve_args: Vec::new(),
            front: None,
            // Idle connections are dropped before the server's header
            // read timeout (10 s) closes them: this runtime only runs
            // during a call, so a closed connection would be noticed only
            // when reused, as an error.
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            db,
        }
    }

    /// Prepared behind a [`Front`]: `base` and `dsn` are known before it
    /// serves and stay the same across restarts (what a service in front of
    /// it, like Kestra calling back, needs).
    pub fn fronted(backend: Backend) -> Collector {
        let mut c = Collector::prepare(backend);
        let front = Front::start();
        c.base = front.base();
        c.dsn = dsn(&c.base, &c.key, c.project_id);
        c.front = Some(front);
        c
    }

    pub fn start(backend: Backend) -> Collector {
        let mut c = Collector::prepare(backend);
        c.serve();
        c
    }

    /// `serve` with the extra arguments, on a port the OS picks; returns
    /// once it listens. Called again after [`Collector::kill`] or
    /// [`Collector::terminate`], it restarts on the same database.
    pub fn serve(&mut self) {
        self.serve_with(&[]);
    }

    /// Serves with extra environment variables (Kestra's address, …).
    pub fn serve_with(&mut self, env: &[(&str, &str)]) {
        let mut cmd = command(&self.db.url);
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(&self.serve_args)
            .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let listening = listening_url(&mut child);
        self.port = listening
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {listening}"));
        match &self.front {
            // The front keeps the address others were given; it now leads here.
            Some(front) => front.forward_to(self.port),
            None => {
                self.base = listening;
                self.dsn = dsn(&self.base, &self.key, self.project_id);
            }
        }
        self.child = Some(child);
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("serving").id()
    }

    /// SIGKILL: the process ends at once, with no chance to clean up.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("serving");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then waits for the process to end (at most `within`) and
    /// returns its exit status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("serving");
        let pid = child.id().to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid} failed");
        match rx.recv_timeout(within) {
            Ok(status) => status.unwrap(),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                panic!("the collector did not exit within {within:?} of SIGTERM");
            }
        }
    }

    /// Stops the server (SIGKILL: nothing is flushed on the way out).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The project's ingest key (the DSN's user part).
    pub fn ingest_key(&self) -> String {
        let rest = self.dsn.split("://").nth(1).unwrap();
        rest.split('@').next().unwrap().to_string()
    }

    pub fn get(&self, path: &str) -> Value {
        self.rt.block_on(async {
            let r = self
                .http
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "GET {path}: {}", r.status());
            r.json().await.unwrap()
        })
    }

    pub fn groups(&self) -> Vec<Value> {
        self.get("/api/v1/groups?status=all&limit=200")["groups"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn events(&self) -> Vec<Value> {
        self.get("/api/v1/events?limit=200")["events"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn group_events(&self, group_id: &Value) -> Vec<Value> {
        self.get(&format!("/api/v1/groups/{group_id}/events?limit=200"))["events"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn event(&self, event_id: &Value) -> Value {
        self.get(&format!("/api/v1/events/{}", event_id.as_str().unwrap()))
    }

    /// The stored events, which must be exactly `n`, each with its own
    /// event id. Call it once every sender has had its answers (the SDK
    /// flushed, or the process exited after flushing): the collector answers
    /// 2xx only after the events are committed, so nothing sent can still
    /// arrive, and a duplicate delivery would already be stored here.
    pub fn stored_events(&self, n: usize) -> Vec<Value> {
        let events = self.events();
        assert_eq!(events.len(), n, "stored events: {events:#?}");
        let ids: std::collections::HashSet<&str> = events
            .iter()
            .map(|e| e["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), n, "an event was stored twice: {events:#?}");
        events
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP front for a collector that is not up yet: it holds a port the OS
/// handed out, and closes each connection at once (as a proxy with no
/// backend would) until [`Front::forward_to`] names the collector, then
/// passes connections through to it.
pub struct Front {
    pub addr: std::net::SocketAddr,
    target: std::sync::Arc<std::sync::Mutex<Option<u16>>>,
}

impl Front {
    pub fn start() -> Front {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let target = std::sync::Arc::new(std::sync::Mutex::new(None::<u16>));
        let shared = target.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let Some(port) = *shared.lock().unwrap() else {
                    drop(client);
                    continue;
                };
                let Ok(upstream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                };
                pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                pipe(upstream, client);
            }
        });
        Front { addr, target }
    }

    /// `http://ADDR`, the base URL the front answers on.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn forward_to(&self, port: u16) {
        *self.target.lock().unwrap() = Some(port);
    }
}

/// Holds the write lock of the events' tables until dropped: the writer's
/// transaction waits for it, so the writer's queue fills up.
pub enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    pub async fn take(backend: Backend, url: &str) -> WriteLock {
        match backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
                sqlx::query("BEGIN EXCLUSIVE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                WriteLock::Sqlite(conn)
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
                // EXCLUSIVE: others may read, nobody may write.
                sqlx::query("LOCK TABLE error_groups, errors IN EXCLUSIVE MODE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                WriteLock::Postgres(conn)
            }
        }
    }

    pub async fn release(self) {
        match self {
            WriteLock::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
            WriteLock::Postgres(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
        }
    }
}
