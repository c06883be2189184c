//! Command line and configuration.
//!
//! Precedence, lowest first: built-in defaults → the optional TOML file
//! (`--config` / `ERRORFLOW_CONFIG`) → `ERRORFLOW_*` / `DATABASE_URL`
//! environment → flags. clap resolves environment and flags together (a flag
//! wins over its variable); the file fills what neither set.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::http::rate_limit::KeyRate;
use crate::pipeline::Limits;
use crate::retention::Retention;
use crate::store::redact_url;
use crate::triage::kestra::KestraOptions;
use crate::triage::{Provider, Secret, TriageOptions};

const ABOUT: &str = "errorflow collector: receives error events, groups them into incidents, \
stores them in Postgres or SQLite and serves the REST API and dashboard.";

const AFTER_HELP: &str = "\
With no subcommand, `serve` runs. On a first start with an empty database the collector \
creates project `default` and a management token, and prints the DSN to give your \
services and the dashboard URL. When there is no dashboard user yet it creates `admin` \
with the password in ERRORFLOW_ADMIN_PASSWORD, or a generated one printed once.

Examples:
  errorflow-collector                                  # SQLite file ./errorflow.db on 127.0.0.1:8000
  DATABASE_URL=postgres://postgres@127.0.0.1/errorflow errorflow-collector serve
  errorflow-collector project create checkout --json   # a new project and its DSN
  errorflow-collector token create --name ci           # a token for the REST API
  errorflow-collector user create alice --password-stdin < pw.txt";

#[derive(Debug, Parser)]
#[command(name = "errorflow-collector", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    /// Optional TOML configuration file (keys: listen, database_url, public_url,
    /// quiet_after, retention, alert_webhook, scrub, scrub_ip, log_format, log_level, and `[limits]`, `[triage]` and `[kestra]` tables).
    #[arg(long, global = true, env = "ERRORFLOW_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Database: `sqlite://PATH` (created if missing) or `postgres://USER@HOST/DB`.
    /// Default `sqlite://errorflow.db`.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Log format: `pretty` for people, `json` for log pipelines. Default `pretty`.
    #[arg(long, global = true, env = "ERRORFLOW_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log filter in `tracing` syntax (e.g. `info,errorflow_collector=debug`). Default `info`.
    #[arg(long, global = true, env = "ERRORFLOW_LOG", value_name = "FILTER")]
    pub log_level: Option<String>,

    /// `serve`'s flags, for a start without subcommand (`serve` is the default).
    #[command(flatten)]
    pub serve: ServeArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Parses a command line like [`Parser::try_parse_from`], and also
    /// refuses `serve`'s flags given before a subcommand (`--listen X
    /// migrate`, or `--listen X serve`), which would otherwise be ignored
    /// without a word. Flags that come from the environment are not checked:
    /// they apply to whatever runs.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::parser::ValueSource;
        use clap::{CommandFactory, FromArgMatches};
        let mut cmd = Cli::command();
        let matches = cmd.try_get_matches_from_mut(args)?;
        let cli = Cli::from_arg_matches(&matches)?;
        if let Some((sub, _)) = matches.subcommand() {
            let global: Vec<&str> = cmd
                .get_arguments()
                .filter(|a| a.is_global_set())
                .map(|a| a.get_id().as_str())
                .collect();
            let misplaced = matches.ids().map(|id| id.as_str()).find(|id| {
                !global.contains(id) && matches.value_source(id) == Some(ValueSource::CommandLine)
            });
            if let Some(id) = misplaced {
                let flag = cmd
                    .get_arguments()
                    .find(|a| a.get_id() == id)
                    .and_then(|a| a.get_long())
                    .unwrap_or(id);
                let message = if sub == "serve" {
                    format!("--{flag} goes after `serve` (or leave `serve` out: it is the default)")
                } else {
                    format!("--{flag} is a flag of `serve`; `{sub}` does not take it")
                };
                return Err(cmd.error(clap::error::ErrorKind::ArgumentConflict, message));
            }
        }
        Ok(cli)
    }

    /// The flags of the server when it is what runs: `serve`'s, or the
    /// top-level ones when no subcommand is given; `None` for other commands.
    pub fn serve_args(&self) -> Option<&ServeArgs> {
        match &self.command {
            None => Some(&self.serve),
            Some(Command::Serve(args) | Command::Writer(args)) => Some(args),
            Some(_) => None,
        }
    }
}

// Parsed once at start-up: the size of `Serve` (its triage flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector (the default).
    Serve(ServeArgs),
    /// Queue mode: consume the stream's partitions and write their events
    /// to Postgres (with `--queue`; takes `serve`'s flags for triage,
    /// alerts, retention and the quiet check, which the writers run; its
    /// listen address serves `/healthz`, `/readyz` and `/metrics` only).
    Writer(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Write a consistent copy of a SQLite database to FILE, safe while the
    /// collector runs; the database itself is left as it is, not migrated
    /// (for Postgres, use pg_dump).
    Backup {
        /// The copy to write; it must not exist yet.
        file: PathBuf,
    },
    /// Manage projects and their ingest keys.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage tokens for the REST API.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage dashboard users.
    #[command(subcommand)]
    User(UserCommand),
    /// Root-cause analysis of an incident with its repository in view: reads
    /// the incident from a collector's REST API, maps its innermost in-app
    /// frames to files in a checkout, reads the code around them, finds the
    /// commits that last changed those lines at the incident's release
    /// (`git blame`), and prints the analysis as Markdown (or JSON). Nothing
    /// from the checkout is executed.
    Rca(RcaArgs),
}

