//! Log output in three shapes: readable text on a terminal (colour only there), journald
//! under systemd (the native protocol, with every event field a journal field, or
//! `<N>`-prefixed lines on stderr when the journal socket is out of reach), and JSON for
//! log pipelines.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

mod format;
mod journal;
pub use format::LogFormat;

impl LogFormat {
    fn resolve(self) -> LogFormat {
        match self {
            LogFormat::Auto if stderr_is_the_journal() => LogFormat::Journald,
            LogFormat::Auto => LogFormat::Text,
            other => other,
        }
    }
}

/// systemd sets `JOURNAL_STREAM=dev:inode` for a service whose stderr goes to the journal;
/// a process it started with stderr redirected elsewhere inherits the variable, hence the
/// comparison with stderr itself (sd_journal_stream_fd(3)).
fn stderr_is_the_journal() -> bool {
    use std::os::fd::AsFd;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    // fstat(2) on our own descriptor: the journal's end is a socket, which cannot be
    // opened again through /proc.
    std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| std::fs::File::from(fd).metadata())
        .is_ok_and(|m| names(&stream, &m))
}

/// Whether `JOURNAL_STREAM`'s `dev:inode` is the file `m` describes.
fn names(stream: &std::ffi::OsStr, m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino())
}

/// Installs the global subscriber. `RUST_LOG` overrides `level` for finer filtering.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let format = format.resolve();
    if format == LogFormat::Journald {
        if let Ok(journal) = journal::JournalLayer::connect() {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(journal)
                .try_init();
            return;
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Journald => builder.with_ansi(false).event_format(Journald).try_init(),
        _ => builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// `<6>message key=value`: sd-daemon(3) priority prefix, no timestamp.
struct Journald;

fn syslog_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", syslog_priority(event.metadata().level()))?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, "{}: ", span.name())?;
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        use std::os::unix::fs::MetadataExt;
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let file = |s: std::os::unix::net::UnixStream| {
            std::fs::File::from(std::os::fd::OwnedFd::from(s))
                .metadata()
                .unwrap()
        };
        let (a, b) = (file(a), file(b));
        let stream = format!("{}:{}", a.dev(), a.ino());
        assert!(names(stream.as_ref(), &a));
        assert!(!names(stream.as_ref(), &b), "another socket");
        assert!(!names("garbage".as_ref(), &a));
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(syslog_priority(&Level::ERROR), 3);
        assert_eq!(syslog_priority(&Level::INFO), 6);
    }

    #[test]
    fn journald_lines_have_priority_and_no_timestamp() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let sink = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(Journald)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(sub, || tracing::warn!(path = "line1", "carrier lost"));
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out, "<4>carrier lost path=\"line1\"\n");
    }
}
