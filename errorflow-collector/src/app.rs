//! Start-up and the commands of the binary. `main.rs` only parses the
//! command line and calls in here.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use chrono::Utc;
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::{Cli, Command, Config, ProjectCommand, TokenCommand, UserCommand};
use crate::credentials;
use crate::http::dashboard::auth;
use crate::http::{self, AppState};
use crate::model::Project;
use crate::store::{self, redact_url, Backend, Store};
use crate::telemetry;
use crate::triage::{self, kestra, Triage};
use crate::writer::{Writer, WriterOptions};

/// Runs the command the user asked for.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::resolve(&cli, cli.serve_args())?;
    telemetry::init_logging(config.log_format, &config.log_level);
    match &cli.command {
        None | Some(Command::Serve(_)) => serve(config).await,
        Some(Command::Writer(_)) => writer(config).await,
        Some(Command::Migrate) => {
            let (_, applied) = open_and_migrate(&config.database_url).await?;
            let shown = redact_url(&config.database_url);
            if applied.is_empty() {
                println!("{shown} is up to date");
            } else {
                println!(
                    "applied {} migrations to {shown}: {}",
                    applied.len(),
                    applied.join(", ")
                );
            }
            Ok(())
        }
        Some(Command::Backup { file }) => backup(&config.database_url, file).await,
        Some(Command::Project(cmd)) => project_command(&config, cmd).await,
        Some(Command::Rca(args)) => {
            crate::integrations::github::rca::command(args, &config.triage).await
        }
        Some(Command::User(cmd)) => user_command(&config, cmd).await,
        Some(Command::Token(TokenCommand::Create { name, json })) => {
            let store = open_store(&config.database_url).await?;
            let token = create_token(store.as_ref(), name).await?;
            if *json {
                println!("{}", json!({ "token": token }));
            } else {
                println!("management token {name:?} (shown once; send as `Authorization: Bearer TOKEN`):\n{token}");
            }
            Ok(())
        }
        Some(Command::Token(TokenCommand::List { json })) => {
            let store = open_store(&config.database_url).await?;
            let tokens = store.list_tokens().await?;
            if *json {
                println!("{}", serde_json::to_string(&tokens)?);
            } else {
                println!("{:>4}  {:<30} {:<21} last used", "id", "name", "created");
                let when = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
                for t in tokens {
                    println!(
                        "{:>4}  {:<30} {:<21} {}",
                        t.id,
                        t.name,
                        when(t.created_at),
                        t.last_used_at.map_or_else(|| "never".to_string(), when)
                    );
                }
            }
            Ok(())
        }
        Some(Command::Token(TokenCommand::Revoke { token, json })) => {
            let store = open_store(&config.database_url).await?;
            let found = find_token(store.as_ref(), token).await?;
            let revoked = store
                .delete_token(found.id)
                .await?
                .with_context(|| format!("token {:?} was revoked meanwhile", found.name))?;
            tracing::info!(
                token_id = revoked.id,
                token_name = %revoked.name,
                actor = "cli",
                "management token revoked"
            );
            if *json {
                println!("{}", serde_json::to_string(&revoked)?);
            } else {
                println!(
                    "revoked token {:?} (id {}); running collectors refuse it within {} s",
                    revoked.name,
                    revoked.id,
                    crate::http::KEY_CACHE_TTL.as_secs()
                );
            }
            Ok(())
        }
    }
}

