//! The collector binary as a child process, for the end-to-end tests: a
//! throwaway database on either backend, one project and one management
//! token made with the CLI, `serve` on a port chosen up front (so that the
//! DSN is known before it starts), and blocking REST API helpers.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// The collector binary with one project and one management token, on a
/// port chosen up front so that the DSN is known before it is started.
pub struct Collector {
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    pub dsn: String,
    pub token: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
    db: Database,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

impl Collector {
    /// Creates the database, project and token, without serving yet.
    pub fn prepare(backend: Backend) -> Collector {
        let db = Database::create(backend);
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let project = collector_cli(
            &db.url,
            &["project", "create", "shop", "--json", "--public-url", &base],
        );
        for field in ["id", "name", "key", "dsn"] {
            assert!(!project[field].is_null(), "project create: {project}");
        }
        let token = collector_cli(&db.url, &["token", "create", "--name", "e2e", "--json"]);
        Collector {
            child: None,
            port,
            base,
            dsn: project["dsn"].as_str().unwrap().to_owned(),
            token: token["token"].as_str().unwrap().to_owned(),
            http: reqwest::Client::new(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            db,
        }
    }

    pub fn start(backend: Backend) -> Collector {
        let mut c = Collector::prepare(backend);
        c.serve();
        c
    }

    pub fn serve(&mut self) {
        self.serve_with(&[]);
    }

    /// Serves with extra environment variables (Kestra's address, …).
    pub fn serve_with(&mut self, env: &[(&str, &str)]) {
        let mut cmd = command(&self.db.url);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "collector did not start");
            std::thread::sleep(Duration::from_millis(25));
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

    /// Polls the event list until `n` events are stored, then checks that no
    /// more arrive for a short while (a duplicate would show up here).
    pub fn wait_for_events(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let events = self.events();
            if events.len() >= n {
                assert_eq!(events.len(), n, "more events than expected: {events:#?}");
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} events arrived: {events:#?}",
                events.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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
