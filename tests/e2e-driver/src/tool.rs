//! Running the host's tools (qemu-img, losetup, mount, journalctl, dpkg-query, genisoimage):
//! their output, or an error naming the command and what it said.

use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
}

/// What a tool printed and how it ended.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` whatever its exit status.
pub fn run(cmd: &mut Command) -> Result<Ran, ToolError> {
    let out = cmd.output().map_err(|source| ToolError::Spawn {
        command: describe(cmd),
        source,
    })?;
    Ok(Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `cmd`; its stdout, or an error when it failed.
pub fn stdout(cmd: &mut Command) -> Result<String, ToolError> {
    let ran = run(cmd)?;
    if ran.code != 0 {
        return Err(ToolError::Failed {
            command: describe(cmd),
            status: format!("exit {}", ran.code),
            stderr: ran.stderr.trim().to_string(),
        });
    }
    Ok(ran.stdout)
}

/// Whether two files hold the same bytes (false when either cannot be read).
pub fn same_bytes(a: &std::path::Path, b: &std::path::Path) -> bool {
    std::fs::read(a)
        .ok()
        .zip(std::fs::read(b).ok())
        .is_some_and(|(a, b)| a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_failures_name_the_command() {
        assert_eq!(
            stdout(Command::new("sh").args(["-c", "echo hi"])).expect("sh"),
            "hi\n"
        );
        let err =
            stdout(Command::new("sh").args(["-c", "echo bad >&2; exit 3"])).expect_err("fails");
        let text = err.to_string();
        assert!(
            text.contains("sh -c") && text.contains("exit 3") && text.contains("bad"),
            "{text}"
        );
        let ran = run(Command::new("sh").args(["-c", "exit 2"])).expect("runs");
        assert_eq!(ran.code, 2);
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "x").expect("write");
        std::fs::write(&b, "x").expect("write");
        assert!(same_bytes(&a, &b));
        std::fs::write(&b, "y").expect("write");
        assert!(!same_bytes(&a, &b));
        assert!(!same_bytes(&a, &dir.path().join("missing")));
        assert!(matches!(
            run(&mut Command::new("/nonexistent/tool")),
            Err(ToolError::Spawn { .. })
        ));
    }
}
