//! Our `Received:` trace header (RFC 5321 §4.4), prepended to every message.

use std::net::IpAddr;

use time::OffsetDateTime;

/// What the header records about the hop.
pub struct Trace<'a> {
    /// The HELO/EHLO argument (validated by the command parser: no spaces, parentheses or
    /// control characters).
    pub helo: &'a str,
    /// EHLO rather than HELO.
    pub extended: bool,
    pub peer: Option<IpAddr>,
    pub host: &'a str,
    /// TLS description from the shell, e.g. `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384`.
    pub tls: Option<&'a str>,
    pub smtputf8: bool,
    pub id: &'a str,
    pub date: OffsetDateTime,
}

/// The protocol name for the `with` clause: RFC 3848 (ESMTPS) and RFC 6531 §3.7.3
/// (UTF8SMTP, UTF8SMTPS).
fn protocol(trace: &Trace<'_>) -> &'static str {
    match (trace.extended, trace.smtputf8, trace.tls.is_some()) {
        (false, _, _) => "SMTP",
        (true, false, false) => "ESMTP",
        (true, false, true) => "ESMTPS",
        (true, true, false) => "UTF8SMTP",
        (true, true, true) => "UTF8SMTPS",
    }
}

/// The full header field, folded, ending with CRLF:
///
/// ```text
/// Received: from helo ([192.0.2.1])
///     (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)
///     by host with ESMTPS id abc.1;
///     Tue, 1 Jul 2003 10:52:37 +0000
/// ```
pub fn received_header(trace: &Trace<'_>) -> Vec<u8> {
    let mut header = format!("Received: from {}", trace.helo);
    if let Some(peer) = trace.peer {
        header.push_str(&format!(" ({})", address_literal(peer)));
    }
    if let Some(tls) = trace.tls {
        header.push_str(&format!("\r\n\t(using {})", comment_text(tls)));
    }
    header.push_str(&format!(
        "\r\n\tby {} with {} id {};\r\n\t{}\r\n",
        trace.host,
        protocol(trace),
        trace.id,
        rfc5322_date(trace.date)
    ));
    header.into_bytes()
}

/// RFC 5321 §4.1.3 address literal.
fn address_literal(peer: IpAddr) -> String {
    match peer {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("[{v4}]"),
            None => format!("[IPv6:{v6}]"),
        },
    }
}

/// Keeps a shell-provided string safe inside a comment: printable ASCII without
/// parentheses or backslashes, so it cannot end the comment or the header.
fn comment_text(text: &str) -> String {
    text.chars()
        .map(|ch| match ch {
            '(' | ')' | '\\' => '_',
            ' '..='~' => ch,
            _ => '?',
        })
        .collect()
}

/// RFC 5322 §3.3 date-time, e.g. `Tue, 1 Jul 2003 10:52:37 +0200`. Written by hand so it
/// cannot fail for any input.
pub fn rfc5322_date(date: OffsetDateTime) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let day = DAYS[usize::from(date.weekday().number_days_from_monday())];
    let month = MONTHS[usize::from(u8::from(date.month()) - 1)];
    let offset_minutes = date.offset().whole_minutes();
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let offset_minutes = offset_minutes.unsigned_abs();
    format!(
        "{day}, {} {month} {:04} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        date.day(),
        date.year(),
        date.hour(),
        date.minute(),
        date.second(),
        offset_minutes / 60,
        offset_minutes % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn dates() {
        assert_eq!(
            rfc5322_date(datetime!(2003-07-01 10:52:37 +02:00)),
            "Tue, 1 Jul 2003 10:52:37 +0200"
        );
        assert_eq!(
            rfc5322_date(datetime!(2024-12-31 23:59:59 -03:30)),
            "Tue, 31 Dec 2024 23:59:59 -0330"
        );
    }

    #[test]
    fn header_with_tls_and_peer() {
        let header = received_header(&Trace {
            helo: "mail.example.org",
            extended: true,
            peer: Some("2001:db8::1".parse().unwrap()),
            host: "mx.example.com",
            tls: Some("TLSv1.3 with cipher (evil)\r\nX: y"),
            smtputf8: false,
            id: "s1.1",
            date: datetime!(2024-01-02 03:04:05 UTC),
        });
        assert_eq!(
            String::from_utf8(header).unwrap(),
            "Received: from mail.example.org ([IPv6:2001:db8::1])\r\n\
             \t(using TLSv1.3 with cipher _evil_??X: y)\r\n\
             \tby mx.example.com with ESMTPS id s1.1;\r\n\
             \tTue, 2 Jan 2024 03:04:05 +0000\r\n"
        );
    }

    #[test]
    fn protocols() {
        let mut trace = Trace {
            helo: "h",
            extended: false,
            peer: None,
            host: "mx",
            tls: None,
            smtputf8: false,
            id: "i",
            date: OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(protocol(&trace), "SMTP");
        trace.extended = true;
        assert_eq!(protocol(&trace), "ESMTP");
        trace.smtputf8 = true;
        assert_eq!(protocol(&trace), "UTF8SMTP");
        trace.tls = Some("TLS");
        assert_eq!(protocol(&trace), "UTF8SMTPS");
        assert_eq!(
            String::from_utf8(received_header(&trace)).unwrap(),
            "Received: from h\r\n\t(using TLS)\r\n\tby mx with UTF8SMTPS id i;\r\n\tThu, 1 Jan 1970 00:00:00 +0000\r\n"
        );
    }
}
