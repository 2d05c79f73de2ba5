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
        assert!(matches!(
            run(&mut Command::new("/nonexistent/tool")),
            Err(ToolError::Spawn { .. })
        ));
    }
}