/// `errorflow-collector rca`.
#[derive(Debug, Args)]
pub struct RcaArgs {
    /// The collector's URL, e.g. `https://errors.example.com`.
    #[arg(long, env = "ERRORFLOW_URL", value_name = "URL")]
    pub url: String,
    /// A management token of that collector (`errorflow-collector token create`).
    #[arg(long, env = "ERRORFLOW_TOKEN", value_name = "TOKEN", hide_env_values = true,
        value_parser = |s: &str| Ok::<_, String>(crate::triage::Secret::new(s)))]
    pub token: crate::triage::Secret,
    /// The incident's id.
    #[arg(long, value_name = "ID")]
    pub incident: i64,
    /// A checkout of the incident's repository (with its tags).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo_dir: PathBuf,
    /// Print JSON instead of Markdown.
    #[arg(long)]
    pub json: bool,
    /// Also post the analysis as a comment on this issue (`owner/name#N`),
    /// with the token in `GITHUB_TOKEN` (and `GITHUB_API_URL`, default
    /// `https://api.github.com`).
    #[arg(long, value_name = "OWNER/NAME#N")]
    pub post: Option<String>,
    /// The analyst asked for the hypothesis (the configuration file's
    /// `[triage]` table applies too).
    #[command(flatten)]
    pub analyst: AnalystArgs,
}

#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on. Default `127.0.0.1:8000`.
    #[arg(long, env = "ERRORFLOW_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// The URL services and browsers reach the collector at, used in DSNs and
    /// printed links. Default `http://<listen address>`.
    #[arg(long, env = "ERRORFLOW_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// An OPEN incident with no event for this long becomes QUIET. Default `30m`.
    #[arg(long, env = "ERRORFLOW_QUIET_AFTER", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub quiet_after: Option<Duration>,

    /// How long events are kept (at least `1h`), or `off` to keep them
    /// forever. Older events are deleted, and so are incidents left without
    /// events once idle as long. Default `90d`.
    #[arg(long, env = "ERRORFLOW_RETENTION", value_name = "DURATION|off")]
    pub retention: Option<Retention>,

    /// Webhook told of every new incident and regression (JSON with `text` and
    /// `content`, so Slack, Mattermost, Discord and Teams show it as it is).
    /// A project with a webhook of its own (project page, or
    /// `PUT /api/v1/projects/{id}/alert-webhook`) uses that one instead.
    /// The URL is never logged.
    #[arg(
        long,
        env = "ERRORFLOW_ALERT_WEBHOOK",
        value_name = "URL",
        hide_env_values = true
    )]
    pub alert_webhook: Option<String>,

    /// Internal destinations alert webhooks and projects' GitHub API URLs
    /// may reach after all, comma separated: addresses (`127.0.0.1`),
    /// networks (`10.0.0.0/8`) or host names (`chat.internal`). By default
    /// they never reach loopback,
    /// private, link-local, unique-local, multicast or cloud metadata
    /// addresses, checked on the address each name resolves to when the
    /// connection is made.
    #[arg(
        long,
        env = "ERRORFLOW_ALLOW_WEBHOOK_HOSTS",
        value_name = "HOST|ADDR|NET,...",
        value_delimiter = ','
    )]
    pub allow_webhook_hosts: Option<Vec<String>>,

    /// Server-side scrubbing of every event, whatever sent it: `on` replaces
    /// passwords, tokens, card numbers, IBANs, private keys and other
    /// secrets with `[Filtered]` before the event is grouped, stored or
    /// sent to a model; `off` stores events as sent. Default `on`.
    #[arg(long, env = "ERRORFLOW_SCRUB", value_name = "on|off", value_enum)]
    pub scrub: Option<ScrubMode>,

    /// Also remove IP addresses from events: the user's, the request's,
    /// forwarding headers (`X-Forwarded-For`, …) and addresses in text.
    /// `--scrub-ip` alone means `true`. Default `false`.
    #[arg(long, env = "ERRORFLOW_SCRUB_IP", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub scrub_ip: Option<bool>,

    /// How long a client may take to send a request's line and headers
    /// before its connection is closed (`30s`, `1m`). Default 10 s.
    #[arg(long, env = "ERRORFLOW_HEADER_READ_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Option<Duration>,

    /// How long a client may take to send a request's body, from the end
    /// of its headers; later, ingest answers 408. Default 30 s.
    #[arg(long, env = "ERRORFLOW_BODY_READ_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub body_read_timeout: Option<Duration>,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub triage: TriageArgs,

    #[command(flatten)]
    pub queue: QueueArgs,
}

/// Queue mode (scale-out on NATS JetStream); see the README's "Scale out".
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Queue mode")]
pub struct QueueArgs {
    /// NATS server(s) with JetStream, e.g. `nats://127.0.0.1:4222`. With it,
    /// `serve` is an ingest node that publishes events to the stream (and
    /// answers 2xx once JetStream has them), and `writer` consumes them into
    /// Postgres. Without it, one process does everything.
    #[arg(long = "queue", env = "ERRORFLOW_QUEUE_URL", value_name = "URL")]
    pub queue_url: Option<String>,
    /// The stream's name (and its subjects' first token). Default `errorflow`.
    #[arg(long, env = "ERRORFLOW_QUEUE_STREAM", value_name = "NAME")]
    pub queue_stream: Option<String>,
    /// Partitions of the stream (fixed for its life; at most 4096). Default 16.
    #[arg(long, env = "ERRORFLOW_QUEUE_PARTITIONS", value_name = "N", value_parser = positive)]
    pub queue_partitions: Option<usize>,
    /// Copies of each message in a NATS cluster, when the stream is created. Default 1.
    #[arg(long, env = "ERRORFLOW_QUEUE_REPLICAS", value_name = "N", value_parser = positive)]
    pub queue_replicas: Option<usize>,
}