/// `backup`: a copy of a SQLite database made with VACUUM INTO. It reads the
/// database as it finds it, opening no store and applying no migration (a
/// backup changes nothing, and an old collector's database is copied as that
/// collector left it), and never creates one; Postgres is sent to pg_dump
/// before anything is opened.
async fn backup(url: &str, file: &std::path::Path) -> anyhow::Result<()> {
    let shown = redact_url(url);
    if store::backend_of(url)? == Backend::Postgres {
        bail!(
            "backup writes SQLite databases only; back Postgres up with pg_dump \
             (e.g. `pg_dump --format=custom --file=errorflow.dump \"$DATABASE_URL\"`)"
        );
    }
    let source = store::sqlite::file_of(url)
        .with_context(|| format!("cannot read the database URL {shown}"))?;
    if !source.is_file() {
        bail!(
            "the database {} does not exist; there is nothing to back up",
            source.display()
        );
    }
    if file.exists() {
        bail!(
            "{} exists already; the backup writes a new file",
            file.display()
        );
    }
    let started = std::time::Instant::now();
    eprintln!("writing a copy of {shown} to {} …", file.display());
    store::sqlite::backup_file(url, file)
        .await
        .with_context(|| format!("cannot write the backup {}", file.display()))?;
    let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    println!(
        "backup written: {} ({:.1} MiB in {:.1} s)",
        file.display(),
        bytes as f64 / (1024.0 * 1024.0),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Connects and migrates, with messages that say what failed and where.
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    Ok(open_and_migrate(url).await?.0)
}

/// [`open_store`], also returning the migrations it applied.
async fn open_and_migrate(url: &str) -> anyhow::Result<(Arc<dyn Store>, Vec<String>)> {
    let shown = redact_url(url);
    let store = store::connect(url)
        .await
        .with_context(|| format!("cannot open database {shown}"))?;
    tracing::info!(database = %shown, "database opened");
    let applied = store
        .migrate()
        .await
        .with_context(|| format!("cannot migrate database {shown}"))?;
    Ok((store, applied))
}

async fn create_token(store: &dyn Store, name: &str) -> anyhow::Result<String> {
    let token = credentials::new_api_token();
    store
        .create_token(name, &credentials::hash_secret(&token))
        .await?;
    Ok(token)
}

/// Shortest `ERRORFLOW_KESTRA_TOKEN` accepted (a guessable token would open the REST API).
pub const MIN_KESTRA_TOKEN_CHARS: usize = 32;

/// `ERRORFLOW_KESTRA_TOKEN`: a management token chosen ahead (the compose
/// file gives the same value to Kestra as its `ERRORFLOW_TOKEN` secret),
/// registered under the name `kestra` unless it already is, so that the
/// flows authenticate from the first start without a hand-made token.
pub async fn register_kestra_token(store: &dyn Store, token: Option<&str>) -> anyhow::Result<()> {
    let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(());
    };
    if token.chars().count() < MIN_KESTRA_TOKEN_CHARS {
        bail!(
            "ERRORFLOW_KESTRA_TOKEN is shorter than {MIN_KESTRA_TOKEN_CHARS} characters; \
             make one with `openssl rand -hex 32`"
        );
    }
    let hash = credentials::hash_secret(token);
    if store.token_by_hash(&hash).await?.is_none() {
        store.create_token("kestra", &hash).await?;
        tracing::info!("registered ERRORFLOW_KESTRA_TOKEN as the management token \"kestra\"");
    }
    Ok(())
}

async fn create_project(store: &dyn Store, name: &str) -> anyhow::Result<(Project, String)> {
    let name = http::api::validate_project_name(name).map_err(anyhow::Error::msg)?;
    let key = credentials::new_ingest_key();
    let project = store
        .create_project(
            name,
            &credentials::hash_secret(&key),
            &credentials::prefix(&key),
        )
        .await?;
    Ok((project, key))
}

async fn project_command(config: &Config, cmd: &ProjectCommand) -> anyhow::Result<()> {
    let store = open_store(&config.database_url).await?;
    let url = |public: &Option<String>| {
        public
            .clone()
            .unwrap_or_else(|| format!("http://{}", crate::config::DEFAULT_LISTEN))
    };
    match cmd {
        ProjectCommand::Create {
            name,
            json,
            public_url,
        } => {
            let (project, key) = create_project(store.as_ref(), name).await?;
            print_project_key(&project, &key, &url(public_url), *json);
        }
        ProjectCommand::List { json } => {
            let projects = store.list_projects().await?;
            if *json {
                println!("{}", serde_json::to_string(&projects)?);
            } else {
                println!("{:>4}  {:<30} {:<10} created", "id", "name", "key");
                for p in projects {
                    println!(
                        "{:>4}  {:<30} {:<10} {}",
                        p.id,
                        p.name,
                        format!("{}…", p.key_prefix),
                        p.created_at.format("%Y-%m-%d %H:%M UTC")
                    );
                }
            }
        }
        ProjectCommand::Delete { project, yes, json } => {
            let found = find_project(store.as_ref(), project).await?;
            if !*yes {
                bail!(
                    "this deletes project {:?} (id {}) with all its incidents and events, \
                     for good; run again with --yes",
                    found.name,
                    found.id
                );
            }
            eprintln!("deleting project {:?} (id {}) …", found.name, found.id);
            let deleted = store::delete_project_in_chunks(store.as_ref(), found.id)
                .await?
                .with_context(|| format!("project {:?} was deleted meanwhile", found.name))?;
            if *json {
                println!(
                    "{}",
                    json!({"id": found.id, "name": found.name, "events": deleted.events, "incidents": deleted.incidents})
                );
            } else {
                println!(
                    "deleted project {:?} (id {}): {} incidents, {} events; its key no longer works \
                     (in running collectors within 10 s)",
                    found.name, found.id, deleted.incidents, deleted.events
                );
            }
        }
        ProjectCommand::RotateKey {
            project,
            json,
            public_url,
        } => {
            let found = find_project(store.as_ref(), project).await?;
            let key = credentials::new_ingest_key();
            store
                .rotate_project_key(
                    found.id,
                    &credentials::hash_secret(&key),
                    &credentials::prefix(&key),
                )
                .await?;
            print_project_key(&found, &key, &url(public_url), *json);
        }
    }
    Ok(())
}

