//! The one way bootstrapd runs a system tool (probes, package managers, module and
//! alternatives tools): C locale, no stdin, no systemd notify socket, bounded in time, output
//! captured.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::secret::Secret;

/// A command to run: program, arguments and extra environment. It is shown in logs and
/// errors, so a secret may only be in `secret_env`, which is shown as names alone (never in
/// argv either: another user can read a process's arguments).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Environment whose values are secret (a proxy URL with credentials).
    pub secret_env: Vec<(String, Secret)>,
}

impl CommandSpec {
    pub fn new(program: &str, args: &[&str]) -> Self {
        CommandSpec {
            program: program.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            secret_env: Vec::new(),
        }
    }
}

impl fmt::Display for CommandSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.env {
            write!(f, "{k}={v} ")?;
        }
        for (k, v) in &self.secret_env {
            write!(f, "{k}={v} ")?;
        }
        f.write_str(&self.program)?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// The command as errors name it: a proxy or repository URL among its environment or
/// arguments may carry credentials or a signed query, and errors reach journald and `status`.
fn shown(spec: &CommandSpec) -> String {
    crate::secret::redact_urls(&spec.to_string())
}

/// A child that could not be run to its end. A non-zero exit is not one: whether it is a
/// failure is the caller's to say (`rpm -q` answers "not installed" with 1).
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` did not finish within {secs} s")]
    Timeout { command: String, secs: u64 },
}

/// Output of a finished child process, decoded lossily (tools' output is read as text).
#[derive(Debug)]
pub struct Output {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `spec` to completion, at most `timeout`; the child is killed when the time is up.
pub async fn run(spec: &CommandSpec, timeout: Duration) -> Result<Output, ProcessError> {
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        // systemd's socket is for bootstrapd alone: package scripts that found it would
        // send readiness of their own (systemd logs and drops it).
        .env_remove("NOTIFY_SOCKET")
        // Output is parsed: keep it untranslated.
        .env("LANG", "C")
        .env("LC_ALL", "C")
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(
            spec.secret_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.expose())),
        )
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(r) => r.map_err(|source| ProcessError::Spawn {
            command: shown(spec),
            source,
        })?,
        Err(_) => {
            return Err(ProcessError::Timeout {
                command: shown(spec),
                secs: timeout.as_secs(),
            });
        }
    };
    Ok(Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Last non-blank line of a tool's stderr, for one-line error messages.
pub fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> CommandSpec {
        CommandSpec::new("/bin/sh", &["-c", script])
    }

    #[tokio::test]
    async fn captures_output_and_exit_status_in_the_c_locale() {
        let mut spec = sh("echo \"$LANG $LC_ALL $EXTRA ${NOTIFY_SOCKET-unset}\"; \
             read line || echo 'no stdin' >&2; exit 3");
        spec.env.push(("EXTRA".into(), "x=1".into()));
        let out = run(&spec, Duration::from_secs(60)).await.unwrap();
        assert_eq!(out.stdout, "C C x=1 unset\n");
        assert_eq!(out.stderr, "no stdin\n");
        assert_eq!(out.status.code(), Some(3));
    }

    #[tokio::test]
    async fn a_missing_program_and_a_hung_one_are_errors_naming_the_command() {
        let e = run(
            &CommandSpec::new("/nonexistent/tool", &["--version"]),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ProcessError::Spawn { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("cannot start `/nonexistent/tool --version`: "),
            "{e}"
        );
        let e = run(&sh("exec sleep 600"), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, ProcessError::Timeout { secs: 1, .. }), "{e:?}");
        assert!(e.to_string().contains("`/bin/sh -c exec sleep 600`"), "{e}");
    }

    #[tokio::test]
    async fn an_error_names_the_command_without_the_credentials_of_its_urls() {
        let mut spec = CommandSpec::new("/nonexistent/apt-get", &["update"]);
        spec.env.push((
            "https_proxy".into(),
            "http://user:hunter2@proxy.lab:3128/".into(),
        ));
        let e = run(&spec, Duration::from_secs(60)).await.unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("/nonexistent/apt-get update"), "{text}");
    }

    #[tokio::test]
    async fn secret_env_reaches_the_child_and_nothing_shown() {
        let mut spec = sh("echo \"$http_proxy\"; exit 1");
        spec.secret_env.push((
            "http_proxy".into(),
            Secret::new("http://user:hunter2@proxy.lab:3128/"),
        ));
        let out = run(&spec, Duration::from_secs(60)).await.unwrap();
        assert_eq!(out.stdout, "http://user:hunter2@proxy.lab:3128/\n");
        let shown = format!("{spec} {spec:?} {}", serde_json::to_string(&spec).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            spec.to_string()
                .starts_with("http_proxy=<redacted> /bin/sh")
        );
        assert!(spec.args.iter().all(|a| !a.contains("hunter2")));
    }

    #[test]
    fn display_shows_env_program_and_args() {
        let mut spec = CommandSpec::new("apt-get", &["install", "-y", "docker.io"]);
        spec.env
            .push(("DEBIAN_FRONTEND".into(), "noninteractive".into()));
        assert_eq!(
            spec.to_string(),
            "DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io"
        );
    }

    #[test]
    fn last_line_skips_trailing_blank_lines() {
        assert_eq!(last_line("a\n  b failed  \n\n \n"), "b failed");
        assert_eq!(last_line(""), "");
    }
}
