//! `test-proxy`: an HTTP forward proxy for tests that only reaches allowed loopback targets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use edge_servers::proxy::{self, ProxyConfig};

#[derive(Parser)]
#[command(
    version,
    about = "HTTP forward proxy for tests: CONNECT tunnels and absolute-form http:// requests, to allowed loopback targets only"
)]
struct Cli {
    /// Address to listen on (a qemu user-network guest reaches 127.0.0.1 as 10.0.2.2).
    #[arg(long, default_value = "127.0.0.1:3128")]
    listen: SocketAddr,
    /// Rewrite target host FROM to TO before the allow check, e.g. 10.0.2.2=127.0.0.1 (repeatable).
    #[arg(long = "map", value_name = "FROM=TO", value_parser = parse_map)]
    maps: Vec<(String, String)>,
    /// A target HOST:PORT (after mapping) the proxy may connect to (repeatable; at least one).
    /// Everything else is answered 403, and so is any name that resolves outside loopback.
    #[arg(long = "allow", value_name = "HOST:PORT", value_parser = parse_allow, required = true)]
    allow: Vec<(String, u16)>,
    /// File of `user:password` lines: require `Proxy-Authorization: Basic` with one of them
    /// (407 otherwise). Kept in a file so the password is not in argv.
    #[arg(long, value_name = "PATH")]
    auth_file: Option<PathBuf>,
    /// Append one JSON line per request (never the credentials) to FILE.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
}

fn parse_map(text: &str) -> Result<(String, String), String> {
    proxy::parse_map(text).map_err(|e| e.to_string())
}

fn parse_allow(text: &str) -> Result<(String, u16), String> {
    proxy::parse_allow(text).map_err(|e| e.to_string())
}

async fn run(cli: Cli) -> Result<(), edge_servers::Error> {
    let credentials = match &cli.auth_file {
        Some(path) => edge_servers::read_credentials(path)?,
        None => Vec::new(),
    };
    let config = ProxyConfig {
        listen: cli.listen,
        maps: cli.maps,
        allow: cli.allow,
        credentials,
        log: cli.log,
    };
    let allowed: Vec<String> = config
        .allow
        .iter()
        .map(|(h, p)| format!("{h}:{p}"))
        .collect();
    let server = proxy::start(config).await?;
    println!("url: http://{}", server.addr);
    println!("allow: {}", allowed.join(" "));
    println!(
        "auth: {}",
        if cli.auth_file.is_some() {
            "basic"
        } else {
            "none"
        }
    );
    edge_servers::wait_for_signal().await;
    drop(server);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("test-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}
