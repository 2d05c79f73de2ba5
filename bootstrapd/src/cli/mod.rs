//! The command line: one handler per subcommand. Errors are reported here, at the edge,
//! with their context chain; everything below returns typed errors.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::fsutil::HostRoot;

pub mod local;
pub mod local_host;
pub mod notify;
pub mod plan;
pub mod query;
pub mod reset;
pub mod run;
pub mod sign;
pub mod stages;
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
    /// With --root: still use this machine's systemd, Docker Engine and netlink (an image
    /// build or a test that means to act on the running system).
    #[arg(long, global = true)]
    pub live_system: bool,
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
    /// The early stage, before the network: write the systemd-networkd files of a local
    /// datasource's network-config (what bootstrapd-local.service runs).
    Local,
    /// The early host step, before firewalld starts: mask it when the local datasource's
    /// userdata says so (what bootstrapd-local-host.service runs).
    LocalHost,
    /// Show where bootstrapd stands. Exit 0 done, 1 failed, 2 running/not run/degraded.
    Status(status::Args),
    /// Check userdata files; print every problem with its line and column. Exit 1 on any.
    Validate {
        #[arg(required_unless_present = "network_config")]
        files: Vec<PathBuf>,
        /// Check this NoCloud network-config file (repeatable) and show the files it makes.
        #[arg(long, value_name = "FILE")]
        network_config: Vec<PathBuf>,
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
        /// Show the local stage's network files for this network-config instead of the
        /// local datasource's (not read at all when only --userdata is given).
        #[arg(long, value_name = "FILE")]
        network_config: Option<PathBuf>,
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
    let root = HostRoot::new(cli.root.clone()).with_live_system(cli.live_system);
    init_logging(&cli.log);
    let result = match cli.command {
        Command::Status(args) => status::run(&root, &args).await,
        Command::Reset => reset::run(&root),
        Command::Sign(args) => sign::run(&args),
        Command::Validate {
            files,
            network_config,
        } => validate::run(&files, &network_config),
        Command::Schema => validate::schema(),
        Command::Query { userdata } => query::run(&root, userdata.as_ref()).await,
        Command::Run => run::run(&root).await,
        Command::Local => local::run(&root).await,
        Command::LocalHost => local_host::run(&root).await,
        Command::Plan {
            userdata,
            network_config,
            json,
        } => plan::run(&root, userdata.as_ref(), network_config.as_ref(), json).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bootstrapd: {}", crate::actions::describe(&e));
            1
        }
    }
}

/// An error at the edge. Each variant wraps the module error that ended the command; it
/// is shown with its causes and every URL redacted ([`crate::actions::describe`]).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Journal(#[from] crate::state::JournalError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Datasource(#[from] crate::datasource::DatasourceError),
    #[error(transparent)]
    Signature(#[from] crate::signature::SignatureError),
    #[error(transparent)]
    NetworkRecord(#[from] crate::state::network::NetworkRecordError),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("printing JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Usage(&'static str),
}

impl CliError {
    /// A failed read of `path`, for `map_err`.
    pub fn read(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
        move |source| CliError::Read {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type CliResult = Result<i32, CliError>;

/// Logs go to journald when running as a systemd service (structured, with priorities), to
/// stderr otherwise. journald may be absent (containers, tests): then stderr.
fn init_logging(filter: &str) {
    use tracing_subscriber::prelude::*;
    let under_systemd = std::env::var_os("INVOCATION_ID").is_some();
    let journald = if under_systemd {
        tracing_journald::layer().ok()
    } else {
        None
    };
    let result = match journald {
        Some(layer) => log_filters(filter).with(layer).try_init(),
        None => log_filters(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false),
            )
            .try_init(),
    };
    let _ = result;
}

/// Crates that log whole requests at debug and trace, headers and bodies included (the
/// Engine API create-container request carries CATTLE_TOKEN), and what they depend on.
const QUIET: [&str; 9] = [
    "bollard",
    "hyper",
    "hyper_util",
    "reqwest",
    "h2",
    "zbus",
    "rustls",
    "tower",
    "http",
];

/// True for an event of a [`QUIET`] crate or one of its modules.
fn is_quiet(target: &str) -> bool {
    QUIET.iter().any(|c| {
        target
            .strip_prefix(c)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// The registry with the operator's filter and the cap on the client libraries.
///
/// The cap is a filter of its own, not directives appended to the operator's: an EnvFilter
/// lets the most specific directive win, so `bollard::docker=debug` beat `bollard=info`. A
/// separate filter vetoes whatever the operator's says, so no `--log` form can print them
/// above info.
fn log_filters(
    filter: &str,
) -> impl tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let cap = tracing_subscriber::filter::filter_fn(|meta| {
        *meta.level() <= tracing::Level::INFO || !is_quiet(meta.target())
    });
    tracing_subscriber::registry().with(filter).with(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What the client libraries would print at debug and trace: request bodies with the token.
    fn emit_library_logs() {
        tracing::debug!(target: "bollard::docker", "request body {{\"Env\":[\"CATTLE_TOKEN=s3cr3t\"]}}");
        tracing::trace!(target: "bollard::read", "CATTLE_TOKEN=s3cr3t");
        tracing::trace!(target: "hyper_util::client::legacy::pool", "CATTLE_TOKEN=s3cr3t");
        tracing::debug!(target: "reqwest::connect", "authorization: Bearer s3cr3t");
        tracing::trace!(target: "h2::codec::framed_write", "s3cr3t");
        tracing::debug!(target: "zbus::connection", body = "s3cr3t", "message");
        tracing::trace!(target: "hyper::proto::h1", "s3cr3t");
        tracing::info!(target: "bollard::docker", "library info line");
        tracing::debug!(target: "bootstrapd::cli", "own debug line");
        tracing::debug!(target: "hyperion", "a crate that only shares a prefix");
    }

    #[test]
    fn no_log_setting_prints_a_library_secret() {
        use tracing_subscriber::prelude::*;
        // Every form an operator may write: global levels, per-crate and per-module
        // directives (more specific than the cap's), span and field filters.
        let forms = [
            "debug",
            "trace",
            "info,bollard=debug",
            "info,bollard::docker=debug",
            "bollard::docker=trace,bollard::read=trace",
            "warn,hyper_util::client::legacy::pool=trace,hyper::proto=trace",
            "reqwest::connect=debug,h2::codec=trace",
            "zbus::connection=trace",
            "[{body}]=trace",
            "bollard::docker[request]=trace",
            "trace,bollard=off,bollard::docker=trace",
        ];
        for form in forms {
            let out = Capture::default();
            let w = out.clone();
            let sub = log_filters(form).with(
                tracing_subscriber::fmt::layer()
                    .with_writer(move || w.clone())
                    .with_ansi(false),
            );
            tracing::subscriber::with_default(sub, emit_library_logs);
            let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
            assert!(
                !text.contains("s3cr3t"),
                "--log {form:?} printed a secret:\n{text}"
            );
            if form.starts_with("debug") || form.starts_with("trace,") || form == "trace" {
                assert!(text.contains("own debug line"), "--log {form:?}: {text}");
                assert!(
                    text.contains("only shares a prefix"),
                    "--log {form:?}: {text}"
                );
            }
            let global = ["debug", "trace", "info"]
                .iter()
                .any(|l| form.starts_with(l));
            if global && !form.contains("bollard=off") {
                assert!(text.contains("library info line"), "--log {form:?}: {text}");
            }
        }
    }
}
