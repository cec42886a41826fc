//! The one tracing setup both daemons call: text or JSON lines on stderr, filtered by
//! `RUST_LOG` (default `info`).
//!
//! JSON lines have one shape in both daemons: `timestamp`, `level`, `target`, the event's
//! fields flattened beside them (`message`, `error`, …) and, inside a span, `span` holding the
//! innermost span's name and fields (`job`, `node`, `cluster`). Under journald (systemd sets
//! `JOURNAL_STREAM` to stderr's device and inode) text lines carry no timestamp and no
//! colour, since the journal stamps every line itself; elsewhere colour is used on a terminal.

use std::io::IsTerminal;
use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where lines go and how they look, for [`subscriber`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Output {
    pub format: LogFormat,
    /// Colour escapes in text lines.
    pub ansi: bool,
    /// Timestamps in text lines.
    pub timestamps: bool,
}

impl Output {
    /// What suits stderr now: see the module comment.
    pub fn for_stderr(format: LogFormat) -> Self {
        let journald = stderr_is_journal();
        Self {
            format,
            ansi: !journald && std::io::stderr().is_terminal(),
            timestamps: !journald,
        }
    }
}

/// Installs the global subscriber writing to stderr, filtered by `RUST_LOG` (default `info`).
/// Call once, from `main`; a second call returns the error and changes nothing.
pub fn init(format: LogFormat) -> Result<(), TryInitError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    subscriber(Output::for_stderr(format), filter, std::io::stderr).try_init()
}

/// The subscriber [`init`] installs, writing to `writer` (tests capture lines with it).
pub fn subscriber<W>(
    out: Output,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync + 'static>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(out.ansi && out.format == LogFormat::Text);
    let registry = tracing_subscriber::registry().with(filter);
    match (out.format, out.timestamps) {
        (LogFormat::Json, _) => Box::new(
            registry.with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            ),
        ),
        (LogFormat::Text, true) => Box::new(registry.with(layer)),
        (LogFormat::Text, false) => Box::new(registry.with(layer.without_time())),
    }
}

/// Whether stderr is the journal: `JOURNAL_STREAM` is `<device>:<inode>` of stderr.
fn stderr_is_journal() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    var.to_str()
        .is_some_and(|v| v == format!("{}:{}", st.st_dev, st.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(out: Output) -> String {
        let lines = Lines::default();
        let sink = lines.clone();
        let sub = subscriber(out, EnvFilter::new("info"), move || sink.clone());
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("job", job = "j1", node = "n1");
            let _e = span.enter();
            tracing::info!(error = "boom", "job failed");
            tracing::debug!("filtered out");
        });
        let bytes = lines.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn json_lines_flatten_the_event_and_carry_the_span() {
        let text = capture(Output {
            format: LogFormat::Json,
            ansi: true,
            timestamps: true,
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        for key in [
            "\"message\":\"job failed\"",
            "\"error\":\"boom\"",
            "\"level\":\"INFO\"",
            "\"timestamp\":",
            "\"span\":{",
            "\"job\":\"j1\"",
            "\"node\":\"n1\"",
        ] {
            assert!(lines[0].contains(key), "{key} missing from {text}");
        }
        assert!(!lines[0].contains("\"fields\""), "{text}");
        assert!(!lines[0].contains("\"spans\""), "{text}");
        assert!(!lines[0].contains('\u{1b}'), "{text}");
    }

    #[test]
    fn text_lines_for_the_journal_have_no_time_or_colour() {
        let text = capture(Output {
            format: LogFormat::Text,
            ansi: false,
            timestamps: false,
        });
        assert!(
            text.starts_with(" INFO") || text.starts_with("INFO"),
            "{text}"
        );
        assert!(text.contains("job{job=\"j1\" node=\"n1\"}"), "{text}");
        assert!(text.contains("job failed error=\"boom\""), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        let stamped = capture(Output {
            format: LogFormat::Text,
            ansi: false,
            timestamps: true,
        });
        assert!(
            stamped.starts_with(|c: char| c.is_ascii_digit()),
            "{stamped}"
        );
    }

    #[test]
    fn a_second_init_fails_instead_of_panicking() {
        // Whichever call wins, the other reports an error.
        let a = init(LogFormat::Text);
        let b = init(LogFormat::Json);
        assert!(a.is_err() || b.is_err());
    }
}
