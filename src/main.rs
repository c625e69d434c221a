use std::process::ExitCode;

use clap::Parser;
use xfchat::config::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    xfchat::telemetry::init(cli.settings.log_format);
    match xfchat::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line naming what went wrong; causes are chained with ": ".
            eprintln!("xfchat: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
