//! The binary as a user runs it: subcommands, first start, DSN that works.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::binary::{command, listening_url, pg_database_url, Backend, Database};
use serde_json::Value;

mod common;

fn run(db: &str, args: &[&str]) -> (bool, String, String) {
    let out = command(db).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The port of a printed URL such as `http://127.0.0.1:PORT/`.
fn port_of(url: &str) -> u16 {
    url.trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("cli.db").display())
}

/// What a first start prints on stdout, read up to the dashboard line.
struct FirstStart {
    dsn: String,
    /// The DSN's ingest key.
    key: String,
    token: Option<String>,
    dashboard: String,
}

fn read_first_start(child: &mut std::process::Child) -> FirstStart {
    let mut dsn = None;
    let mut token = None;
    let mut dashboard = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.split("DSN").nth(1) {
            dsn = rest.split_whitespace().last().map(str::to_string);
        }
        if line.contains("management token") {
            token = line.split_whitespace().last().map(str::to_string);
        }
        if let Some(url) = line.strip_prefix("dashboard: ") {
            dashboard = Some(url.to_string());
            break;
        }
    }
    let dsn = dsn.expect("DSN printed");
    let key = dsn
        .strip_prefix("http://")
        .and_then(|r| r.split('@').next())
        .unwrap()
        .to_string();
    FirstStart {
        dsn,
        key,
        token,
        dashboard: dashboard.expect("dashboard URL printed"),
    }
}

#[test]
fn help_explains_the_commands_and_settings() {
    let (ok, out, _) = run("sqlite::memory:", &["--help"]);
    assert!(ok);
    for word in [
        "serve",
        "migrate",
        "project",
        "token",
        "DATABASE_URL",
        "ERRORFLOW_CONFIG",
        // serve's settings: it runs without a subcommand.
        "--listen",
        "--retention",
        "ERRORFLOW_RETENTION",
        "--max-body-bytes",
        "ERRORFLOW_KEY_EVENTS_PER_SECOND",
        "backup",
    ] {
        assert!(out.contains(word), "--help lacks {word}:\n{out}");
    }
    let (ok, out, _) = run("sqlite::memory:", &["serve", "--help"]);
    assert!(ok);
    for word in [
        "--listen",
        "ERRORFLOW_LISTEN",
        "--quiet-after",
        "ERRORFLOW_PUBLIC_URL",
    ] {
        assert!(out.contains(word), "serve --help lacks {word}:\n{out}");
    }
}

#[test]
fn project_and_token_commands() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    // At the default log level, start-up says which migrations run before
    // it runs them; stdout names what was applied.
    let out = command(&db)
        .env("ERRORFLOW_LOG", "info")
        .arg("migrate")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("applied ")
            && stdout.contains("1 init")
            && stdout.contains("5 releases"),
        "migrate should say what it applied: {stdout}"
    );
    assert!(stderr.contains("applying database migrations"), "{stderr}");
    let (ok, out, err) = run(&db, &["migrate"]);
    assert!(ok, "{err}");
    assert!(out.trim().ends_with("is up to date"), "{out}");

    let (ok, out, err) = run(&db, &["project", "create", "checkout", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("exactly one JSON object");
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["dsn", "id", "key", "name"]);
    let key = v["key"].as_str().unwrap();
    assert_eq!(
        v["dsn"],
        format!("http://{key}@127.0.0.1:8000/{}", v["id"]),
        "DSN is http://KEY@HOST:PORT/ID"
    );

    let (ok, _, err) = run(&db, &["project", "create", "checkout"]);
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");

    let (ok, out, _) = run(&db, &["project", "list"]);
    assert!(ok);
    assert!(out.contains("checkout"));
    assert!(!out.contains(key), "keys are never listed");

    let (ok, out, err) = run(&db, &["project", "rotate-key", "checkout", "--json"]);
    assert!(ok, "{err}");
    let rotated: Value = serde_json::from_str(out.trim()).unwrap();
    assert_ne!(rotated["key"], v["key"]);

    let (ok, out, err) = run(&db, &["token", "create", "--name", "ci", "--json"]);
    assert!(ok, "{err}");
    let t: Value = serde_json::from_str(out.trim()).unwrap();
    let token = t["token"].as_str().unwrap();
    assert!(token.starts_with("eft_"));

    let (ok, out, err) = run(&db, &["token", "list", "--json"]);
    assert!(ok, "{err}");
    let tokens: Value = serde_json::from_str(out.trim()).expect("exactly one JSON array");
    let tokens = tokens.as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    let mut keys: Vec<&str> = tokens[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["created_at", "id", "last_used_at", "name"]);
    assert_eq!(tokens[0]["name"], "ci");
    assert_eq!(tokens[0]["last_used_at"], Value::Null);
    let (ok, out, err) = run(&db, &["token", "list"]);
    assert!(ok, "{err}");
    assert!(out.contains("ci") && out.contains("never"), "{out}");
    assert!(!out.contains(token), "tokens are never listed");
}