/// Ingest limits; each also a key of the file's `[limits]` table.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Ingest limits")]
pub struct LimitArgs {
    /// Largest request body as sent (compressed or not), in bytes; larger gets 413. Default 5 MiB.
    #[arg(long, env = "ERRORFLOW_MAX_BODY_BYTES", value_name = "BYTES", value_parser = positive)]
    pub max_body_bytes: Option<usize>,
    /// Largest request body after decompression, in bytes; inflating stops there with 413. Default 20 MiB.
    #[arg(long, env = "ERRORFLOW_MAX_DECOMPRESSED_BYTES", value_name = "BYTES", value_parser = positive)]
    pub max_decompressed_bytes: Option<usize>,
    /// Most events in one `POST /api/v1/events` batch; more gets 413. Default 1000.
    #[arg(long, env = "ERRORFLOW_MAX_EVENTS_PER_BATCH", value_name = "N", value_parser = positive)]
    pub max_events_per_batch: Option<usize>,
    /// Largest event JSON, in bytes: a larger event is rejected (its neighbours kept;
    /// a Sentry envelope gets 413). Default 1 MiB.
    #[arg(long, env = "ERRORFLOW_MAX_EVENT_BYTES", value_name = "BYTES", value_parser = positive)]
    pub max_event_bytes: Option<usize>,
    /// Every ingest endpoint: sustained events per second per project key, 0 for no limit
    /// (over it, 429 with `Retry-After`). Default 1000.
    #[arg(long, env = "ERRORFLOW_KEY_EVENTS_PER_SECOND", value_name = "N")]
    pub key_events_per_second: Option<u32>,
    /// Every ingest endpoint: events a key may send at once above the sustained rate. Default 5000.
    #[arg(long, env = "ERRORFLOW_KEY_EVENTS_BURST", value_name = "N")]
    pub key_events_burst: Option<u32>,
    /// Requests waiting for the database writer before new ones wait for room. Default 1024.
    #[arg(long, env = "ERRORFLOW_WRITE_QUEUE", value_name = "N", value_parser = positive)]
    pub write_queue: Option<usize>,
    /// How long a request waits for room in a full write queue before it gets 503
    /// (with `Retry-After`). Default `5s`.
    #[arg(long, env = "ERRORFLOW_WRITE_QUEUE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub write_queue_timeout: Option<Duration>,
}

/// A count or size that must not be zero (a zero limit would refuse everything).
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Which analyst triages (and analyses root causes), shared by `serve`
/// and `rca`.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Analyst")]
pub struct AnalystArgs {
    /// Analyst: `builtin` (offline rules, the default), `openai` (any
    /// OpenAI-compatible chat-completions endpoint) or `gemini`.
    #[arg(long, env = "ERRORFLOW_LLM_PROVIDER", value_enum)]
    pub llm_provider: Option<Provider>,
    /// Base URL of the model API (default `https://api.openai.com/v1` or
    /// `https://generativelanguage.googleapis.com`).
    #[arg(long, env = "ERRORFLOW_LLM_BASE_URL", value_name = "URL")]
    pub llm_base_url: Option<String>,
    /// Model name (default `gpt-4o-mini` or `gemini-2.5-flash`).
    #[arg(long, env = "ERRORFLOW_LLM_MODEL", value_name = "NAME")]
    pub llm_model: Option<String>,
    /// API key of the model API (never logged).
    #[arg(
        long,
        env = "ERRORFLOW_LLM_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub llm_api_key: Option<String>,
    /// Timeout of one model request. Default `30s`.
    #[arg(long, env = "ERRORFLOW_LLM_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub llm_timeout: Option<Duration>,
    /// Model requests per minute, retries included. Default 30.
    #[arg(long, env = "ERRORFLOW_LLM_REQUESTS_PER_MINUTE", value_name = "N")]
    pub llm_requests_per_minute: Option<u32>,
    /// A TOML file of triage rules (`[[rule]]` entries: class, patterns,
    /// weight) read before the built-in table: an entry with a built-in id
    /// replaces it, a new id is tried first. A bad file stops the start with
    /// its line. See the README's "AI triage" section.
    #[arg(long, env = "ERRORFLOW_TRIAGE_RULES", value_name = "FILE")]
    pub triage_rules: Option<PathBuf>,
}

