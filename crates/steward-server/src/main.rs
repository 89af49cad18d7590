//! The `steward` binary: command line, configuration, telemetry, wiring and signals.
//!
//! `steward serve [--config PATH]` runs the server; `steward check-config [--config PATH]`
//! validates a configuration and exits 0, or 2 naming the offending key; `steward whoami`
//! checks the tenant API token in `$STEWARD_TOKEN` against a running server over gRPC, and
//! `steward job …` creates, updates, reads, cancels and watches that tenant's jobs over gRPC,
//! and `steward stream …` publishes to, reads and watches its streams.
#![forbid(unsafe_code)]

mod app;
mod client;
mod job;
mod signals;
mod stream;
mod telemetry;
mod whoami;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use steward_config::Config;

/// Steward: supervised browsers, sessions, producers, consumers, sockets and peers for many
/// tenants, in one process that leaks none of them.
#[derive(Parser)]
#[command(name = "steward", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. Without --config it runs on the compiled-in defaults
    /// (config/steward.toml). STEWARD__<SECTION>__<KEY> environment variables override both.
    Serve {
        /// A TOML file layered over the defaults.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Check a tenant API token (read from $STEWARD_TOKEN) against a running Steward over gRPC
    /// (steward.tenancy.v1.Tenancy/WhoAmI); exit 0 when it is accepted.
    Whoami {
        /// The gRPC address.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:50051")]
        grpc: String,
    },
    /// Create, update, read, cancel or watch a job of the tenant whose API token is in
    /// $STEWARD_TOKEN, over gRPC (steward.jobs.v1.Jobs); exit 1 when the call is refused.
    Job {
        /// The gRPC address.
        #[arg(long, global = true, value_name = "URL", default_value = "http://127.0.0.1:50051")]
        grpc: String,
        /// What to do.
        #[command(subcommand)]
        command: job::JobCommand,
    },
    /// Publish to, read or watch a stream of the tenant whose API token is in $STEWARD_TOKEN,
    /// over gRPC (steward.streams.v1.Streams); exit 1 when the call is refused.
    Stream {
        /// The gRPC address.
        #[arg(long, global = true, value_name = "URL", default_value = "http://127.0.0.1:50051")]
        grpc: String,
        /// What to do.
        #[command(subcommand)]
        command: stream::StreamCommand,
    },
    /// Validate the configuration (defaults + file + environment) and exit.
    CheckConfig {
        /// A TOML file layered over the defaults.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

/// Exit status for an invalid configuration.
const EXIT_CONFIG: u8 = 2;

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Whoami { grpc } => whoami::run(&grpc).unwrap_or_else(|e| {
            eprintln!("steward whoami: {e:#}");
            ExitCode::FAILURE
        }),
        Command::Job { grpc, command } => job::run(&grpc, command).unwrap_or_else(|e| {
            eprintln!("steward job: {e:#}");
            ExitCode::FAILURE
        }),
        Command::Stream { grpc, command } => stream::run(&grpc, command).unwrap_or_else(|e| {
            eprintln!("steward stream: {e:#}");
            ExitCode::FAILURE
        }),
        Command::CheckConfig { config } => match Config::load(config.as_deref()) {
            Ok(_) => {
                println!("configuration ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("invalid configuration: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Serve { config } => {
            let config = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("invalid configuration: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            if let Err(e) = telemetry::init(&config.log) {
                eprintln!("cannot initialise logging: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            telemetry::install_panic_hook();
            match app::serve(config) {
                Ok(code) => code,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "steward failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
