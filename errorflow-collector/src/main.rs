/// mimalloc instead of the system allocator: ingest allocates and frees
/// many small objects per event (decoded JSON, the event, its document), and
/// under load glibc's malloc and free were about a fifth of the collector's
/// CPU (perf, Sentry envelopes on SQLite). See BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = errorflow_collector::config::Cli::try_parse_args(std::env::args_os())
        .unwrap_or_else(|e| e.exit());
    match errorflow_collector::app::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each once: many errors repeat their source's
/// message in their own (`database error: X`, then `X`), which `{:#}` would
/// print twice or three times.
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