/// AI triage and Kestra settings.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "AI triage")]
pub struct TriageArgs {
    #[command(flatten)]
    pub llm: AnalystArgs,
    /// Triage new incidents, regressions, spikes and stale incidents automatically. Default `true`.
    #[arg(long, env = "ERRORFLOW_TRIAGE_AUTO", value_name = "BOOL")]
    pub triage_auto: Option<bool>,
    /// An open incident's triage is stale after this long when it has new events. Default `1h`.
    #[arg(long, env = "ERRORFLOW_TRIAGE_STALE_AFTER", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub triage_stale_after: Option<Duration>,
    /// Kestra's URL; when set, the collector starts the `error-intake` and
    /// `group-summary-agent` flows and leaves the periodic jobs to Kestra.
    #[arg(long, env = "KESTRA_URL", value_name = "URL")]
    pub kestra_url: Option<String>,
    #[arg(long, env = "KESTRA_USERNAME", value_name = "USER")]
    pub kestra_username: Option<String>,
    #[arg(
        long,
        env = "KESTRA_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub kestra_password: Option<String>,
    /// Default `main`.
    #[arg(long, env = "KESTRA_TENANT", value_name = "TENANT")]
    pub kestra_tenant: Option<String>,
    /// Default `main`.
    #[arg(long, env = "KESTRA_NAMESPACE", value_name = "NAMESPACE")]
    pub kestra_namespace: Option<String>,
    /// How often the Kestra runs the collector started are polled until
    /// they end (their outcome shows on the incident page and in
    /// `/metrics`). Default `10s`.
    #[arg(long, env = "ERRORFLOW_KESTRA_POLL_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub kestra_poll_interval: Option<Duration>,
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project; prints its id, ingest key and DSN (the key is shown only once).
    Create {
        name: String,
        /// Print one JSON object `{"id", "name", "key", "dsn"}`.
        #[arg(long)]
        json: bool,
        /// Public URL used in the DSN. Default `http://127.0.0.1:8000`.
        #[arg(long, env = "ERRORFLOW_PUBLIC_URL", value_name = "URL")]
        public_url: Option<String>,
    },
    /// List projects.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a project with all its incidents and events; its key stops
    /// working (in running collectors within 10 s). Asks for --yes.
    Delete {
        /// Project id or name.
        project: String,
        /// Really delete: nothing of the project can be recovered.
        #[arg(long)]
        yes: bool,
        /// Print `{"id", "name", "events", "incidents"}`.
        #[arg(long)]
        json: bool,
    },
    /// Replace a project's ingest key; the old key stops working. Prints the new key and DSN.
    RotateKey {
        /// Project id or name.
        project: String,
        #[arg(long)]
        json: bool,
        #[arg(long, env = "ERRORFLOW_PUBLIC_URL", value_name = "URL")]
        public_url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a management token for the REST API (shown only once; stored hashed).
    Create {
        #[arg(long, default_value = "cli")]
        name: String,
        /// Print `{"token": …}`.
        #[arg(long)]
        json: bool,
    },
    /// List management tokens: id, name, when created and last used (never the token).
    List {
        /// Print a JSON array of `{id, name, created_at, last_used_at}`.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a management token: running collectors refuse it within 10 s.
    Revoke {
        /// Token id or name (a name shared by several tokens must be given as an id).
        token: String,
        /// Print the revoked token as `{id, name, created_at, last_used_at}`.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a dashboard user. Without --password-stdin a password is
    /// generated and printed once.
    Create {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password and end their sessions. Without
    /// --password-stdin a password is generated and printed once.
    SetPassword {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// `--scrub`: whether events are scrubbed of secrets at ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScrubMode {
    #[default]
    On,
    Off,
}

/// The optional configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub public_url: Option<String>,
    #[serde(default, with = "humantime_serde_opt")]
    pub quiet_after: Option<Duration>,
    #[serde(default, deserialize_with = "retention_opt")]
    pub retention: Option<Retention>,
    pub alert_webhook: Option<String>,
    pub allow_webhook_hosts: Option<Vec<String>>,
    pub scrub: Option<ScrubMode>,
    pub scrub_ip: Option<bool>,
    #[serde(default, with = "humantime_serde_opt")]
    pub header_read_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub body_read_timeout: Option<Duration>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub triage: FileTriage,
    #[serde(default)]
    pub kestra: FileKestra,
}

/// The `[triage]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTriage {
    pub provider: Option<Provider>,
    pub llm_base_url: Option<String>,
    pub llm_model: Option<String>,
    pub llm_api_key: Option<String>,
    #[serde(default, with = "humantime_serde_opt")]
    pub llm_timeout: Option<Duration>,
    pub llm_requests_per_minute: Option<u32>,
    pub auto: Option<bool>,
    #[serde(default, with = "humantime_serde_opt")]
    pub stale_after: Option<Duration>,
    /// A file of triage rules, as `--triage-rules`.
    pub rules: Option<PathBuf>,
}

/// The `[kestra]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileKestra {
    pub url: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tenant: Option<String>,
    pub namespace: Option<String>,
    #[serde(default, with = "humantime_serde_opt")]
    pub poll_interval: Option<Duration>,
}

/// Overrides of [`Limits`] in the file; unset keys keep the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_body_bytes: Option<usize>,
    pub max_decompressed_bytes: Option<usize>,
    pub max_events_per_batch: Option<usize>,
    pub max_event_bytes: Option<usize>,
    /// Sentry ingest: sustained events per second per project key (0: no limit).
    pub key_events_per_second: Option<u32>,
    /// Sentry ingest: events a key may send at once above the sustained rate.
    pub key_events_burst: Option<u32>,
    /// Requests waiting for the database writer before new ones wait for room.
    pub write_queue: Option<usize>,
    /// How long a request waits for room in a full write queue before 503.
    #[serde(default, with = "humantime_serde_opt")]
    pub write_queue_timeout: Option<Duration>,
}

fn retention_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Retention>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| s.parse().map_err(serde::de::Error::custom))
        .transpose()
}

mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Everything the server needs, resolved.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub public_url: String,
    pub quiet_after: Duration,
    /// How long events are kept; `None`: forever.
    pub retention: Option<Duration>,
    /// Where alerts of new incidents and regressions go when their project
    /// has no webhook of its own; redacted by `Debug`.
    pub alert_webhook: Option<Secret>,
    /// Internal destinations alert webhooks may reach (`--allow-webhook-hosts`).
    pub webhook_policy: std::sync::Arc<crate::outbound::AddressPolicy>,
    /// Server-side scrubbing (`--scrub`, `--scrub-ip`); a project's own
    /// names are added per request.
    pub scrub: crate::pipeline::scrub::Rules,
    /// Read timeouts of every connection.
    pub timeouts: crate::http::server::Timeouts,
    pub log_format: LogFormat,
    pub log_level: String,
    pub limits: Limits,
    /// AI triage and Kestra; secrets inside are redacted by `Debug`.
    pub triage: TriageOptions,
    /// Per-key rate limit of the Sentry endpoints.
    pub key_rate: KeyRate,
    /// Requests waiting for the writer, and how long one waits for room.
    pub write_queue: usize,
    pub write_queue_timeout: Duration,
    /// Queue mode, when `--queue` is given.
    pub queue: Option<crate::queue::QueueOptions>,
    /// Whether `public_url` was derived from `listen` rather than given.
    pub public_url_from_listen: bool,
}

impl fmt::Debug for Config {
    // The database URL may hold a password: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("public_url", &self.public_url)
            .field("quiet_after", &self.quiet_after)
            .field("retention", &self.retention)
            .field("alert_webhook", &self.alert_webhook)
            .field("webhook_policy", &self.webhook_policy)
            .field("scrub", &self.scrub)
            .field("timeouts", &self.timeouts)
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .field("limits", &self.limits)
            .field("triage", &self.triage)
            .field("key_rate", &self.key_rate)
            .field("write_queue", &self.write_queue)
            .field("write_queue_timeout", &self.write_queue_timeout)
            .finish()
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://errorflow.db";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid config file {path}: [limits] {key} must be at least 1")]
    ZeroLimit { path: PathBuf, key: &'static str },
    #[error("--queue-partitions: at most {max}, not {given}")]
    TooManyPartitions { given: usize, max: u32 },
    #[error("--queue-stream {0:?}: use 1 to 64 letters, digits, `-` or `_` (a JetStream stream name and subject token)")]
    StreamName(String),
    #[error("invalid triage rules: {0}")]
    TriageRules(#[from] crate::triage::rules::RulesError),
    #[error(
        "invalid --allow-webhook-hosts (ERRORFLOW_ALLOW_WEBHOOK_HOSTS, allow_webhook_hosts): {0}"
    )]
    AllowList(String),
}

impl Config {
    /// Resolves the configuration for `cli` and, when serving, its serve flags.
    pub fn resolve(cli: &Cli, serve: Option<&ServeArgs>) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        if let Some(path) = &cli.config {
            let l = &file.limits;
            for (key, value) in [
                ("max_body_bytes", l.max_body_bytes),
                ("max_decompressed_bytes", l.max_decompressed_bytes),
                ("max_events_per_batch", l.max_events_per_batch),
                ("max_event_bytes", l.max_event_bytes),
                ("write_queue", l.write_queue),
            ] {
                if value == Some(0) {
                    return Err(ConfigError::ZeroLimit {
                        path: path.clone(),
                        key,
                    });
                }
            }
        }
        let listen = serve
            .and_then(|s| s.listen)
            .or(file.listen)
            .unwrap_or_else(|| {
                DEFAULT_LISTEN
                    .parse()
                    .expect("default listen address parses")
            });
        let given_public_url = serve.and_then(|s| s.public_url.clone()).or(file.public_url);
        let public_url_from_listen = given_public_url.is_none();
        let public_url = given_public_url.unwrap_or_else(|| format!("http://{listen}"));
        // A flag (or its variable) wins over the file, which wins over the default.
        let flags = serve.map(|s| &s.limits);
        let pick = |flag: Option<usize>, file: Option<usize>, default: usize| {
            flag.or(file).unwrap_or(default)
        };
        let defaults = Limits::default();
        let limits = Limits {
            max_body_bytes: pick(
                flags.and_then(|l| l.max_body_bytes),
                file.limits.max_body_bytes,
                defaults.max_body_bytes,
            ),
            max_decompressed_bytes: pick(
                flags.and_then(|l| l.max_decompressed_bytes),
                file.limits.max_decompressed_bytes,
                defaults.max_decompressed_bytes,
            ),
            max_events_per_batch: pick(
                flags.and_then(|l| l.max_events_per_batch),
                file.limits.max_events_per_batch,
                defaults.max_events_per_batch,
            ),
            max_event_bytes: pick(
                flags.and_then(|l| l.max_event_bytes),
                file.limits.max_event_bytes,
                defaults.max_event_bytes,
            ),
            ..defaults
        };
        let default_rate = KeyRate::default();
        let writer_defaults = crate::writer::WriterOptions::default();
        let key_rate = KeyRate {
            per_second: flags
                .and_then(|l| l.key_events_per_second)
                .or(file.limits.key_events_per_second)
                .unwrap_or(default_rate.per_second),
            burst: flags
                .and_then(|l| l.key_events_burst)
                .or(file.limits.key_events_burst)
                .unwrap_or(default_rate.burst),
        };
        Ok(Config {
            listen,
            database_url: cli
                .database_url
                .clone()
                .or(file.database_url)
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string()),
            public_url: public_url.trim_end_matches('/').to_string(),
            quiet_after: serve
                .and_then(|s| s.quiet_after)
                .or(file.quiet_after)
                .unwrap_or(Duration::from_secs(30 * 60)),
            retention: serve
                .and_then(|s| s.retention)
                .or(file.retention)
                .unwrap_or_default()
                .0,
            alert_webhook: serve
                .and_then(|s| s.alert_webhook.clone())
                .or(file.alert_webhook)
                .filter(|url| !url.trim().is_empty())
                .map(Secret::new),
            webhook_policy: std::sync::Arc::new(
                crate::outbound::AddressPolicy::parse(
                    &serve
                        .and_then(|s| s.allow_webhook_hosts.clone())
                        .or(file.allow_webhook_hosts)
                        .unwrap_or_default(),
                )
                .map_err(ConfigError::AllowList)?,
            ),
            scrub: crate::pipeline::scrub::Rules::new(
                serve
                    .and_then(|s| s.scrub)
                    .or(file.scrub)
                    .unwrap_or_default()
                    == ScrubMode::On,
                serve
                    .and_then(|s| s.scrub_ip)
                    .or(file.scrub_ip)
                    .unwrap_or(false),
            ),
            timeouts: crate::http::server::Timeouts {
                header_read: serve
                    .and_then(|s| s.header_read_timeout)
                    .or(file.header_read_timeout)
                    .unwrap_or(crate::http::server::Timeouts::default().header_read),
                body_read: serve
                    .and_then(|s| s.body_read_timeout)
                    .or(file.body_read_timeout)
                    .unwrap_or(crate::http::server::Timeouts::default().body_read),
            },
            log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
            log_level: cli
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_string()),
            limits,
            triage: resolve_triage(
                serve.map(|s| &s.triage),
                match &cli.command {
                    Some(Command::Rca(rca)) => Some(&rca.analyst),
                    _ => serve.map(|s| &s.triage.llm),
                },
                file.triage,
                file.kestra,
            )?,
            key_rate,
            write_queue: flags
                .and_then(|l| l.write_queue)
                .or(file.limits.write_queue)
                .unwrap_or(writer_defaults.queue_capacity),
            write_queue_timeout: flags
                .and_then(|l| l.write_queue_timeout)
                .or(file.limits.write_queue_timeout)
                .unwrap_or(writer_defaults.enqueue_timeout),
            queue: match serve.map(|s| &s.queue) {
                Some(q) => resolve_queue(q)?,
                None => None,
            },
            public_url_from_listen,
        })
    }

    /// After binding: with port 0 the OS chose the port, and a public URL
    /// derived from the listen address names the port actually bound.
    pub fn bound_to(&mut self, local: SocketAddr) {
        if self.public_url_from_listen {
            self.public_url = format!("http://{local}");
        }
        self.listen = local;
    }
}