/// The project with this id or name.
async fn find_project(store: &dyn Store, project: &str) -> anyhow::Result<Project> {
    let projects = store.list_projects().await?;
    match projects
        .into_iter()
        .find(|p| p.name == project || p.id.to_string() == project)
    {
        Some(found) => Ok(found),
        None => bail!("no project with id or name {project:?}"),
    }
}

/// The one token with this id or name. A name several tokens share is
/// refused with their ids: revoking the wrong one would lock out a client.
async fn find_token(store: &dyn Store, token: &str) -> anyhow::Result<crate::model::ApiToken> {
    let mut found: Vec<_> = store
        .list_tokens()
        .await?
        .into_iter()
        .filter(|t| t.name == token || t.id.to_string() == token)
        .collect();
    match found.len() {
        0 => bail!("no token with id or name {token:?} (see `errorflow-collector token list`)"),
        1 => Ok(found.remove(0)),
        _ => {
            let ids: Vec<String> = found.iter().map(|t| t.id.to_string()).collect();
            bail!(
                "{} tokens match {token:?} (ids {}); revoke one by its id",
                found.len(),
                ids.join(", ")
            )
        }
    }
}

fn print_project_key(project: &Project, key: &str, public_url: &str, as_json: bool) {
    let dsn = credentials::dsn(public_url, key, project.id);
    if as_json {
        println!(
            "{}",
            json!({"id": project.id, "name": project.name, "key": key, "dsn": dsn})
        );
    } else {
        println!("project:    {} (id {})", project.name, project.id);
        println!("ingest key: {key}  (shown once; stored hashed)");
        println!("DSN:        {dsn}");
    }
}

/// The password for a user command: the first line of standard input, or a
/// generated one (then printed once).
fn password_for(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let password = line.trim_end_matches(['\r', '\n']).to_string();
        auth::validate_password(&password).map_err(anyhow::Error::msg)?;
        Ok((password, false))
    } else {
        Ok((auth::generate_password(), true))
    }
}

async fn user_command(config: &Config, cmd: &UserCommand) -> anyhow::Result<()> {
    let store = open_store(&config.database_url).await?;
    match cmd {
        UserCommand::Create {
            name,
            password_stdin,
        } => {
            let name = auth::validate_user_name(name).map_err(anyhow::Error::msg)?;
            let (password, generated) = password_for(*password_stdin)?;
            let hash = tokio::task::spawn_blocking(move || {
                auth::hash_password(&password).map(|h| (h, password))
            })
            .await?
            .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
            if store.create_user(name, &hash.0).await?.is_none() {
                bail!("a user named {name:?} already exists (use `user set-password {name}`)");
            }
            println!("created dashboard user {name:?}");
            if generated {
                println!("password (shown once): {}", hash.1);
            }
        }
        UserCommand::SetPassword {
            name,
            password_stdin,
        } => {
            let (password, generated) = password_for(*password_stdin)?;
            let hash = tokio::task::spawn_blocking(move || {
                auth::hash_password(&password).map(|h| (h, password))
            })
            .await?
            .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
            if !store.set_user_password(name, &hash.0).await? {
                bail!("no dashboard user named {name:?}");
            }
            println!("password of {name:?} changed; their sessions have ended");
            if generated {
                println!("password (shown once): {}", hash.1);
            }
        }
    }
    Ok(())
}