/// `token revoke` by name and by id: the token leaves the list, the log
/// names it without its value, and an unknown or shared name is an error
/// with a non-zero exit status that says what to do. Both backends.
#[test]
fn token_revoke_by_name_and_by_id() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = Database::create(backend);
        let db = db.url.as_str();
        let create = |name: &str| {
            let (ok, out, err) = run(db, &["token", "create", "--name", name, "--json"]);
            assert!(ok, "{err}");
            let v: Value = serde_json::from_str(out.trim()).unwrap();
            v["token"].as_str().unwrap().to_string()
        };
        let ci = create("ci");
        let _deploy = create("deploy");
        let _twin_a = create("twin");
        let _twin_b = create("twin");
        let listed = || -> Vec<(i64, String)> {
            let (ok, out, err) = run(db, &["token", "list", "--json"]);
            assert!(ok, "{err}");
            let v: Value = serde_json::from_str(out.trim()).unwrap();
            v.as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["id"].as_i64().unwrap(),
                        t["name"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        };
        let before = listed();

        // By name, with the log at info: it names the token, not its value.
        let out = command(db)
            .env("ERRORFLOW_LOG", "info")
            .args(["token", "revoke", "ci"])
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        );
        assert!(out.status.success(), "{stderr}");
        let ci_id = before.iter().find(|(_, n)| n == "ci").unwrap().0;
        assert!(
            stdout.contains("\"ci\"") && stdout.contains(&format!("id {ci_id}")),
            "{stdout}"
        );
        assert!(
            stderr.contains("management token revoked")
                && stderr.contains("ci")
                && stderr.contains(&ci_id.to_string()),
            "{stderr}"
        );
        assert!(!stdout.contains(&ci) && !stderr.contains(&ci));
        assert!(listed().iter().all(|(_, n)| n != "ci"));

        // By id.
        let deploy_id = before.iter().find(|(_, n)| n == "deploy").unwrap().0;
        let (ok, out, err) = run(db, &["token", "revoke", &deploy_id.to_string(), "--json"]);
        assert!(ok, "{err}");
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["id"], deploy_id);
        assert_eq!(v["name"], "deploy");
        assert!(listed().iter().all(|(_, n)| n != "deploy"));

        // Unknown, and already revoked: an error, exit status non-zero.
        for unknown in ["nobody", "ci", "999999"] {
            let out = command(db)
                .args(["token", "revoke", unknown])
                .output()
                .unwrap();
            let err = String::from_utf8(out.stderr).unwrap();
            assert!(!out.status.success(), "{unknown}: {err}");
            assert_ne!(out.status.code(), Some(0));
            assert!(err.contains("no token with id or name"), "{err}");
        }
        // A name two tokens share: refused, naming their ids; nothing revoked.
        let (ok, _, err) = run(db, &["token", "revoke", "twin"]);
        assert!(!ok);
        let twins: Vec<i64> = before
            .iter()
            .filter(|(_, n)| n == "twin")
            .map(|(id, _)| *id)
            .collect();
        assert!(
            err.contains("2 tokens") && twins.iter().all(|id| err.contains(&id.to_string())),
            "{err}"
        );
        assert_eq!(listed().iter().filter(|(_, n)| n == "twin").count(), 2);

        // A new token never takes a revoked token's id.
        create("later");
        let later = listed().into_iter().find(|(_, n)| n == "later").unwrap().0;
        assert!(later > deploy_id && later > ci_id, "{later}");
    }
}

