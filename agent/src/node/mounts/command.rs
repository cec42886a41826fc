//! The seam for programs that mount and exit (`mount`, `bash -c`, `blobfuse2 mount`): the
//! real [`SystemRunner`] runs them; tests record them where the kernel or program is absent.

use std::ffi::OsString;
use std::io;
use std::process::{Command, Stdio};

/// A program and its arguments. Nothing secret ever goes in here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    pub program: String,
    pub args: Vec<OsString>,
}

impl CommandLine {
    pub fn new(program: &str) -> CommandLine {
        CommandLine {
            program: program.to_owned(),
            args: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> CommandLine {
        self.args.push(arg.into());
        self
    }

    /// The arguments as text, for tests and messages.
    pub fn args_lossy(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }
}

/// How a program ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunOutput {
    pub success: bool,
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a program to its end.
pub trait Runner: Send + Sync {
    /// Runs `cmd` with stdin from /dev/null; an `Err` only when it could not be started.
    fn run(&self, cmd: &CommandLine) -> io::Result<RunOutput>;

    /// Whether a command that reports success has really mounted, so [`super::mount`]
    /// confirms it in `/proc/self/mountinfo`. True for real runners; a recording one, whose
    /// commands mount nothing, says false.
    fn mounts_for_real(&self) -> bool {
        true
    }
}

/// Runs programs for real.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, cmd: &CommandLine) -> io::Result<RunOutput> {
        let program = super::drivers::find_program(&cmd.program)
            .map(OsString::from)
            .unwrap_or_else(|| OsString::from(&cmd.program));
        let out = Command::new(program)
            .args(&cmd.args)
            .stdin(Stdio::null())
            .output()?;
        Ok(RunOutput {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// The last `n` lines of `text`, trimmed: what an error message quotes of a tool's output.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::sync::Mutex;

    /// Records every command and answers each with `answer`.
    pub struct RecordingRunner {
        pub calls: Mutex<Vec<CommandLine>>,
        pub answer: RunOutput,
    }

    impl RecordingRunner {
        pub fn succeeding() -> RecordingRunner {
            RecordingRunner {
                calls: Mutex::new(Vec::new()),
                answer: RunOutput {
                    success: true,
                    code: Some(0),
                    ..RunOutput::default()
                },
            }
        }

        pub fn calls(&self) -> Vec<CommandLine> {
            self.calls.lock().map(|c| c.clone()).unwrap_or_default()
        }
    }

    impl Runner for RecordingRunner {
        fn run(&self, cmd: &CommandLine) -> io::Result<RunOutput> {
            if let Ok(mut calls) = self.calls.lock() {
                calls.push(cmd.clone());
            }
            Ok(self.answer.clone())
        }

        fn mounts_for_real(&self) -> bool {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_runner_reports_exit_and_output() {
        let out = SystemRunner
            .run(
                &CommandLine::new("sh")
                    .arg("-c")
                    .arg("echo out; echo err >&2; exit 3"),
            )
            .unwrap();
        assert_eq!((out.success, out.code), (false, Some(3)));
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str()),
            ("out\n", "err\n")
        );
        assert!(
            SystemRunner
                .run(&CommandLine::new("no-such-program-bai"))
                .is_err()
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("", 2), "");
    }
}