/// Runs the server until Ctrl-C or SIGTERM.
pub async fn serve(mut config: Config) -> anyhow::Result<()> {
    let store = open_store(&config.database_url).await?;
    // Bound before anything uses the public URL: with `--listen …:0` the OS
    // picks the port, and links and DSNs name that port.
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    config.bound_to(local);
    let first_start = first_start(store.as_ref(), &config.public_url).await?;
    register_kestra_token(
        store.as_ref(),
        std::env::var("ERRORFLOW_KESTRA_TOKEN").ok().as_deref(),
    )
    .await?;
    let admin = first_user(
        store.as_ref(),
        std::env::var("ERRORFLOW_ADMIN_PASSWORD").ok().as_deref(),
    )
    .await?;
    if let Some(queue) = config.queue.clone() {
        return serve_ingest_node(config, store, listener, queue, first_start, admin).await;
    }
    let state = build_state(store.clone(), &config);
    // Without Kestra, the collector's own scheduler runs the periodic triage
    // batch; with it, Kestra's `group-ai-batch` flow does.
    let batch_every = config
        .triage
        .kestra
        .is_none()
        .then_some(Duration::from_secs(5 * 60));
    let triggers = triage::spawn(state.triage.clone(), 1024, batch_every);
    let mut state = state.with_triggers(triggers);
    // Always running: a project may have a webhook of its own.
    let alerts = spawn_alerts(store.clone(), &config)?;
    state = state.with_alerts(alerts);
    if config.alert_webhook.is_some() {
        tracing::info!("new incidents and regressions are sent to the alert webhook, or to their project's own");
    }
    tracing::info!(analyst = ?config.triage.provider, kestra = config.triage.kestra.is_some(), auto = config.triage.auto, "triage ready");
    let app = http::router(state.clone());
    tokio::spawn(quiet_job(store.clone(), config.quiet_after));
    match config.retention {
        Some(keep) => {
            tracing::info!(retention = %crate::retention::Retention(Some(keep)), "events older than the retention period are deleted");
            tokio::spawn(crate::retention::job(store.clone(), keep));
        }
        None => tracing::info!("retention off: events are kept forever"),
    }
    tracing::info!(listen = %local, database = %redact_url(&config.database_url), "errorflow collector started");
    if let Some(text) = first_start {
        println!("{text}");
    }
    if let Some(text) = admin {
        println!("{text}");
    }
    println!("dashboard: {}/", config.public_url);
    // The server loop gives the dashboard the client address (sign-in
    // throttling) and bounds how long a request may take to arrive.
    http::server::serve(listener, app, config.timeouts, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Queue mode's ingest node: everything `serve` does up to the write, which
/// is a publish to the stream; triage, alerts and the periodic jobs run in
/// the writers.
async fn serve_ingest_node(
    config: Config,
    store: Arc<dyn Store>,
    listener: TcpListener,
    queue: crate::queue::QueueOptions,
    first_start: Option<String>,
    admin: Option<String>,
) -> anyhow::Result<()> {
    require_postgres(store.as_ref())?;
    let publisher = crate::queue::Publisher::connect(queue.clone()).await?;
    let state = build_state_for(store.clone(), &config, false).with_queue(publisher);
    tracing::info!(
        queue = %queue.url, stream = %queue.stream, partitions = queue.partitions,
        listen = %config.listen, database = %redact_url(&config.database_url),
        "errorflow ingest node started: events go to the queue, the writers store them"
    );
    if let Some(text) = first_start {
        println!("{text}");
    }
    if let Some(text) = admin {
        println!("{text}");
    }
    println!("dashboard: {}/", config.public_url);
    let app = http::router(state);
    http::server::serve(listener, app, config.timeouts, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

fn require_postgres(store: &dyn Store) -> anyhow::Result<()> {
    if store.backend() != Backend::Postgres {
        bail!(
            "queue mode needs Postgres (DATABASE_URL=postgres://…), which the ingest nodes and writers share"
        );
    }
    Ok(())
}

/// `errorflow-collector writer`: consumes the queue's partitions into
/// Postgres (see [`crate::queue::writer`]), and serves `/healthz`,
/// `/readyz` and `/metrics`.
pub async fn writer(mut config: Config) -> anyhow::Result<()> {
    let Some(queue) = config.queue.clone() else {
        bail!("writer needs --queue nats://HOST:4222 (ERRORFLOW_QUEUE_URL)");
    };
    let store = open_store(&config.database_url).await?;
    require_postgres(store.as_ref())?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    config.bound_to(local);
    let js = crate::queue::connect(&queue).await?;
    let state = build_state_for(store.clone(), &config, false);
    let triggers = triage::spawn_worker(state.triage.clone(), 1024);
    let alerts = spawn_alerts(store.clone(), &config)?;
    let hooks = crate::queue::writer::Hooks {
        triggers: Some(triggers.clone()),
        alerts: Some(alerts),
    };
    // Started each time this writer becomes the leader; the writer aborts
    // the tasks when it loses the leader lock.
    let on_leader = {
        let (store, triage, config) = (store.clone(), state.triage.clone(), config.clone());
        move || {
            let batch_every = config
                .triage
                .kestra
                .is_none()
                .then_some(Duration::from_secs(5 * 60));
            let mut tasks = triage::spawn_periodic(triage.clone(), &triggers, batch_every);
            if let (Some(handle), Some(k)) = (triage.kestra(), config.triage.kestra.clone()) {
                match kestra::KestraClient::new(k) {
                    Ok(client) => tasks.extend(handle.spawn_workers(client)),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot set up the Kestra client; flows will not be started")
                    }
                }
            }
            tasks.push(tokio::spawn(quiet_job(store.clone(), config.quiet_after)));
            if let Some(keep) = config.retention {
                tasks.push(tokio::spawn(crate::retention::job(store.clone(), keep)));
            }
            tasks
        }
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let ops = http::operations_router(state.clone(), Some(js.client().clone()));
    let server = http::server::serve(
        listener,
        ops,
        config.timeouts,
        until_stopped(stopped.clone()),
    );
    tracing::info!(
        queue = %queue.url, stream = %queue.stream, partitions = queue.partitions,
        listen = %local, database = %redact_url(&config.database_url),
        "errorflow writer started"
    );
    println!("writer: {}/readyz", config.public_url);
    let consume = crate::queue::writer::run(
        js,
        &config.database_url,
        queue,
        store.clone(),
        state.writer.clone(),
        hooks,
        on_leader,
        until_stopped(stopped),
    );
    let (served, consumed) = tokio::join!(server, consume);
    served?;
    consumed?;
    tracing::info!("stopped");
    Ok(())
}

/// Starts the alert sender: the collector's `--alert-webhook` (checked
/// against the outgoing address policy) and every project's own.
fn spawn_alerts(store: Arc<dyn Store>, config: &Config) -> anyhow::Result<crate::alerts::Alerts> {
    let mut options =
        crate::alerts::AlertOptions::new(config.alert_webhook.clone(), &config.public_url);
    options.policy = config.webhook_policy.clone();
    if let Some(url) = &config.alert_webhook {
        if let Err(why) = crate::alerts::validate_webhook_url(url.expose(), &options.policy) {
            bail!("--alert-webhook: {why}");
        }
    }
    crate::alerts::spawn(store, options).context("cannot set up the alert webhooks' HTTP client")
}

/// The state shared by the handlers, with writer tasks sized for the backend.
pub fn build_state(store: Arc<dyn Store>, config: &Config) -> AppState {
    build_state_for(store, config, true)
}

/// [`build_state`]; `kestra_workers` false leaves the Kestra outbox to be
/// sent by another process (queue mode's leading writer).
fn build_state_for(store: Arc<dyn Store>, config: &Config, kestra_workers: bool) -> AppState {
    let writers = match store.backend() {
        Backend::Sqlite => 1,
        Backend::Postgres => 2,
    };
    let writer = Writer::start(
        store.clone(),
        WriterOptions {
            writers,
            queue_capacity: config.write_queue,
            enqueue_timeout: config.write_queue_timeout,
            ..WriterOptions::default()
        },
    );
    let triage = build_triage(store.clone(), config, kestra_workers);
    AppState::new(
        store,
        writer,
        config.limits.clone(),
        &config.public_url,
        telemetry::metrics_handle(),
    )
    .with_key_rate(config.key_rate)
    .with_webhook_policy(config.webhook_policy.clone())
    .with_scrub(config.scrub.clone())
    .with_triage(Arc::new(triage))
    .with_quiet_after(config.quiet_after)
}

/// The triage service named by the configuration. A model client that
/// cannot be built falls back to the built-in analyst (and says so) rather
/// than stopping ingest from starting.
fn build_triage(store: Arc<dyn Store>, config: &Config, kestra_workers: bool) -> Triage {
    let options = config.triage.clone();
    let analyst = options.analyst().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot set up the configured analyst; using the built-in one");
        Arc::new(options.builtin())
    });
    let kestra = options.kestra.clone();
    let mut triage = Triage::new(store.clone(), analyst, options);
    if let (Some(_), false) = (&kestra, kestra_workers) {
        return triage.with_kestra(kestra::KestraHandle::outbox_only(store));
    }
    if let Some(k) = kestra {
        match kestra::KestraClient::new(k) {
            Ok(client) => triage = triage.with_kestra(kestra::spawn(client, store)),
            Err(e) => {
                tracing::error!(error = %e, "cannot set up the Kestra client; flows will not be started")
            }
        }
    }
    triage
}

/// On an empty database: creates project `default` and a management token,
/// and returns the text that shows them once. A database whose projects
/// were all deleted is not empty: it has its tokens, and gets no new ones.
async fn first_start(store: &dyn Store, public_url: &str) -> anyhow::Result<Option<String>> {
    if !store.list_projects().await?.is_empty() || !store.list_tokens().await?.is_empty() {
        return Ok(None);
    }
    let (project, key) = match create_project(store, "default").await {
        Ok(created) => created,
        // Another collector process on the same database won the race.
        Err(e) if matches!(e.downcast_ref(), Some(store::StoreError::ProjectExists(_))) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let token = create_token(store, "admin").await?;
    Ok(Some(format!(
        "first start: created project {:?}\n\
         DSN (give it to your services; shown once): {}\n\
         management token for the REST API (shown once): {}",
        project.name,
        credentials::dsn(public_url, &key, project.id),
        token
    )))
}

/// When there is no dashboard user: creates `admin` with `password` (from
/// `ERRORFLOW_ADMIN_PASSWORD`) or a generated one, and returns the text
/// that tells it (the generated password, shown once).
pub async fn first_user(
    store: &dyn Store,
    password: Option<&str>,
) -> anyhow::Result<Option<String>> {
    if store.count_users().await? > 0 {
        return Ok(None);
    }
    let given = password.map(str::to_string).filter(|p| !p.is_empty());
    if let Some(p) = &given {
        auth::validate_password(p).map_err(|e| anyhow::anyhow!("ERRORFLOW_ADMIN_PASSWORD: {e}"))?;
    }
    let generated = given.is_none();
    let password = given.unwrap_or_else(auth::generate_password);
    let hash = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || auth::hash_password(&password))
            .await?
            .map_err(|e| anyhow::anyhow!("cannot hash the admin password: {e}"))?
    };
    // Another collector process on the same database may have won the race.
    if store.create_user("admin", &hash).await?.is_none() {
        return Ok(None);
    }
    Ok(Some(if generated {
        format!("dashboard sign-in: created user \"admin\" with password (shown once): {password}")
    } else {
        "dashboard sign-in: created user \"admin\" with the password in ERRORFLOW_ADMIN_PASSWORD"
            .to_string()
    }))
}

/// Moves idle OPEN incidents to QUIET every minute (or sooner for short quiet periods).
pub async fn quiet_job(store: Arc<dyn Store>, quiet_after: Duration) {
    let period = (quiet_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Utc::now();
        let Ok(quiet_after) = chrono::Duration::from_std(quiet_after) else {
            return;
        };
        match store.quiet_idle(now - quiet_after, now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(incidents = n, "quieted idle incidents"),
            Err(e) => tracing::warn!(error = %e, "quiet check failed; will retry"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_kestra_token_is_registered_once_and_must_be_long() {
        let store = open_store("sqlite::memory:").await.unwrap();
        assert!(register_kestra_token(store.as_ref(), Some("short"))
            .await
            .unwrap_err()
            .to_string()
            .contains("shorter than 32"));
        register_kestra_token(store.as_ref(), None).await.unwrap();
        assert!(store.list_tokens().await.unwrap().is_empty());
        let token = "k".repeat(40);
        register_kestra_token(store.as_ref(), Some(&token))
            .await
            .unwrap();
        register_kestra_token(store.as_ref(), Some(&token))
            .await
            .unwrap();
        let tokens = store.list_tokens().await.unwrap();
        assert_eq!(tokens.len(), 1, "registered once");
        assert_eq!(tokens[0].name, "kestra");
        let found = store
            .token_by_hash(&credentials::hash_secret(&token))
            .await
            .unwrap();
        assert!(found.is_some());
    }
}
