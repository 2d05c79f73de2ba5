use clap::Parser;

fn main() {
    let cli = bootstrapd::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bootstrapd: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(bootstrapd::cli::main(cli));
    std::process::exit(code);
}
