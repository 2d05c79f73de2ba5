//! `test-registry`: a read-only Docker Registry HTTP API V2 server for tests, serving images
//! from `docker save` archives; `gen-ca` writes a CA and a server certificate for it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use edge_servers::registry::{self, RegistryConfig};
use edge_servers::{archive, ca};

#[derive(Parser)]
#[command(
    version,
    about = "Read-only Docker Registry HTTP API V2 for tests, serving docker save archives",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the images (the default).
    Serve(ServeArgs),
    /// Write DIR/ca.pem, DIR/server.pem and DIR/server-key.pem (0600) for the given SANs.
    GenCa {
        /// Output directory (created).
        #[arg(long)]
        dir: PathBuf,
        /// Subject alternative name of the server certificate: an IP address (IP SAN) or a
        /// DNS name (repeatable), e.g. --san 10.0.2.2 --san 127.0.0.1.
        #[arg(long = "san", required = true)]
        sans: Vec<String>,
    },
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to listen on (a qemu user-network guest reaches 127.0.0.1 as 10.0.2.2).
    #[arg(long, default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// NAME:TAG=ARCHIVE: serve the image of a `docker save` archive as NAME:TAG (repeatable).
    #[arg(long = "image", value_name = "NAME:TAG=ARCHIVE")]
    images: Vec<String>,
    /// File of `user:password` lines (plain text): require HTTP Basic auth with one of them.
    #[arg(long, value_name = "PATH")]
    htpasswd_file: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS (needs --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Append one JSON line per request (never the credentials) to FILE.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
}

async fn serve(args: ServeArgs) -> Result<(), edge_servers::Error> {
    if args.images.is_empty() {
        return Err(edge_servers::Error::Config(
            "at least one --image NAME:TAG=ARCHIVE is needed".into(),
        ));
    }
    let mut images = Vec::new();
    for spec in &args.images {
        let (reference, path) = spec.split_once('=').ok_or_else(|| {
            edge_servers::Error::Config(format!("--image {spec:?}: expected NAME:TAG=ARCHIVE"))
        })?;
        images.push(archive::load(reference, path.as_ref())?);
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ca::server_config(
            &edge_servers::read_file(cert)?,
            &edge_servers::read_file(key)?,
        )?),
        _ => None,
    };
    let credentials = match &args.htpasswd_file {
        Some(path) => edge_servers::read_credentials(path)?,
        None => Vec::new(),
    };
    let auth = if credentials.is_empty() {
        "none"
    } else {
        "basic"
    };
    let shown: Vec<String> = images
        .iter()
        .map(|i| format!("image: {}:{} {}", i.name, i.tag, i.manifest_digest))
        .collect();
    let server = registry::start(RegistryConfig {
        listen: args.listen,
        images,
        credentials,
        tls,
        log: args.log,
    })
    .await?;
    println!("url: {}", server.url);
    println!("auth: {auth}");
    for line in shown {
        println!("{line}");
    }
    edge_servers::wait_for_signal().await;
    drop(server);
    Ok(())
}

fn gen_ca(dir: PathBuf, sans: Vec<String>) -> Result<(), edge_servers::Error> {
    let written = ca::write(&dir, &ca::issue(&sans)?)?;
    println!("ca: {}", written.ca.display());
    println!("cert: {}", written.cert.display());
    println!("key: {}", written.key.display());
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::GenCa { dir, sans }) => gen_ca(dir, sans),
        Some(Command::Serve(args)) => serve(args).await,
        None => serve(cli.serve).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("test-registry: {e}");
            ExitCode::FAILURE
        }
    }
}
