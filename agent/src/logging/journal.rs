//! journald's native protocol (systemd.journal-fields(7), "Native Journal Protocol"): one
//! datagram per record on `/run/systemd/journal/socket`, so that every field of an event is
//! a field of the record (`CROSSLINK_COMMAND=failover`) and `journalctl
//! CROSSLINK_USER=alice` finds an operator's commands.
//!
//! Written here rather than with `tracing-journald`: that crate sends the event's fields
//! only as fields, so `journalctl -u crosslink` would show "the record stops here" without
//! the error that follows it. Here MESSAGE is the whole line an operator reads (the message
//! and its `key=value` fields, as on stderr) and the fields come in addition.

use std::fmt::{self, Write as _};
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::syslog_priority;

const SOCKET: &str = "/run/systemd/journal/socket";
/// Field names are upper case, so the prefix keeps ours apart from journald's own.
const PREFIX: &str = "CROSSLINK_";

pub struct JournalLayer {
    socket: UnixDatagram,
}

impl JournalLayer {
    /// Connects to the journal; fails when no journald listens (not under systemd, or a
    /// sandbox that hides the socket), and the caller then logs to stderr instead.
    pub fn connect() -> io::Result<JournalLayer> {
        Self::connect_to(Path::new(SOCKET))
    }

    fn connect_to(path: &Path) -> io::Result<JournalLayer> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        // journald discards an empty datagram: this only proves someone listens.
        socket.send(&[])?;
        Ok(JournalLayer { socket })
    }
}

impl<S> tracing_subscriber::Layer<S> for JournalLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut text = String::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                let _ = write!(text, "{}: ", span.name());
            }
        }
        let _ = DefaultFields::new().format_fields(Writer::new(&mut text), event);
        let mut record = Vec::with_capacity(256 + text.len());
        put(&mut record, "MESSAGE", text.as_bytes());
        put(
            &mut record,
            "PRIORITY",
            syslog_priority(meta.level()).to_string().as_bytes(),
        );
        put(&mut record, "SYSLOG_IDENTIFIER", b"crosslink");
        put(
            &mut record,
            "SYSLOG_PID",
            std::process::id().to_string().as_bytes(),
        );
        put(&mut record, "CROSSLINK_TARGET", meta.target().as_bytes());
        if let (Some(file), Some(line)) = (meta.file(), meta.line()) {
            put(&mut record, "CODE_FILE", file.as_bytes());
            put(&mut record, "CODE_LINE", line.to_string().as_bytes());
        }
        event.record(&mut Fields(&mut record));
        if self.socket.send(&record).is_err() {
            // Too large for a datagram (journald takes a memfd then; our records are
            // lines) or journald gone: the line still reaches stderr, which systemd
            // connects to the journal too.
            eprintln!("<{}>{text}", syslog_priority(meta.level()));
        }
    }
}

/// Appends every field but the message as `CROSSLINK_<NAME>`.
struct Fields<'a>(&'a mut Vec<u8>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, value.as_bytes());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, format!("{value:?}").as_bytes());
    }
}

impl Fields<'_> {
    fn field(&mut self, field: &Field, value: &[u8]) {
        if field.name() == "message" {
            return;
        }
        put(self.0, &field_name(field.name()), value);
    }
}

/// `CROSSLINK_` and the name in upper case, anything but a letter, digit or `_` made `_`
/// (journald drops fields whose names are not so).
fn field_name(name: &str) -> String {
    let name = name.strip_prefix("r#").unwrap_or(name);
    let mut out = String::with_capacity(PREFIX.len() + name.len());
    out.push_str(PREFIX);
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    out
}

/// `NAME=value\n`, or for a value with a newline in it, the binary form: `NAME\n`, the
/// length as 64-bit little endian, the value, `\n`.
fn put(record: &mut Vec<u8>, name: &str, value: &[u8]) {
    record.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        record.push(b'\n');
        record.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        record.push(b'=');
    }
    record.extend_from_slice(value);
    record.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// The fields of one datagram, decoded as journald does.
    fn decode(mut d: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        while !d.is_empty() {
            let end = d.iter().position(|&b| b == b'\n').unwrap();
            let line = &d[..end];
            if let Some(eq) = line.iter().position(|&b| b == b'=') {
                out.push((
                    String::from_utf8(line[..eq].to_vec()).unwrap(),
                    line[eq + 1..].to_vec(),
                ));
                d = &d[end + 1..];
            } else {
                let name = String::from_utf8(line.to_vec()).unwrap();
                let rest = &d[end + 1..];
                let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
                out.push((name, rest[8..8 + len].to_vec()));
                assert_eq!(rest[8 + len], b'\n');
                d = &rest[9 + len..];
            }
        }
        out
    }

    fn field<'a>(r: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
        r.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn every_field_is_a_journal_field_and_the_message_keeps_them_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.socket");
        let journald = UnixDatagram::bind(&path).unwrap();
        let layer = JournalLayer::connect_to(&path).unwrap();
        let mut probe = [0u8; 8];
        assert_eq!(journald.recv(&mut probe).unwrap(), 0, "the empty probe");
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, || {
            tracing::info!(
                target: "crosslink::audit",
                command = "failover",
                user = %"alice",
                uid = 1000u32,
                "failover line1 by alice"
            );
            tracing::warn!(error = "two\nlines", "the record stops here");
        });
        let mut buf = vec![0u8; 65536];
        let n = journald.recv(&mut buf).unwrap();
        let r = decode(&buf[..n]);
        assert_eq!(
            field(&r, "MESSAGE"),
            Some("failover line1 by alice command=\"failover\" user=alice uid=1000")
        );
        assert_eq!(field(&r, "PRIORITY"), Some("6"));
        assert_eq!(field(&r, "SYSLOG_IDENTIFIER"), Some("crosslink"));
        assert_eq!(field(&r, "CROSSLINK_TARGET"), Some("crosslink::audit"));
        assert_eq!(field(&r, "CROSSLINK_COMMAND"), Some("failover"));
        assert_eq!(field(&r, "CROSSLINK_USER"), Some("alice"));
        assert_eq!(field(&r, "CROSSLINK_UID"), Some("1000"));
        assert!(field(&r, "CODE_LINE").is_some());
        assert!(field(&r, "CROSSLINK_MESSAGE").is_none());

        let n = journald.recv(&mut buf).unwrap();
        let r = decode(&buf[..n]);
        assert_eq!(field(&r, "PRIORITY"), Some("4"));
        assert_eq!(field(&r, "CROSSLINK_ERROR"), Some("two\nlines"));
        assert_eq!(
            field(&r, "MESSAGE"),
            Some("the record stops here error=\"two\\nlines\"")
        );
    }

    #[test]
    fn names_journald_would_refuse_are_made_valid() {
        assert_eq!(field_name("took_us"), "CROSSLINK_TOOK_US");
        assert_eq!(field_name("r#type"), "CROSSLINK_TYPE");
        assert_eq!(field_name("peer.addr"), "CROSSLINK_PEER_ADDR");
    }

    #[test]
    fn no_journal_no_layer() {
        let dir = tempfile::tempdir().unwrap();
        assert!(JournalLayer::connect_to(&dir.path().join("absent")).is_err());
    }
}
