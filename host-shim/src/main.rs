//! `tether`: the host daemon and CLI. The commands are in `cli/`; what they do beyond printing
//! lives in the library (`tether::...`).

mod cli;

use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // The daemon reports what it does; one-shot commands only what went wrong. RUST_LOG wins.
    let default_filter = match args.command {
        cli::Command::Up => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        // Colours for people; none for journald and pipes.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli::run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            cli::exit_code_for(&e)
        }
    }
}
