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
    /// quiet_after, log_format, log_level and [limits], [triage], [kestra] tables).
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

    #[command(subcommand)]
    pub command: Option<Command>,
}

// Parsed once at start-up: the size of `Serve` (its triage flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector (the default).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Manage projects and their ingest keys.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage tokens for the REST API.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage dashboard users.
    #[command(subcommand)]
    User(UserCommand),
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

    #[command(flatten)]
    pub triage: TriageArgs,
}

/// AI triage and Kestra settings.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "AI triage")]
pub struct TriageArgs {
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

/// The optional configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub public_url: Option<String>,
    #[serde(default, with = "humantime_serde_opt")]
    pub quiet_after: Option<Duration>,
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
    pub log_format: LogFormat,
    pub log_level: String,
    pub limits: Limits,
    /// AI triage and Kestra; secrets inside are redacted by `Debug`.
    pub triage: TriageOptions,
    /// Per-key rate limit of the Sentry endpoints.
    pub key_rate: KeyRate,
}

impl fmt::Debug for Config {
    // The database URL may hold a password: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("public_url", &self.public_url)
            .field("quiet_after", &self.quiet_after)
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .field("limits", &self.limits)
            .field("triage", &self.triage)
            .field("key_rate", &self.key_rate)
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
}

impl Config {
    /// Resolves the configuration for `cli` and, when serving, its serve flags.
    pub fn resolve(cli: &Cli, serve: Option<&ServeArgs>) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let listen = serve
            .and_then(|s| s.listen)
            .or(file.listen)
            .unwrap_or_else(|| {
                DEFAULT_LISTEN
                    .parse()
                    .expect("default listen address parses")
            });
        let public_url = serve
            .and_then(|s| s.public_url.clone())
            .or(file.public_url)
            .unwrap_or_else(|| format!("http://{listen}"));
        let mut limits = Limits::default();
        if let Some(v) = file.limits.max_body_bytes {
            limits.max_body_bytes = v;
        }
        if let Some(v) = file.limits.max_decompressed_bytes {
            limits.max_decompressed_bytes = v;
        }
        if let Some(v) = file.limits.max_events_per_batch {
            limits.max_events_per_batch = v;
        }
        if let Some(v) = file.limits.max_event_bytes {
            limits.max_event_bytes = v;
        }
        let mut key_rate = KeyRate::default();
        if let Some(v) = file.limits.key_events_per_second {
            key_rate.per_second = v;
        }
        if let Some(v) = file.limits.key_events_burst {
            key_rate.burst = v;
        }
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
            log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
            log_level: cli
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_string()),
            limits,
            triage: resolve_triage(serve.map(|s| &s.triage), file.triage, file.kestra),
            key_rate,
        })
    }
}

fn resolve_triage(
    args: Option<&TriageArgs>,
    file: FileTriage,
    kestra: FileKestra,
) -> TriageOptions {
    let default = TriageArgs::default();
    let a = args.unwrap_or(&default);
    let d = TriageOptions::default();
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let kestra_url = nonempty(a.kestra_url.clone().or(kestra.url));
    TriageOptions {
        provider: a.llm_provider.or(file.provider).unwrap_or_default(),
        llm_base_url: nonempty(a.llm_base_url.clone().or(file.llm_base_url)),
        llm_model: nonempty(a.llm_model.clone().or(file.llm_model)),
        llm_api_key: nonempty(a.llm_api_key.clone().or(file.llm_api_key)).map(Secret::new),
        llm_timeout: a.llm_timeout.or(file.llm_timeout).unwrap_or(d.llm_timeout),
        llm_requests_per_minute: a
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
            k
        }),
    }
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
        Cli::try_parse_from(std::iter::once("errorflow-collector").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn defaults_apply_without_flags_or_file() {
        let cli = parse(&[]);
        let cfg = Config::resolve(&cli, None).unwrap();
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(cfg.public_url, "http://127.0.0.1:8000");
        assert_eq!(cfg.quiet_after, Duration::from_secs(1800));
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nquiet_after = \"5m\"\ndatabase_url = \"sqlite://x.db\"\n[limits]\nmax_events_per_batch = 10\n",
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
    fn debug_hides_database_password() {
        let cli = parse(&["--database-url", "postgres://u:hunter2@h/db"]);
        let cfg = Config::resolve(&cli, None).unwrap();
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
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
