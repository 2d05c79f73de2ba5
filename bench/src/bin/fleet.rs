//! `fleet` (issue 8): N simulated nodes run bootstrapd's real system-agent registration
//! (`actions::register`, each under its own test `HostRoot` and with its own node name) at once
//! against one in-process Rancher test server that answers 503 for its first `--outage-secs`.
//! Reports how long until every node registered, the server's requests per second (peak against
//! mean during the outage: the goal is peak <= 3x mean, shown with and without the second of
//! the nodes' first contacts, which the splay no longer spreads), total requests and failures,
//! as a table and as one JSON line.
//!
//! All nodes start at the same instant unless `--start-spread-secs` spreads their starts
//! uniformly, as machines booting over a while would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bootstrapd::actions::register::{NodeIdentity, register};
use bootstrapd::fsutil::HostRoot;
use bootstrapd::secret::Secret;
use bootstrapd::userdata::{RancherSettings, RegistrationMode, Role, Settings};
use bootstrapd_bench::{WindowStats, quantile, window_stats};
use clap::Parser;
use rancher_test_server::requests::per_second;

#[derive(Debug, Parser)]
#[command(about = "Fleet registration benchmark against an in-process Rancher test server")]
struct Args {
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// The server answers 503 to everything for this many seconds after it starts.
    #[arg(long, default_value_t = 60)]
    outage_secs: u64,
    /// Each node's registration budget (`rancher.deadline_seconds`); default outage + 300.
    #[arg(long)]
    deadline_secs: Option<u64>,
    /// Spread the nodes' starts uniformly over this many seconds (0: all at once).
    #[arg(long, default_value_t = 0.0)]
    start_spread_secs: f64,
    /// Each node's `rancher.splay_seconds` (default: bootstrapd's default).
    #[arg(long, default_value_t = bootstrapd::userdata::DEFAULT_SPLAY_SECONDS)]
    splay_secs: u64,
    /// Tokio worker threads (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Where the nodes' host roots go (default: a temporary directory, removed afterwards).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// The seconds the nodes' first contacts, sent at once, fill (see `run`).
const FIRST_CONTACT_SECONDS: usize = 2;

const TOKEN: &str = "fleetbench7q2w3e4r5t6y7u8i9o0pasdfghjklzxcvbnmqwer";

fn settings(url: &str, checksum: &str, roles: Vec<Role>, deadline: u64, splay: u64) -> Settings {
    Settings {
        roles,
        rancher: RancherSettings {
            server: url.to_string(),
            token: Secret::new(TOKEN),
            ca_checksum: Some(checksum.to_string()),
            mode: RegistrationMode::SystemAgent,
            agent_image: String::new(),
            node_name: None,
            address: None,
            internal_address: None,
            labels: BTreeMap::new(),
            taints: vec![],
            deadline_seconds: deadline,
            splay_seconds: splay,
            strict_verify: None,
            system_agent: Default::default(),
            system_default_registry: None,
        },
        runtime: Default::default(),
        host: Default::default(),
        hostname: None,
        ssh: None,
        trusted_ca: Vec::new(),
        proxy: Default::default(),
        registries: Default::default(),
    }
}

/// The lab's layout scaled up: the first three nodes etcd + controlplane, the rest workers.
fn roles_of(index: usize) -> Vec<Role> {
    if index < 3 {
        vec![Role::Etcd, Role::Controlplane]
    } else {
        vec![Role::Worker]
    }
}

struct NodeResult {
    finished_after: Duration,
    error: Option<String>,
}

fn fmt_ratio(stats: &Option<WindowStats>) -> String {
    match stats.as_ref().and_then(WindowStats::peak_over_mean) {
        Some(r) => format!("{r:.2}"),
        None => "n/a".into(),
    }
}

fn describe(stats: &Option<WindowStats>) -> String {
    match stats {
        Some(s) => format!(
            "seconds {}..{}: {} requests, mean {:.1}/s, peak {}/s at second {}, peak/mean {}",
            s.from,
            s.to,
            s.total,
            s.mean,
            s.peak,
            s.peak_second,
            fmt_ratio(stats)
        ),
        None => "empty".into(),
    }
}

async fn run(args: Args) -> Result<bool, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let deadline = args.deadline_secs.unwrap_or(args.outage_secs + 300);
    let temp;
    let work_dir = match &args.work_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
            temp.path().to_path_buf()
        }
    };

    let server = rancher_test_server::start(rancher_test_server::Config {
        tokens: vec![TOKEN.to_string()],
        fail_503_for: Duration::from_secs(args.outage_secs),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("starting the test server: {e}"))?;
    let start = Instant::now();
    eprintln!(
        "fleet: {} nodes against {} (503 for the first {} s), budget {} s per node",
        args.nodes, server.url, args.outage_secs, deadline
    );

    let mut tasks = tokio::task::JoinSet::new();
    let mut rng = fastrand::Rng::new();
    for i in 0..args.nodes {
        let dir = work_dir.join(format!("node-{i:05}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let settings = settings(
            &server.url,
            &server.ca_checksum,
            roles_of(i),
            deadline,
            args.splay_secs,
        );
        let offset = Duration::from_secs_f64(rng.f64() * args.start_spread_secs.max(0.0));
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            let root = HostRoot::new(Some(dir));
            let node = NodeIdentity {
                node_name: format!("node-{i:05}"),
                address: Some(format!(
                    "10.{}.{}.{}",
                    (i >> 16) & 255,
                    (i >> 8) & 255,
                    i & 255
                )),
                internal_address: None,
            };
            let result = register(&root, &settings, &node).await;
            NodeResult {
                finished_after: start.elapsed(),
                error: result.err().map(|e| e.to_string()),
            }
        });
    }
    let results = tasks.join_all().await;
    let wall = start.elapsed();

    let registered: Vec<f64> = results
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.finished_after.as_secs_f64())
        .collect();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for r in &results {
        if let Some(e) = &r.error {
            *failures.entry(e.clone()).or_default() += 1;
        }
    }
    let machines = server.record().len();
    let (log, dropped) = server.requests();
    server.shutdown();
    let counts = per_second(&log);
    let total_requests = log.len() as u64 + dropped;
    let unavailable = log.iter().filter(|e| e.status == 503).count();
    let by_path = log.iter().fold(BTreeMap::<String, u64>::new(), |mut m, e| {
        *m.entry(e.path.clone()).or_default() += 1;
        m
    });
    let outage = args.outage_secs as usize;
    let during = window_stats(&counts, 0, outage);
    // The nodes' first contacts go out at once (the splay spreads the retries, not them); a
    // thousand TLS handshakes on two cores take about a second, so they land in seconds 0
    // and 1. From second 2 on, the window is the retries alone.
    let first_contacts = FIRST_CONTACT_SECONDS;
    let during_after_first = window_stats(&counts, first_contacts, outage);
    let after = window_stats(&counts, outage, counts.len().max(outage));
    let all_registered = registered.len() == args.nodes;
    let all_after = all_registered.then(|| quantile(&registered, 1.0)).flatten();

    println!("fleet benchmark: bootstrapd system-agent registration, in-process test server");
    println!("{:<34} {}", "nodes", args.nodes);
    println!(
        "{:<34} {} s (then answers normally)",
        "server outage (503)", args.outage_secs
    );
    println!("{:<34} {} s", "start spread", args.start_spread_secs);
    println!(
        "{:<34} {} / {} ({} machines on the server)",
        "registered",
        registered.len(),
        args.nodes,
        machines
    );
    println!("{:<34} {}", "failed", args.nodes - registered.len());
    for (e, n) in &failures {
        println!("{:<34} {n} x {e}", "");
    }
    println!(
        "{:<34} {}",
        "time until all registered",
        all_after.map_or("not all registered".to_string(), |t| format!("{t:.1} s"))
    );
    println!(
        "{:<34} p50 {} / p90 {} / p99 {} s",
        "registration done after",
        quantile(&registered, 0.5).map_or("-".into(), |v| format!("{v:.1}")),
        quantile(&registered, 0.9).map_or("-".into(), |v| format!("{v:.1}")),
        quantile(&registered, 0.99).map_or("-".into(), |v| format!("{v:.1}")),
    );
    println!(
        "{:<34} {} ({:.2} per node), {} answered 503",
        "requests",
        total_requests,
        total_requests as f64 / args.nodes.max(1) as f64,
        unavailable
    );
    for (path, n) in &by_path {
        println!("{:<34} {n} {path}", "");
    }
    println!("{:<34} {}", "during the outage", describe(&during));
    println!(
        "{:<34} {}",
        "  without the first contacts",
        describe(&during_after_first)
    );
    println!("{:<34} {}", "after the outage", describe(&after));
    let verdict = |w: &Option<WindowStats>| match w.as_ref().and_then(WindowStats::peak_over_mean) {
        Some(r) if r <= 3.0 => "met",
        Some(_) => "NOT met",
        None => "n/a",
    };
    println!(
        "{:<34} peak/mean {} (goal <= 3): {}; the retries alone: {} ({})",
        "outage burst check",
        fmt_ratio(&during),
        verdict(&during),
        fmt_ratio(&during_after_first),
        verdict(&during_after_first)
    );
    println!("{:<34} {:?}", "requests per second", counts);
    println!("{:<34} {:.1} s", "wall time", wall.as_secs_f64());

    let json = serde_json::json!({
        "bench": "fleet",
        "nodes": args.nodes,
        "outage_secs": args.outage_secs,
        "start_spread_secs": args.start_spread_secs,
        "deadline_secs": deadline,
        "registered": registered.len(),
        "failed": args.nodes - registered.len(),
        "failures": failures,
        "machines_on_server": machines,
        "all_registered_after_secs": all_after,
        "p50_secs": quantile(&registered, 0.5),
        "p99_secs": quantile(&registered, 0.99),
        "total_requests": total_requests,
        "requests_503": unavailable,
        "requests_by_path": by_path,
        "outage": during,
        "outage_peak_over_mean": during.as_ref().and_then(WindowStats::peak_over_mean),
        "first_contact_seconds": first_contacts,
        "outage_without_first_contacts": during_after_first,
        "outage_without_first_contacts_peak_over_mean":
            during_after_first.as_ref().and_then(WindowStats::peak_over_mean),
        "after_outage": after,
        "per_second": counts,
        "wall_secs": wall.as_secs_f64(),
    });
    println!("{json}");
    Ok(all_registered)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(w) = args.workers {
        builder.worker_threads(w.max(1));
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fleet: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("fleet: {e}");
            ExitCode::from(2)
        }
    }
}
