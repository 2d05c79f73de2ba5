use std::path::PathBuf;

use crate::fsutil::write_atomic;
use crate::signature;

use super::CliResult;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Make a new ed25519 key pair at KEY (private, 0600) and KEY.pub (for trusted.pub).
    #[arg(long, value_name = "KEY", conflicts_with_all = ["key", "files"])]
    pub generate_key: Option<PathBuf>,
    /// Private key (PKCS#8 PEM, e.g. from `openssl genpkey -algorithm ed25519`).
    #[arg(long, value_name = "KEY", requires = "files")]
    pub key: Option<PathBuf>,
    /// Print the signature (for an X-Bootstrapd-Signature header) instead of writing FILE.sig.
    #[arg(long)]
    pub header: bool,
    /// Userdata files to sign; each gets FILE.sig beside it.
    pub files: Vec<PathBuf>,
}

pub fn run(args: &Args) -> CliResult {
    if let Some(path) = &args.generate_key {
        let public = signature::generate(path)?;
        println!(
            "private key: {} (keep it off the nodes)\npublic key:  {} (install as {})",
            path.display(),
            public.display(),
            signature::TRUSTED_KEY
        );
        return Ok(0);
    }
    let Some(key_path) = &args.key else {
        return Err(super::CliError::Usage(
            "sign needs --key KEY and files, or --generate-key KEY",
        ));
    };
    let key = signature::load_signing_key(key_path)?;
    for file in &args.files {
        let data = std::fs::read(file).map_err(super::CliError::read(file))?;
        let sig = signature::sign(&key, &data);
        if args.header {
            println!("X-Bootstrapd-Signature: {sig}");
        } else {
            let out = PathBuf::from(format!("{}.sig", file.display()));
            write_atomic(&out, format!("{sig}\n").as_bytes(), 0o644).map_err(|source| {
                super::CliError::Write {
                    path: out.clone(),
                    source,
                }
            })?;
            println!("{}", out.display());
        }
    }
    Ok(0)
}
