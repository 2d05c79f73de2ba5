//! The command line: one handler per subcommand. Errors are reported here, at the edge,
//! with their context chain; everything below returns typed errors.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::fsutil::HostRoot;

pub mod notify;
pub mod query;
pub mod reset;
pub mod run;
pub mod sign;
pub mod status;
pub mod validate;

#[derive(Debug, Parser)]
#[command(
    name = "bootstrapd",
    version,
    about = "First-boot node bootstrap agent"
)]
pub struct Cli {
    /// Prefix every host path with DIR (for tests and image builds).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Log level filter (tracing syntax), e.g. `debug` or `bootstrapd=trace`.
    #[arg(long, global = true, env = "BOOTSTRAPD_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch userdata, prepare the host, install the runtime and register (what the unit runs).
    Run,
    /// Show where bootstrapd stands. Exit 0 done, 1 failed, 2 running/not run/degraded.
    Status(status::Args),
    /// Check userdata files; print every problem with its line and column. Exit 1 on any.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the userdata settings.
    Schema,
    /// Print the fetched userdata settings and metadata, every secret redacted.
    Query {
        /// Read this userdata file instead of asking the datasources.
        #[arg(long)]
        userdata: Option<PathBuf>,
    },
    /// Show what `run` would do on this host, changing nothing.
    Plan {
        /// Plan for this userdata file instead of the datasource's.
        #[arg(long)]
        userdata: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Forget bootstrapd's state so the next boot runs again.
    Reset,
    /// Sign userdata for images that trust only signed userdata.
    Sign(sign::Args),
}

/// Runs the CLI; returns the process exit code.
pub async fn main(cli: Cli) -> i32 {
    let root = HostRoot::new(cli.root.clone());
    init_logging(&cli.log);
    let result = match cli.command {
        Command::Status(args) => status::run(&root, &args).await,
        Command::Reset => reset::run(&root),
        Command::Sign(args) => sign::run(&args),
        Command::Validate { files } => validate::run(&files),
        Command::Schema => validate::schema(),
        Command::Query { userdata } => query::run(&root, userdata.as_ref()).await,
        Command::Run => run::run(&root).await,
        Command::Plan { userdata, json } => run::plan(&root, userdata.as_ref(), json).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bootstrapd: {e}");
            1
        }
    }
}

/// An error at the edge: the message already carries its context.
#[derive(Debug)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        // Report the whole chain: "reading X: permission denied".
        let mut msg = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            let s_text = s.to_string();
            if !msg.contains(&s_text) {
                msg.push_str(": ");
                msg.push_str(&s_text);
            }
            src = s.source();
        }
        CliError(msg)
    }
}

pub type CliResult = Result<i32, CliError>;

/// Logs go to journald when running as a systemd service (structured, with priorities), to
/// stderr otherwise. journald may be absent (containers, tests): then stderr.
fn init_logging(filter: &str) {
    use tracing_subscriber::prelude::*;
    // Client libraries log whole requests at debug, headers and bodies included: the Engine
    // API create-container request carries CATTLE_TOKEN. They stay at info whatever the
    // operator asks for, so `--log debug` can never print a token.
    const QUIET: [&str; 6] = ["bollard", "hyper", "hyper_util", "reqwest", "h2", "zbus"];
    let mut spec = filter.to_string();
    for c in QUIET {
        spec.push_str(&format!(",{c}=info"));
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let under_systemd = std::env::var_os("INVOCATION_ID").is_some();
    let journald = if under_systemd {
        tracing_journald::layer().ok()
    } else {
        None
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = match journald {
        Some(layer) => registry.with(layer).try_init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false),
            )
            .try_init(),
    };
    let _ = result;
}
