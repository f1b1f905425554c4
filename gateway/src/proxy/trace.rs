//! Trace header fields on every proxied copy, so an archiver can tell who sent or fetched
//! it, through which server, and (for sent mail) the envelope. Prepended to the stored copy
//! only; the upstream and the client see the message unchanged.

use super::ProxyLogin;

/// Which way the message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Submitted by the client through the SMTP proxy.
    Sent,
    /// Retrieved by the client through the POP3 proxy.
    Received,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

/// The header block (CRLF lines) to put before the message. `envelope` is the sender and
/// the accepted recipients of sent mail. Values cannot break the header: the login parser
/// refuses control characters and the SMTP parser validated the addresses.
pub fn trace_headers(
    direction: Direction,
    login: &ProxyLogin,
    server: &str,
    envelope: Option<(&str, &[String])>,
) -> Vec<u8> {
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        let clean: String = value.chars().filter(|c| !c.is_control()).collect();
        out.push_str(name);
        out.push_str(": ");
        out.push_str(&clean);
        out.push_str("\r\n");
    };
    field("X-Gateway-Direction", direction.as_str());
    field("X-Gateway-Remote-User", &login.remote_user);
    field("X-Gateway-Server", server);
    if let Some((from, to)) = envelope {
        field("X-Gateway-Envelope-From", &format!("<{from}>"));
        for rcpt in to {
            field("X-Gateway-Envelope-To", &format!("<{rcpt}>"));
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_mail_carries_the_envelope() {
        let login = ProxyLogin::parse(
            "jdoe@example.com%mail.example.com%mbx-0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        let to = vec!["a@x.example".to_owned(), "b@y.example".to_owned()];
        let headers = trace_headers(
            Direction::Sent,
            &login,
            "mail.example.com:587",
            Some(("jdoe@example.com", &to)),
        );
        assert_eq!(
            String::from_utf8(headers).unwrap(),
            "X-Gateway-Direction: sent\r\nX-Gateway-Remote-User: jdoe@example.com\r\n\
             X-Gateway-Server: mail.example.com:587\r\nX-Gateway-Envelope-From: <jdoe@example.com>\r\n\
             X-Gateway-Envelope-To: <a@x.example>\r\nX-Gateway-Envelope-To: <b@y.example>\r\n"
        );
        let received = trace_headers(Direction::Received, &login, "mail.example.com:995", None);
        assert!(String::from_utf8(received)
            .unwrap()
            .starts_with("X-Gateway-Direction: received\r\n"));
    }
}
