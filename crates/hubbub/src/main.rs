//! The `hubbub` binary: command-line parsing and wiring only. `serve` runs the service; the other
//! commands talk to a running server through its admin API.

mod cli;
mod client;
mod serve;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hubbub: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            cli::Command::Serve(args) => serve::run(*args).await,
            cli::Command::Key(key) => client::key(key).await,
            cli::Command::Hub(hub) => client::hub(hub).await,
            cli::Command::AdminToken(command) => client::admin_token(command).await,
            cli::Command::Audit { since, json, admin } => client::audit(since, json, admin).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubbub: {e:#}");
            ExitCode::FAILURE
        }
    }
}
