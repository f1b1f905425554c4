//! The text format's span fields, with a field recorded again replacing its old value.
//!
//! tracing-subscriber's text fields formatter appends whatever is recorded on a span. A
//! session span recorded its `mailbox` at every accepted recipient, so a connection that
//! delivered thousands of messages grew its span text (and every line it logged) by one
//! `mailbox=…` per message: memory without bound for a long journaling connection, and up to
//! a quarter more CPU per message at the default level. SMTP now records only a change, and
//! [`SpanFields`] formats exactly as the default does but takes an earlier entry of the same
//! name out first, so a session alternating between mailboxes does not grow either.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FormatFields, FormattedFields};

/// Text span and event fields as [`DefaultFields`] writes them; see the module.
#[derive(Debug, Default)]
pub struct SpanFields {
    inner: DefaultFields,
}

impl<'writer> FormatFields<'writer> for SpanFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        self.inner.format_fields(writer, fields)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        let mut names = Names(Vec::new());
        fields.record(&mut names);
        for name in names.0 {
            remove_entry(&mut current.fields, name);
        }
        if !current.fields.is_empty() {
            current.fields.push(' ');
        }
        self.format_fields(current.as_writer(), fields)
    }
}

/// The names of the fields a record sets.
struct Names(Vec<&'static str>);

impl Visit for Names {
    fn record_debug(&mut self, field: &Field, _: &dyn fmt::Debug) {
        self.0.push(field.name());
    }
}

/// How [`DefaultFields`] styles a name at a terminal: italic name, dimmed `=`.
const STYLED_NAME: &str = "\x1b[3m";
const STYLED_EQUALS: &str = "\x1b[0m\x1b[2m=\x1b[0m";

/// Takes `name`'s entry out of `fields`, with the space that joined it to the others.
///
/// An entry is `name=value` (styled at a terminal), entries are joined by single spaces, and
/// a value is either quoted (a string, with `\"` inside) or runs to the next space. When the
/// fields cannot be read that way (a displayed value holding spaces), nothing is taken out:
/// the new value is then appended, as the default formatter does.
fn remove_entry(fields: &mut String, name: &str) {
    let Some(entries) = entries(fields) else {
        return;
    };
    let Some(&(start, _, end)) = entries.iter().find(|(_, n, _)| *n == name) else {
        return;
    };
    if end < fields.len() {
        // With the space after it.
        fields.replace_range(start..=end, "");
    } else if start > 0 {
        fields.replace_range(start - 1..end, "");
    } else {
        fields.clear();
    }
}

/// Each entry's start, name and end, or `None` when `fields` does not read as entries.
fn entries(fields: &str) -> Option<Vec<(usize, &str, usize)>> {
    let mut entries = Vec::new();
    let mut at = 0;
    while at < fields.len() {
        let rest = &fields[at..];
        let (name, value_at) = match rest.strip_prefix(STYLED_NAME) {
            Some(styled) => {
                let name_len = styled.find(STYLED_EQUALS)?;
                (
                    &styled[..name_len],
                    STYLED_NAME.len() + name_len + STYLED_EQUALS.len(),
                )
            }
            None => {
                let name_len = rest.find('=')?;
                (&rest[..name_len], name_len + 1)
            }
        };
        if name.is_empty() || name.contains([' ', '"']) {
            return None;
        }
        let end = at + value_at + value_len(&rest[value_at..])?;
        entries.push((at, name, end));
        at = match fields[end..].strip_prefix(' ') {
            Some(_) => end + 1,
            None if end == fields.len() => end,
            None => return None,
        };
    }
    Some(entries)
}

/// The length of the value at the start of `rest`, or `None` for an unterminated quote.
fn value_len(rest: &str) -> Option<usize> {
    let bytes = rest.as_bytes();
    if bytes.first() != Some(&b'"') {
        return Some(rest.find(' ').unwrap_or(rest.len()));
    }
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::test_support::Captured;
    use super::*;

    fn logged_with(ansi: bool, record: impl FnOnce(&tracing::Span)) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(SpanFields::default())
            .with_ansi(ansi)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "session",
                id = "S1",
                listener = "smtp",
                tls = tracing::field::Empty,
                mailbox = tracing::field::Empty,
            );
            record(&span);
            span.in_scope(|| tracing::info!(size = 5, "message stored"));
        });
        captured.text()
    }

    fn span_text(line: &str) -> &str {
        let start = line.find("session{").expect(line) + "session{".len();
        &line[start..start + line[start..].find('}').expect(line)]
    }

    #[test]
    fn a_field_recorded_again_replaces_its_value() {
        let text = logged_with(false, |span| {
            for n in 0..1000 {
                span.record("mailbox", tracing::field::display(format!("mbx-{n}")));
            }
        });
        assert_eq!(
            span_text(&text),
            r#"id="S1" listener="smtp" mailbox=mbx-999"#,
            "{text}"
        );
    }

    #[test]
    fn quoted_values_with_spaces_and_quotes_are_replaced_whole() {
        let text = logged_with(false, |span| {
            span.record("tls", "TLSv1.2 \"old\" mailbox=mbx-x suite");
            span.record("mailbox", tracing::field::display("mbx-a"));
            span.record("tls", "TLSv1.3 TLS13_AES_128_GCM_SHA256");
        });
        assert_eq!(
            span_text(&text),
            r#"id="S1" listener="smtp" mailbox=mbx-a tls="TLSv1.3 TLS13_AES_128_GCM_SHA256""#,
            "{text}"
        );
    }

    #[test]
    fn a_field_set_when_the_span_began_is_replaced_too() {
        let text = logged_with(false, |span| {
            span.record("listener", "smtps");
        });
        assert_eq!(span_text(&text), r#"id="S1" listener="smtps""#, "{text}");
    }

    #[test]
    fn a_displayed_value_with_spaces_is_left_and_the_new_one_appended() {
        let text = logged_with(false, |span| {
            span.record("mailbox", tracing::field::display("two words"));
            span.record("mailbox", tracing::field::display("mbx-b"));
        });
        assert_eq!(
            span_text(&text),
            r#"id="S1" listener="smtp" mailbox=two words mailbox=mbx-b"#,
            "{text}"
        );
    }

    #[test]
    fn at_a_terminal_the_styled_entry_is_replaced() {
        let text = logged_with(true, |span| {
            for n in 0..10 {
                span.record("mailbox", tracing::field::display(format!("mbx-{n}")));
            }
        });
        assert_eq!(text.matches("mailbox").count(), 1, "{text:?}");
        assert!(text.contains("mbx-9"), "{text:?}");
    }
}
