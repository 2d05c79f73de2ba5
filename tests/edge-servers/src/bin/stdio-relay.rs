//! `stdio-relay ADDR`: relays its stdin and stdout to a TCP connection to ADDR, a loopback
//! address. qemu's user network runs it once per guest connection
//! (`guestfwd=tcp:10.0.2.100:3128-cmd:stdio-relay 127.0.0.1:PROXY_PORT`, the socket on the
//! command's stdin and stdout), so a guest under `restrict=on` reaches the test proxy and
//! nothing else (scripts/vm.sh `--proxy-only`).
//!
//! The guest closing its side (stdin EOF) half-closes the TCP connection, so a response still
//! on its way arrives; the server closing its side ends the relay, which closes the guest's
//! connection.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = match args.as_slice() {
        [addr] => match addr.parse::<SocketAddr>() {
            Ok(addr) if addr.ip().is_loopback() => addr,
            Ok(_) => return usage(&format!("{addr} is not a loopback address")),
            Err(e) => return usage(&format!("{addr}: {e}")),
        },
        _ => return usage("expected one argument, a loopback HOST:PORT"),
    };
    let stream = match TcpStream::connect(addr) {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("stdio-relay: connecting to {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let upstream = match stream.try_clone() {
        Ok(clone) => clone,
        Err(e) => {
            eprintln!("stdio-relay: {e}");
            return ExitCode::FAILURE;
        }
    };
    std::thread::spawn(move || {
        let mut upstream = upstream;
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut upstream);
        let _ = upstream.shutdown(Shutdown::Write);
    });
    // Unbuffered both ways: a proxy's `200 Connection established` must reach the guest
    // before the guest sends its TLS ClientHello.
    let mut stream = stream;
    let mut stdout = std::io::stdout().lock();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stdout
                    .write_all(&buffer[..n])
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    // Exiting closes stdout, and with it the guest's connection; the stdin thread ends with us.
    ExitCode::SUCCESS
}

fn usage(message: &str) -> ExitCode {
    eprintln!("stdio-relay: {message}\nusage: stdio-relay 127.0.0.1:PORT");
    ExitCode::from(2)
}