#[test]
fn unsupported_database_urls_are_explained() {
    let (ok, _, err) = run("mysql://x", &["migrate"]);
    assert!(!ok);
    assert!(err.contains("mysql"), "{err}");
}

/// A database that cannot be opened is reported with its real cause, each
/// cause once: not a pool's timeout, not SQLite's bare "unable to open".
#[test]
fn unreachable_databases_are_explained() {
    // A port bound for this test and not listening: the connection is refused.
    let closed = common::closed_port();
    let (ok, _, err) = run(
        &format!("postgres://postgres@{}/x", closed.local_addr().unwrap()),
        &["migrate"],
    );
    assert!(!ok);
    assert!(err.contains("refused"), "{err}");
    assert!(!err.contains("timed out"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("e.db");
    let (ok, _, err) = run(&format!("sqlite://{}", missing.display()), &["migrate"]);
    assert!(!ok);
    assert!(err.contains("no-such-dir does not exist"), "{err}");

    // A database that does not exist, on the tests' own Postgres server.
    let db = format!("errorflow_cli_missing_{}", uuid::Uuid::new_v4().simple());
    let (ok, _, err) = run(&pg_database_url(&db), &["migrate"]);
    assert!(!ok);
    let cause = format!("database \"{db}\" does not exist");
    assert_eq!(err.matches(&cause).count(), 1, "{err}");
}

/// First start on an empty database prints the DSN, a token and the
/// dashboard URL, and that DSN's key ingests.
#[test]
fn first_start_prints_a_working_dsn() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    // Port 0: the OS picks the port, and the links name the one it picked.
    let mut child = command(&db)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let FirstStart {
        dsn,
        key,
        token,
        dashboard,
    } = read_first_start(&mut child);
    let token = token.expect("token printed");
    let port = port_of(&dashboard);
    assert_ne!(port, 0);
    assert_eq!(dashboard, format!("http://127.0.0.1:{port}/"));
    assert!(dsn.ends_with(&format!("127.0.0.1:{port}/1")), "{dsn}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let r = client
            .post(format!("{base}/errors/custom"))
            .header("x-errorflow-key", &key)
            .json(&serde_json::json!({"service": "s", "error_type": "E", "message": "m"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let groups: Value = client
            .get(format!("{base}/api/v1/groups"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(groups["groups"][0]["count"], 1);
    });

    // The request recorded when the token was used, off the request path.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let last_used = loop {
        let (ok, out, err) = run(&db, &["token", "list", "--json"]);
        assert!(ok, "{err}");
        let tokens: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(tokens[0]["name"], "admin");
        if !tokens[0]["last_used_at"].is_null() || std::time::Instant::now() > deadline {
            break tokens[0]["last_used_at"].clone();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(last_used.is_string(), "last_used_at never set: {last_used}");
    child.kill().unwrap();
    child.wait().unwrap();

    // The first start created exactly one project.
    let (ok, out, _) = run(&db, &["project", "list", "--json"]);
    assert!(ok);
    let projects: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(projects.as_array().unwrap().len(), 1);
    assert_eq!(projects[0]["name"], "default");
}

/// Without a subcommand the collector serves with `serve`'s settings from
/// the environment (as the README's configuration table promises), and its
/// logs, piped, carry no terminal colour codes.
#[test]
fn no_subcommand_serves_with_the_environments_settings() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    let mut child = command(&db)
        .env("ERRORFLOW_LISTEN", "127.0.0.1:0")
        .env("ERRORFLOW_MAX_EVENTS_PER_BATCH", "2")
        .env("ERRORFLOW_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let FirstStart { key, dashboard, .. } = read_first_start(&mut child);
    let port = port_of(&dashboard);

    let event = |i: u32| {
        serde_json::json!({
            "event_id": format!("0193a1b2-0000-7000-8000-{i:012}"),
            "message": "m",
        })
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (two, three) = rt.block_on(async {
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/api/v1/events");
        let mut statuses = Vec::new();
        for n in [2, 3] {
            let events: Vec<Value> = (0..n).map(event).collect();
            let r = client
                .post(&url)
                .header("x-errorflow-key", &key)
                .json(&serde_json::json!({ "events": events }))
                .send()
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
        }
        (statuses[0], statuses[1])
    });
    assert_eq!(two, 200, "a batch within ERRORFLOW_MAX_EVENTS_PER_BATCH");
    assert_eq!(three, 413, "a batch over ERRORFLOW_MAX_EVENTS_PER_BATCH");

    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("collector started"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "colour codes in piped logs: {logs}"
    );
}

/// `serve` runs with mimalloc's purge delay at 10 ms, which kept peak RSS
/// under load within its budget: it starts itself again, in the same
/// process, with `MIMALLOC_PURGE_DELAY=10`, unless the environment sets it.
#[test]
fn serve_runs_with_a_short_allocator_purge_delay() {
    for (given, expected) in [(None, "10"), (Some("0"), "0")] {
        let dir = tempfile::tempdir().unwrap();
        let mut command = command(&sqlite_url(&dir));
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        match given {
            Some(value) => command.env("MIMALLOC_PURGE_DELAY", value),
            None => command.env_remove("MIMALLOC_PURGE_DELAY"),
        };
        let mut child = command.spawn().unwrap();
        // Listening, so past the restart (exec keeps its id).
        listening_url(&mut child);
        let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .filter(|v| v.starts_with("MIMALLOC_"))
            .collect();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            vars,
            [format!("MIMALLOC_PURGE_DELAY={expected}")],
            "given {given:?}"
        );
    }
}

/// `backup` writes a SQLite database that opens on its own with everything
/// in it; it never overwrites a file.
#[test]
fn backup_writes_a_complete_sqlite_copy() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    let (ok, _, err) = run(&db, &["project", "create", "checkout"]);
    assert!(ok, "{err}");
    let copy = dir.path().join("copy.db");
    let (ok, out, err) = run(&db, &["backup", copy.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("backup written"), "{out}");
    // The copy alone (no -wal beside it) has the project.
    assert!(!dir.path().join("copy.db-wal").exists());
    let (ok, out, err) = run(
        &format!("sqlite://{}", copy.display()),
        &["project", "list", "--json"],
    );
    assert!(ok, "{err}");
    let projects: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(projects[0]["name"], "checkout");

    let (ok, _, err) = run(&db, &["backup", copy.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("exists already"), "{err}");
}

/// The tables of a database, by name, read without errorflow.
fn tables(url: &str) -> Vec<String> {
    use sqlx::Connection;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        if url.starts_with("postgres") {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = 'public' ORDER BY 1",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap()
        } else {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
                .fetch_all(&mut conn)
                .await
                .unwrap()
        }
    })
}

/// `backup` copies and changes nothing: it applies no migration to the
/// database it is pointed at. On Postgres it says to use pg_dump, leaving an
/// empty database empty; on SQLite it copies the database as it is, and a
/// missing file is an error, not a new database.
#[test]
fn backup_migrates_no_database() {
    let dir = tempfile::tempdir().unwrap();

    let pg = Database::create(Backend::Postgres);
    let dump = dir.path().join("pg.db");
    let (ok, _, err) = run(&pg.url, &["backup", dump.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("pg_dump"), "{err}");
    assert_eq!(
        tables(&pg.url),
        Vec::<String>::new(),
        "backup changed {}",
        pg.url
    );
    assert!(!dump.exists());

    let missing = dir.path().join("missing.db");
    let copy = dir.path().join("copy.db");
    let (ok, _, err) = run(
        &format!("sqlite://{}", missing.display()),
        &["backup", copy.to_str().unwrap()],
    );
    assert!(!ok);
    assert!(err.contains("does not exist"), "{err}");
    assert!(
        !missing.exists(),
        "backup created the database it was to copy"
    );
    assert!(!copy.exists());

    // A SQLite database that is not errorflow's (or not yet migrated).
    let other = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("other.db").display()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&other).await.unwrap();
        sqlx::query("CREATE TABLE notes (body TEXT)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
    let (ok, out, err) = run(&other, &["backup", copy.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("backup written"), "{out}");
    assert_eq!(tables(&other), ["notes"]);
    assert_eq!(tables(&format!("sqlite://{}", copy.display())), ["notes"]);
}

/// `project delete` asks for --yes, then deletes the project with its data.
#[test]
fn project_delete_needs_yes_and_removes_the_project() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    assert!(run(&db, &["project", "create", "old"]).0);
    assert!(run(&db, &["project", "create", "live"]).0);
    let (ok, _, err) = run(&db, &["project", "delete", "old"]);
    assert!(!ok);
    assert!(err.contains("--yes"), "{err}");
    let (ok, out, err) = run(&db, &["project", "delete", "old", "--yes", "--json"]);
    assert!(ok, "{err}");
    let deleted: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(deleted["name"], "old");
    assert_eq!(deleted["events"], 0);
    let (_, out, _) = run(&db, &["project", "list", "--json"]);
    let projects: Value = serde_json::from_str(out.trim()).unwrap();
    let names: Vec<&str> = projects
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["live"]);
    let (ok, _, err) = run(&db, &["project", "delete", "old", "--yes"]);
    assert!(!ok);
    assert!(err.contains("no project"), "{err}");
}

/// Deleting every project does not make the next start a first start: no
/// new `default` project, no new management token.
#[test]
fn a_database_emptied_of_projects_is_not_a_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    let start = || {
        command(&db)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = start();
    read_first_start(&mut first);
    first.kill().unwrap();
    first.wait().unwrap();
    let (ok, _, err) = run(&db, &["project", "delete", "default", "--yes"]);
    assert!(ok, "{err}");

    let mut again = start();
    let mut printed = Vec::new();
    for line in BufReader::new(again.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.starts_with("dashboard: ");
        printed.push(line);
        if done {
            break;
        }
    }
    again.kill().unwrap();
    again.wait().unwrap();
    assert!(
        !printed
            .iter()
            .any(|l| l.contains("DSN") || l.contains("token")),
        "{printed:?}"
    );
    let (_, out, _) = run(&db, &["project", "list", "--json"]);
    assert_eq!(out.trim(), "[]");
    let (_, out, _) = run(&db, &["token", "list", "--json"]);
    let tokens: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(tokens.as_array().unwrap().len(), 1, "{tokens}");
}

/// A rule file with a mistake stops the start and names its line; a good
/// one (flag or variable) starts.
#[test]
fn a_bad_triage_rules_file_stops_the_start_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    let bad = dir.path().join("rules.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nid = \"shop.stock\"\nclass = \"data_integrity\"\nlabel = \"stock drift\"\n\
         weight = 70\npatterns = ['stock (drift']\n",
    )
    .unwrap();
    let out = command(&db)
        .args(["serve", "--listen", "127.0.0.1:0", "--triage-rules"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{}:6: invalid pattern", bad.display())),
        "{stderr}"
    );
    let out = command(&db)
        .env("ERRORFLOW_TRIAGE_RULES", &bad)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains(":6: invalid pattern"));
}
