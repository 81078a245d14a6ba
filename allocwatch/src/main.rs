//! The `allocwatch` binary: parses the command line, runs a command, and owns
//! the exit-code policy (see `allocwatch::error`).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use allocwatch::cli::{Cli, Command};
use allocwatch::cmd;
use allocwatch::error::AppError;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let result = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(async {
            match cli.command {
                Command::Inspect(a) => cmd::inspect(&a, cli.verbose),
                Command::Record(a) => cmd::record(a, cli.verbose).await,
                Command::Top(a) => cmd::top(a, cli.verbose).await,
                Command::Explain(a) => cmd::explain(a, cli.verbose).await,
                Command::Daemon(a) => cmd::daemon(a, cli.verbose).await,
                Command::Completions(a) => cmd::completions(&a),
                Command::Man(a) => cmd::man(&a),
            }
        }),
        Err(e) => Err(AppError::other(format!(
            "cannot start the async runtime: {e}"
        ))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "error: {}", e.message);
            if let Some(h) = &e.hint {
                let _ = writeln!(err, "hint: {h}");
            }
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}
