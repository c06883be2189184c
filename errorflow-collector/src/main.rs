/// mimalloc instead of the system allocator: ingest allocates and frees
/// many small objects per event (decoded JSON, the event, its document), and
/// under load glibc's malloc and free were about a fifth of the collector's
/// CPU (perf, Sentry envelopes on SQLite). See BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long mimalloc keeps freed memory before giving it back to the OS.
const PURGE_DELAY_VAR: &str = "MIMALLOC_PURGE_DELAY";
/// The delay `serve` runs with, in milliseconds.
const PURGE_DELAY_MS: &str = "10";

/// mimalloc 3 gives freed memory back to the OS only after it has been
/// unused for a second (its `purge_delay`). Under ingest load that kept tens
/// of MiB of freed pages resident: peak RSS 127–156 MiB in the SQLite batch
/// benchmark, over the 150 MiB budget, against 108–113 MiB with 10 ms
/// (mimalloc 2's default) at the same throughput (see BENCHMARKS.md).
///
/// mimalloc reads its options from the environment once, as the process
/// starts, and setting one from Rust takes `unsafe` (which this workspace
/// forbids). So `serve` starts itself again, the same binary with the same
/// arguments, with `MIMALLOC_PURGE_DELAY=10`, unless the environment
/// already sets it. Should that fail, it goes on with mimalloc's defaults.
#[cfg(unix)]
fn restart_with_allocator_settings() {
    use std::os::unix::process::CommandExt as _;
    if std::env::var_os(PURGE_DELAY_VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // `exec` returns only when it failed.
    let error = command
        .args(args)
        .env(PURGE_DELAY_VAR, PURGE_DELAY_MS)
        .exec();
    eprintln!(
        "warning: could not restart with {PURGE_DELAY_VAR}={PURGE_DELAY_MS} ({error}); going on"
    );
}

#[cfg(not(unix))]
fn restart_with_allocator_settings() {}

fn main() -> std::process::ExitCode {
    let cli = errorflow_collector::config::Cli::try_parse_args(std::env::args_os())
        .unwrap_or_else(|e| e.exit());
    // Before the runtime and its threads exist: nothing is started twice.
    if matches!(
        cli.command,
        None | Some(errorflow_collector::config::Command::Serve(_))
    ) {
        restart_with_allocator_settings();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(errorflow_collector::app::run(cli)) {
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
