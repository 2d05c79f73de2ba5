//! `rancher-test-server`: run the Rancher server double, or print a record file as a table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rancher_test_server::{AgentTlsMode, Config, Rules, record};

#[derive(Parser)]
#[command(
    version,
    about = "Rancher server double for bootstrapd tests (rke1 + system-agent)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(Box<ServeArgs>),
    /// Print a node record file as a table.
    Table {
        #[arg(long)]
        record: PathBuf,
    },
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to listen on (VMs under qemu user networking reach the host as 10.0.2.2).
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// A known cluster registration token (repeatable).
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// File with one known token per line (keeps tokens out of argv).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Keeps ca.pem/ca-key.pem (so the checksum survives restarts) and nodes.json.
    #[arg(long, default_value = ".rancher-test-server")]
    state_dir: PathBuf,
    /// Node record file (default: STATE_DIR/nodes.json).
    #[arg(long)]
    record: Option<PathBuf>,
    /// Extra subject alternative name for the server certificate (repeatable).
    #[arg(long = "san")]
    sans: Vec<String>,
    /// Answer 503 to every API call during the first SECS seconds.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    fail_503_for: u64,
    /// Delay every reply by N milliseconds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    slow_ms: u64,
    /// Serve a CA on /cacerts that does not match the TLS chain.
    #[arg(long)]
    wrong_ca: bool,
    /// Reset the first N TCP connections.
    #[arg(long, value_name = "N", default_value_t = 0)]
    reset_first: u32,
    /// Behave like Rancher 2.0-2.5: no /cacerts, no system-agent endpoints.
    #[arg(long)]
    legacy: bool,
    /// /v3/connect/config answers 200 with an empty plan instead of 503.
    #[arg(long)]
    plan_ready: bool,
    /// Which Rancher to model: current (2.12+) or 2.6.
    #[arg(long, default_value = "current")]
    rules: Rules,
    /// Current rules: /v3/connect/agent answers 401 during the first SECS seconds (caches not
    /// synced yet), even for a good token.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    starting_for: u64,
    /// Current rules: /v3/connect/agent also answers 401 while PATH exists.
    #[arg(long, value_name = "PATH")]
    starting_while: Option<PathBuf>,
    /// Hold the first accepted /v3/connect/agent of each machine N milliseconds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    hold_first_connect_ms: u64,
    /// The agent-tls-mode setting: strict or system-store.
    #[arg(long, default_value = "strict")]
    agent_tls_mode: AgentTlsMode,
    /// File with one expired token per line: refused like an unknown token.
    #[arg(long, value_name = "PATH")]
    expired_token_file: Option<PathBuf>,
}

/// One token per line; blank lines and `#` comments skipped. The error names the file only.
fn read_token_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Table { record: path }) => {
            return match record::read_records(&path) {
                Ok(nodes) => {
                    use std::io::Write;
                    // Not print!: it panics when the reader went away (`| head`).
                    match std::io::stdout().write_all(record::format_table(&nodes).as_bytes()) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                        Err(e) => {
                            eprintln!("rancher-test-server: stdout: {e}");
                            ExitCode::FAILURE
                        }
                    }
                }
                Err(e) => {
                    eprintln!("rancher-test-server: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Serve(args)) => *args,
        None => cli.serve,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rancher-test-server: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rancher-test-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let mut tokens = args.tokens.clone();
    if let Some(path) = &args.token_file {
        tokens.extend(read_token_file(path)?);
    }
    let expired_tokens = match &args.expired_token_file {
        Some(path) => read_token_file(path)?,
        None => Vec::new(),
    };
    if tokens.is_empty() {
        return Err("no known token: pass --token or --token-file".to_string());
    }
    let config = Config {
        listen: args.listen,
        tokens,
        state_dir: Some(args.state_dir.clone()),
        record_file: args.record.clone(),
        extra_sans: args.sans.clone(),
        fail_503_for: Duration::from_secs(args.fail_503_for),
        slow: Duration::from_millis(args.slow_ms),
        wrong_ca: args.wrong_ca,
        reset_first: args.reset_first,
        legacy: args.legacy,
        plan_ready: args.plan_ready,
        rules: args.rules,
        starting_for: Duration::from_secs(args.starting_for),
        starting_while: args.starting_while.clone(),
        hold_first_connect: Duration::from_millis(args.hold_first_connect_ms),
        agent_tls_mode: args.agent_tls_mode,
        expired_tokens,
    };
    let server = rancher_test_server::start(config)
        .await
        .map_err(|e| e.to_string())?;
    println!("url: {}", server.url);
    println!("ca: {}", args.state_dir.join("ca.pem").display());
    println!("ca-checksum: {}", server.ca_checksum);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("SIGTERM handler: {e}"))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown();
    Ok(())
}
