//! The input campaign's short form, on the stable toolchain so that CI runs it: the seeds of
//! the cargo-fuzz targets (the shipped examples and the malformed corpus) mutated many
//! thousand times, deterministically, through the same entry points as `fuzz/fuzz_targets`.
//! The long form is `scripts/fuzz.sh` (libFuzzer, coverage-guided, nightly).
//!
//! Contract checked on every input: no panic; a refused document carries at least one problem,
//! each either at a line and column or about the document as a whole, with a message; the
//! rendered error is not empty.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use bootstrapd::datasource::{cmdline, probe_label};
use bootstrapd::userdata;

/// Mutations per seed; the seed of the generator is fixed so a failure reproduces.
const ROUNDS_PER_SEED: usize = 400;

fn seeds() -> Vec<(String, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    for dir in ["configs/examples", "tests/corpus/userdata"] {
        let dir = root.join(dir);
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && p.extension().is_none_or(|x| x != "expect"))
            .collect();
        paths.sort();
        for p in paths {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    assert!(out.len() >= 20, "only {} seeds", out.len());
    out
}

/// One libFuzzer-style mutation: flip, overwrite with an interesting byte, insert, delete,
/// duplicate a slice, or splice in a piece of another seed.
fn mutate(rng: &mut fastrand::Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    const INTERESTING: &[u8] = b"\0\n\r\t :-#&*!|>'\"{}[],%@`\\\xff\xc3";
    let mut v = input.to_vec();
    for _ in 0..rng.usize(1..=4) {
        let len = v.len();
        match rng.u8(0..6) {
            0 if len > 0 => {
                let i = rng.usize(0..len);
                v[i] ^= 1 << rng.u8(0..8);
            }
            1 if len > 0 => {
                let i = rng.usize(0..len);
                v[i] = INTERESTING[rng.usize(0..INTERESTING.len())];
            }
            2 => {
                let i = rng.usize(0..=len);
                v.insert(i, INTERESTING[rng.usize(0..INTERESTING.len())]);
            }
            3 if len > 0 => {
                let i = rng.usize(0..len);
                let n = rng.usize(1..=(len - i).min(16));
                v.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.usize(0..len);
                let n = rng.usize(1..=(len - i).min(64));
                let piece = v[i..i + n].to_vec();
                let at = rng.usize(0..=v.len());
                v.splice(at..at, piece);
            }
            _ if !other.is_empty() => {
                let i = rng.usize(0..other.len());
                let n = rng.usize(1..=(other.len() - i).min(64));
                let at = rng.usize(0..=v.len());
                v.splice(at..at, other[i..i + n].iter().copied());
            }
            _ => {}
        }
    }
    v
}

fn check_userdata(name: &str, input: &[u8]) {
    let result = catch_unwind(AssertUnwindSafe(|| userdata::parse(input)))
        .unwrap_or_else(|_| panic!("userdata::parse panicked on a mutation of {name}: {input:?}"));
    if let Err(e) = result {
        assert!(!e.problems.is_empty(), "{name}: an error without problems");
        for p in &e.problems {
            let positioned = p.line >= 1 && p.column >= 1;
            let whole = p.line == 0 && p.column == 0;
            assert!(
                positioned || whole,
                "{name}: half a position ({}:{}) in {e}",
                p.line,
                p.column
            );
            assert!(!p.message.is_empty(), "{name}: a problem without a message");
        }
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn mutated_userdata_never_panics_and_errors_say_where() {
    let seeds = seeds();
    let mut rng = fastrand::Rng::with_seed(0x5eed_b007);
    let mut refused = 0usize;
    let mut total = 0usize;
    for (i, (name, seed)) in seeds.iter().enumerate() {
        let other = &seeds[(i + 1) % seeds.len()].1;
        check_userdata(name, seed);
        let mut current = seed.clone();
        for round in 0..ROUNDS_PER_SEED {
            // Mostly fresh mutations of the seed, sometimes a walk that keeps mutating.
            let base = if round % 4 == 0 { &current } else { seed };
            let m = mutate(&mut rng, base, other);
            check_userdata(name, &m);
            if userdata::parse(&m).is_err() {
                refused += 1;
            }
            total += 1;
            current = m;
        }
    }
    eprintln!(
        "input campaign (short form): {total} mutated documents, {refused} refused, 0 panics"
    );
    // Guards the campaign itself: mutations that never break anything test nothing.
    assert!(
        refused * 10 > total,
        "only {refused} of {total} mutations refused"
    );
}

#[test]
fn mutated_kernel_command_lines_never_panic() {
    let seeds: [&[u8]; 4] = [
        b"root=/dev/vda ds=nocloud;s=http://10.0.2.2:8000/ bootstrapd.url=http://x/y quiet",
        b"BOOT_IMAGE=/vmlinuz ds=nocloud-net;seedfrom=http://[::1]:80/seed/;h=node1 console=ttyS0",
        b"bootstrapd.url=\"https://example.com/u d\" ds='nocloud;s=/dev/sr0'",
        b"ds=nocloud;s=file:///var/seed/;i=iid-1;h=n",
    ];
    let mut rng = fastrand::Rng::with_seed(0xc0ffee);
    for (i, seed) in seeds.iter().enumerate() {
        let other = seeds[(i + 1) % seeds.len()];
        for _ in 0..2000 {
            let m = mutate(&mut rng, seed, other);
            let text = String::from_utf8_lossy(&m);
            catch_unwind(|| {
                let c = cmdline::KernelCmdline::parse(&text);
                let _ = c.get("bootstrapd.url");
                let _ = c.get("ds").map(cmdline::parse_nocloud_ds);
                let _ = cmdline::find_ds_in_serial(&text);
            })
            .unwrap_or_else(|_| panic!("cmdline parsing panicked on {text:?}"));
        }
    }
}

#[test]
fn mutated_filesystem_superblocks_never_panic() {
    // An ISO 9660 primary volume descriptor labelled "cidata" and a FAT boot sector labelled
    // "CIDATA": the two shapes datasource detection reads off every block device.
    let mut iso = vec![0u8; 0x8000 + 2048];
    iso[0x8000] = 1;
    iso[0x8001..0x8006].copy_from_slice(b"CD001");
    iso[0x8006] = 1;
    iso[0x8028..0x8028 + 32].copy_from_slice(format!("{:<32}", "cidata").as_bytes());
    let mut fat = vec![0u8; 512];
    fat[0..3].copy_from_slice(&[0xeb, 0x3c, 0x90]);
    fat[11..13].copy_from_slice(&512u16.to_le_bytes());
    fat[43..54].copy_from_slice(b"CIDATA     ");
    fat[54..62].copy_from_slice(b"FAT16   ");
    fat[510] = 0x55;
    fat[511] = 0xaa;
    assert!(
        probe_label(&mut std::io::Cursor::new(iso.clone()))
            .unwrap()
            .is_some(),
        "the ISO seed itself must be recognised, or the mutations test nothing"
    );
    let mut rng = fastrand::Rng::with_seed(0xd15c);
    for seed in [&iso, &fat] {
        for _ in 0..1500 {
            let mut m = seed.clone();
            // Mutate the headers, where the parser looks, not the zero padding.
            for _ in 0..rng.usize(1..=8) {
                let i = if seed.len() > 4096 {
                    0x8000 + rng.usize(0..256)
                } else {
                    rng.usize(0..seed.len())
                };
                m[i] = rng.u8(..);
            }
            if rng.bool() {
                m.truncate(rng.usize(0..=m.len()));
            }
            let _ = catch_unwind(|| probe_label(&mut std::io::Cursor::new(m.clone())))
                .unwrap_or_else(|_| panic!("probe_label panicked"));
        }
    }
}

/// The hostile inputs of issue 13 (items 1-3) at full size, generated here rather than kept
/// in the corpus: each must be refused with the bound it hits, under the same contract as
/// every mutation. Before the bounds they needed gigabytes or minutes.
fn hostile_inputs() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    use std::io::Write;
    let gzip = |bytes: &[u8]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    };
    let base = "roles: [worker]\nrancher:\n  server: https://rancher.example.com\n  token: t\n";
    let aliases = format!(
        "{base}big: &a {}\nb: [{}]\n",
        "x".repeat(700_000),
        vec!["*a"; 9_900].join(", ")
    );
    let header = "Content-Type: multipart/mixed; boundary=\"B\"\nMIME-Version: 1.0\n\n";
    let parts = |n: usize, part: &str| format!("{header}{}--B--\n", part.repeat(n)).into_bytes();
    let gz_part = {
        use base64::Engine;
        let body = gzip(format!("#cloud-config\n{}", "#".repeat(1 << 20).as_str()).as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD.encode(&body[..]);
        format!("--B\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\n{b64}\n")
    };
    vec![
        (
            "alias bomb by bytes",
            gzip(aliases.as_bytes()),
            "expand to more than",
        ),
        (
            "20,000 MIME parts",
            parts(20_000, "--B\nContent-Type: text/x-shellscript\n\nx\n"),
            "more than 100 parts",
        ),
        (
            "142,848 MIME parts",
            parts(142_848, "--B\n\n"),
            "more than 100 parts",
        ),
        (
            "gzipped MIME parts",
            parts(90, &gz_part),
            "the MIME parts together are larger",
        ),
        (
            "900 KB key",
            format!("{base}? {}\n: 1\n", "k".repeat(900_000)).into_bytes(),
            "unknown key `kkkk",
        ),
    ]
}

#[test]
fn hostile_inputs_at_full_size_are_refused_by_their_bounds() {
    for (name, input, why) in hostile_inputs() {
        assert!(
            input.len() <= userdata::MAX_USERDATA_BYTES,
            "{name}: {} bytes",
            input.len()
        );
        check_userdata(name, &input);
        let e = userdata::parse(&input).expect_err(name);
        assert!(e.to_string().contains(why), "{name}: {e}");
        assert!(
            e.to_string().len() < 1000,
            "{name}: {} bytes of error",
            e.to_string().len()
        );
    }
}
