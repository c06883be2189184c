use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = errorflow_collector::config::Cli::parse();
    match errorflow_collector::app::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
