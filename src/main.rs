use std::process::ExitCode;

use clap::Parser;
use xfchat::config::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = xfchat::telemetry::init(cli.settings.log_format);
    let result = xfchat::run(cli).await;
    // Queued log lines first, so that the error below stays the last line.
    drop(logs);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line naming what went wrong; causes are chained with ": ".
            eprintln!("xfchat: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