fn resolve_queue(q: &QueueArgs) -> Result<Option<crate::queue::QueueOptions>, ConfigError> {
    let Some(url) = q.queue_url.as_deref().filter(|u| !u.trim().is_empty()) else {
        return Ok(None);
    };
    let mut o = crate::queue::QueueOptions::new(url.trim());
    if let Some(stream) = q.queue_stream.as_deref().filter(|s| !s.trim().is_empty()) {
        let stream = stream.trim();
        let valid = stream.len() <= 64
            && stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(ConfigError::StreamName(stream.to_string()));
        }
        o.stream = stream.to_string();
    }
    if let Some(n) = q.queue_partitions {
        let max = crate::queue::writer::MAX_PARTITIONS;
        o.partitions = u32::try_from(n)
            .ok()
            .filter(|n| *n <= max)
            .ok_or(ConfigError::TooManyPartitions { given: n, max })?;
    }
    if let Some(n) = q.queue_replicas {
        o.replicas = n;
    }
    Ok(Some(o))
}

fn resolve_triage(
    args: Option<&TriageArgs>,
    analyst: Option<&AnalystArgs>,
    file: FileTriage,
    kestra: FileKestra,
) -> Result<TriageOptions, ConfigError> {
    let default = TriageArgs::default();
    let a = args.unwrap_or(&default);
    let default_analyst = AnalystArgs::default();
    let l = analyst.unwrap_or(&default_analyst);
    let d = TriageOptions::default();
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let kestra_url = nonempty(a.kestra_url.clone().or(kestra.url));
    let rules = match l.triage_rules.clone().or(file.rules) {
        Some(path) => std::sync::Arc::new(crate::triage::rules::RuleSet::load(&path)?),
        None => d.rules.clone(),
    };
    Ok(TriageOptions {
        provider: l.llm_provider.or(file.provider).unwrap_or_default(),
        llm_base_url: nonempty(l.llm_base_url.clone().or(file.llm_base_url)),
        llm_model: nonempty(l.llm_model.clone().or(file.llm_model)),
        llm_api_key: nonempty(l.llm_api_key.clone().or(file.llm_api_key)).map(Secret::new),
        llm_timeout: l.llm_timeout.or(file.llm_timeout).unwrap_or(d.llm_timeout),
        llm_requests_per_minute: l
            .llm_requests_per_minute
            .or(file.llm_requests_per_minute)
            .unwrap_or(d.llm_requests_per_minute),
        auto: a.triage_auto.or(file.auto).unwrap_or(d.auto),
        stale_after: a
            .triage_stale_after
            .or(file.stale_after)
            .unwrap_or(d.stale_after),
        debounce: d.debounce,
        kestra: kestra_url.map(|url| {
            let mut k = KestraOptions::new(&url);
            k.username = nonempty(a.kestra_username.clone().or(kestra.username));
            k.password = nonempty(a.kestra_password.clone().or(kestra.password)).map(Secret::new);
            if let Some(t) = nonempty(a.kestra_tenant.clone().or(kestra.tenant)) {
                k.tenant = t;
            }
            if let Some(n) = nonempty(a.kestra_namespace.clone().or(kestra.namespace)) {
                k.namespace = n;
            }
            if let Some(every) = a.kestra_poll_interval.or(kestra.poll_interval) {
                k.poll_interval = every.max(Duration::from_millis(100));
            }
            k
        }),
        rules,
    })
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_args(std::iter::once("errorflow-collector").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn defaults_apply_without_flags_or_file() {
        let cli = parse(&[]);
        let cfg = Config::resolve(&cli, None).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(cfg.public_url, "http://127.0.0.1:8000");
        assert_eq!(cfg.quiet_after, Duration::from_secs(1800));
    }

    /// The defaults the README's configuration and limits tables state,
    /// written as the README writes them (not read from the code's own
    /// constants, which would agree with any change).
    #[test]
    fn defaults_are_the_readmes() {
        let cli = parse(&["serve"]);
        let cfg = Config::resolve(&cli, cli.serve_args()).unwrap();
        const MIB: usize = 1024 * 1024;
        assert_eq!(cfg.limits.max_body_bytes, 5 * MIB);
        assert_eq!(cfg.limits.max_decompressed_bytes, 20 * MIB);
        assert_eq!(cfg.limits.max_events_per_batch, 1000);
        assert_eq!(cfg.limits.max_event_bytes, MIB);
        assert_eq!(cfg.key_rate.per_second, 1000);
        assert_eq!(cfg.key_rate.burst, 5000);
        assert_eq!(cfg.quiet_after, Duration::from_secs(30 * 60));
        assert_eq!(cfg.retention, Some(Duration::from_secs(90 * 24 * 3600)));
        assert_eq!(cfg.write_queue, 1024);
        assert_eq!(cfg.write_queue_timeout, Duration::from_secs(5));
        let alerts = crate::alerts::AlertOptions::new(None, &cfg.public_url);
        assert_eq!(
            (alerts.max_per_window, alerts.window),
            (20, Duration::from_secs(60)),
            "20 alerts a minute"
        );
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nquiet_after = \"5m\"\nretention = \"30d\"\ndatabase_url = \"sqlite://x.db\"\n[limits]\nmax_events_per_batch = 10\n",
        )
        .unwrap();
        let cli = parse(&[
            "--config",
            path.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:7000",
        ]);
        let serve = match &cli.command {
            Some(Command::Serve(s)) => s,
            _ => unreachable!(),
        };
        let cfg = Config::resolve(&cli, Some(serve)).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(cfg.quiet_after, Duration::from_secs(300));
        assert_eq!(cfg.database_url, "sqlite://x.db");
        assert_eq!(cfg.limits.max_events_per_batch, 10);
        assert_eq!(cfg.retention, Some(Duration::from_secs(30 * 24 * 3600)));
    }

    #[test]
    fn serve_flags_work_without_the_serve_subcommand() {
        let cli = parse(&[
            "--listen",
            "127.0.0.1:7001",
            "--quiet-after",
            "10m",
            "--max-events-per-batch",
            "5",
            "--key-events-per-second",
            "0",
            "--llm-model",
            "m",
        ]);
        assert!(cli.command.is_none());
        let cfg = Config::resolve(&cli, cli.serve_args()).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(cfg.quiet_after, Duration::from_secs(600));
        assert_eq!(cfg.limits.max_events_per_batch, 5);
        assert_eq!(cfg.limits.max_body_bytes, 5 * 1024 * 1024);
        assert_eq!(cfg.key_rate.per_second, 0);
        assert_eq!(cfg.key_rate.burst, 5000);
        assert_eq!(cfg.triage.llm_model.as_deref(), Some("m"));
        assert_eq!(cfg.retention, Some(crate::retention::DEFAULT));
        let cfg = Config::resolve(&parse(&["--retention", "off"]), Some(&ServeArgs::default()));
        assert_eq!(
            cfg.unwrap().retention,
            Some(crate::retention::DEFAULT),
            "serve's own flags"
        );
        let cli = parse(&["--retention", "off"]);
        assert_eq!(
            Config::resolve(&cli, cli.serve_args()).unwrap().retention,
            None
        );
        let err = Cli::try_parse_args(["errorflow-collector", "--retention", "5m"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("minimum retention"), "{err}");
    }

    #[test]
    fn serve_flags_before_another_subcommand_are_refused() {
        let args = [
            "errorflow-collector",
            "--listen",
            "127.0.0.1:7001",
            "migrate",
        ];
        let err = Cli::try_parse_args(args).unwrap_err().to_string();
        assert!(err.contains("--listen") && err.contains("migrate"), "{err}");
        let args = ["errorflow-collector", "--max-body-bytes", "9", "serve"];
        let err = Cli::try_parse_args(args).unwrap_err().to_string();
        assert!(err.contains("--max-body-bytes goes after `serve`"), "{err}");
        // Global flags still go with any subcommand.
        let cli = parse(&["--database-url", "sqlite://x.db", "migrate"]);
        assert!(matches!(cli.command, Some(Command::Migrate)));
        assert!(cli.serve_args().is_none());
    }

    #[test]
    fn limit_flags_win_over_the_file_and_zero_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[limits]\nmax_body_bytes = 1000\nmax_event_bytes = 500\nkey_events_burst = 7\n",
        )
        .unwrap();
        let cli = parse(&[
            "--config",
            path.to_str().unwrap(),
            "serve",
            "--max-body-bytes",
            "2000",
        ]);
        let cfg = Config::resolve(&cli, cli.serve_args()).unwrap();
        assert_eq!(cfg.limits.max_body_bytes, 2000);
        assert_eq!(cfg.limits.max_event_bytes, 500);
        assert_eq!(cfg.key_rate.burst, 7);

        let err = Cli::try_parse_args(["errorflow-collector", "--max-body-bytes", "0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 1"), "{err}");
        std::fs::write(&path, "[limits]\nmax_events_per_batch = 0\n").unwrap();
        let cli = parse(&["--config", path.to_str().unwrap()]);
        let err = Config::resolve(&cli, cli.serve_args())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_events_per_batch") && err.contains("c.toml"),
            "{err}"
        );
    }

    /// The example file in the README is one a user copies: it must load.
    #[test]
    fn the_readme_example_file_loads() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("Example file:\n\n```toml\n")
            .expect("README has the example file");
        let body = &readme[start..];
        let body = &body[body.find("```toml\n").unwrap() + "```toml\n".len()..];
        let example = &body[..body.find("```").unwrap()];
        let file: FileConfig = toml::from_str(example).unwrap_or_else(|e| panic!("{e}"));
        assert!(file.limits.max_events_per_batch.is_some());
        assert!(file.limits.key_events_per_second.is_some());
        assert!(file.kestra.url.is_some());
    }

    #[test]
    fn unknown_file_keys_are_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let cli = parse(&["--config", path.to_str().unwrap()]);
        let err = Config::resolve(&cli, None).unwrap_err().to_string();
        assert!(err.contains("c.toml"), "{err}");
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn debug_hides_database_password_and_webhook() {
        let cli = parse(&[
            "--database-url",
            "postgres://u:hunter2@h/db",
            "--alert-webhook",
            "https://hooks.example.com/services/T0/B0/s3cr3t",
        ]);
        let cfg = Config::resolve(&cli, cli.serve_args()).unwrap();
        assert!(cfg.alert_webhook.is_some());
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("s3cr3t"), "{dbg}");
    }

    #[test]
    fn triage_settings_come_from_file_and_flags_and_hide_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[triage]\nprovider = \"gemini\"\nllm_api_key = \"AIza-secret\"\nstale_after = \"2h\"\n\
             [kestra]\nurl = \"http://kestra:8080\"\nusername = \"admin\"\npassword = \"kestra-pw\"\n",
        )
        .unwrap();
        let cli = parse(&[
            "--config",
            path.to_str().unwrap(),
            "serve",
            "--llm-model",
            "gemini-x",
            "--kestra-namespace",
            "ops",
        ]);
        let serve = match &cli.command {
            Some(Command::Serve(s)) => s,
            _ => unreachable!(),
        };
        let cfg = Config::resolve(&cli, Some(serve)).unwrap();
        assert_eq!(cfg.triage.provider, Provider::Gemini);
        assert_eq!(cfg.triage.llm_model.as_deref(), Some("gemini-x"));
        assert_eq!(cfg.triage.stale_after, Duration::from_secs(7200));
        let k = cfg.triage.kestra.as_ref().unwrap();
        assert_eq!((k.tenant.as_str(), k.namespace.as_str()), ("main", "ops"));
        let dbg = format!("{cfg:?}");
        assert!(
            !dbg.contains("AIza-secret") && !dbg.contains("kestra-pw"),
            "{dbg}"
        );
    }

    #[test]
    fn queue_mode_is_off_by_default_and_its_flags_are_checked() {
        let cli = parse(&["serve"]);
        assert!(Config::resolve(&cli, cli.serve_args())
            .unwrap()
            .queue
            .is_none());
        let cli = parse(&["writer", "--queue", "nats://n:4222"]);
        let q = Config::resolve(&cli, cli.serve_args())
            .unwrap()
            .queue
            .unwrap();
        assert_eq!(
            (q.url.as_str(), q.stream.as_str(), q.partitions, q.replicas),
            ("nats://n:4222", "errorflow", 16, 1),
            "the README's defaults"
        );
        let cli = parse(&["serve", "--queue", "nats://n:4222", "--queue-stream", "a.b"]);
        let e = Config::resolve(&cli, cli.serve_args()).err().unwrap();
        assert!(e.to_string().contains("--queue-stream \"a.b\""), "{e}");
        let cli = parse(&["serve", "--queue", "nats://n", "--queue-partitions", "5000"]);
        let e = Config::resolve(&cli, cli.serve_args()).err().unwrap();
        assert!(e.to_string().contains("at most 4096"), "{e}");
    }

    #[test]
    fn triage_rules_come_from_the_file_or_the_flag_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(
            &rules,
            "[[rule]]\nid = \"shop.stock\"\nclass = \"data_integrity\"\n\
             label = \"stock drift\"\nweight = 70\npatterns = ['stock drift']\n",
        )
        .unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            format!("[triage]\nrules = {:?}\n", rules.display().to_string()),
        )
        .unwrap();
        let cli = parse(&["--config", config.to_str().unwrap()]);
        let cfg = Config::resolve(&cli, None).unwrap();
        assert_eq!(cfg.triage.rules.rules()[0].id, "shop.stock");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[[rule]]\nid = \"x\"\nclass = \"outage\"\n").unwrap();
        let cli = parse(&["serve", "--triage-rules", bad.to_str().unwrap()]);
        let e = Config::resolve(&cli, cli.serve_args()).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "invalid triage rules: {}:3: unknown class",
                bad.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn triage_defaults_to_the_builtin_analyst_without_kestra() {
        let cfg = Config::resolve(&parse(&[]), None).unwrap();
        assert_eq!(cfg.triage.provider, Provider::Builtin);
        assert!(cfg.triage.kestra.is_none());
    }

    #[test]
    fn help_explains_every_subcommand() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for word in [
            "serve",
            "migrate",
            "project",
            "token",
            "user",
            "DATABASE_URL",
        ] {
            assert!(help.contains(word), "--help lacks {word}: {help}");
        }
    }
}
