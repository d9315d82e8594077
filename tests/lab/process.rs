//! Running a command with a deadline and capturing what it printed.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// What a finished command left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code, or `None` when a signal ended the command.
    pub code: Option<i32>,
    /// Everything it wrote to stdout, lossily decoded.
    pub stdout: String,
    /// Everything it wrote to stderr, lossily decoded.
    pub stderr: String,
}

impl CommandOutput {
    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `command` with `input` on stdin (empty when `None`), and kills it if it is still running
/// after `timeout`, which is then an error: a hung CLI or `ip` must fail the test, not hang it.
pub fn run_with_timeout(
    command: &mut Command,
    input: Option<&str>,
    timeout: Duration,
) -> Result<CommandOutput> {
    let described = format!("{command:?}");
    command
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().with_context(|| format!("cannot start {described}"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).with_context(|| format!("cannot write the input of {described}"))?;
    }
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // The pipes are drained on their own threads, so a chatty command never blocks on a full pipe
    // while this thread waits for it to exit.
    let stdout_reader = thread::spawn(move || drain(stdout));
    let stderr_reader = thread::spawn(move || drain(stderr));

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().with_context(|| format!("cannot wait for {described}"))? {
            break status;
        }
        if Instant::now() >= deadline {
            // Killing an already exited child is harmless; the wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
            bail!("{described} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(2));
    };
    let stdout = stdout_reader.join().unwrap_or_default();
    let stderr = stderr_reader.join().unwrap_or_default();
    Ok(CommandOutput {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

fn drain(pipe: Option<impl Read>) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        // A read error only truncates what the test gets to see; the exit status still counts.
        let _ = pipe.read_to_end(&mut bytes);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_exit_code() {
        let output = run_with_timeout(
            Command::new("sh").args(["-c", "cat; echo oops >&2; exit 3"]),
            Some("hello"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(output.code, Some(3));
        assert_eq!(output.stdout, "hello");
        assert_eq!(output.stderr, "oops\n");
        assert!(!output.success());
    }

    #[test]
    fn a_hung_command_is_an_error() {
        let error =
            run_with_timeout(Command::new("sleep").arg("5"), None, Duration::from_millis(50)).unwrap_err();
        assert!(error.to_string().contains("did not finish"), "{error}");
    }
}
