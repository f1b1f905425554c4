//! The proxy login name: `remote_user%target_server%mailbox_id`.
//!
//! The remote user name may itself contain `@` or `%` (it is everything before the last
//! two `%`), the target server may carry `:port` (`[v6]:port` for IPv6 literals), and the
//! mailbox id may be given as an id or as the mailbox's address.

use std::fmt;

use crate::mailbox::{parse_id_or_address, MailboxId};

/// Longest accepted login name; real ones are far shorter.
pub const MAX_LOGIN: usize = 512;

/// A parsed proxy login.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyLogin {
    /// The user name at the provider, passed on unchanged.
    pub remote_user: String,
    /// Host name or IP address of the provider's server (no brackets).
    pub host: String,
    /// The port the client named, if any.
    pub port: Option<u16>,
    /// Where the copies go.
    pub mailbox: MailboxId,
}

/// Why a login name is not a usable proxy login.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("the login name is not remote_user%target_server%mailbox_id")]
    Shape,
    #[error("the remote user name is empty or contains control characters")]
    RemoteUser,
    #[error("the target server is not a valid host name, address or port")]
    Server,
    #[error("the last part of the login name is not a mailbox id")]
    Mailbox,
}

impl ProxyLogin {
    /// Whether a login name asks for proxy mode at all (a plain mailbox login has no `%`).
    pub fn is_proxy_login(login: &str) -> bool {
        login.contains('%')
    }

    pub fn parse(login: &str) -> Result<Self, LoginError> {
        if login.len() > MAX_LOGIN {
            return Err(LoginError::Shape);
        }
        let mut parts = login.rsplitn(3, '%');
        let (Some(mailbox), Some(server), Some(user)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(LoginError::Shape);
        };
        if user.is_empty() || user.chars().any(char::is_control) {
            return Err(LoginError::RemoteUser);
        }
        let (host, port) = split_server(server).ok_or(LoginError::Server)?;
        let mailbox = parse_id_or_address(mailbox).map_err(|_| LoginError::Mailbox)?;
        Ok(Self {
            remote_user: user.to_owned(),
            host,
            port,
            mailbox,
        })
    }

    /// `host:port` for connecting and for trace headers (`[v6]:port` for IPv6).
    pub fn target(&self, default_port: u16) -> String {
        let port = self.port.unwrap_or(default_port);
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

/// Never prints the mailbox id in full: it is what authorises storing into the mailbox.
impl fmt::Debug for ProxyLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyLogin")
            .field("remote_user", &self.remote_user)
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

fn split_server(server: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = server.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match server.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (server, None),
        }
    };
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(0) | Err(_) => return None,
            Ok(port) => Some(port),
        },
    };
    let valid_host = host.parse::<std::net::IpAddr>().is_ok() || valid_host_name(host);
    valid_host.then(|| (host.to_ascii_lowercase(), port))
}

/// RFC 1123 host name: dot-separated labels of letters, digits and hyphens.
fn valid_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "mbx-0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_the_documented_shape() {
        let login = ProxyLogin::parse(&format!("jdoe@example.com%mail.example.com%{ID}")).unwrap();
        assert_eq!(login.remote_user, "jdoe@example.com");
        assert_eq!(login.host, "mail.example.com");
        assert_eq!(login.port, None);
        assert_eq!(login.mailbox.as_str(), ID);
        assert_eq!(login.target(587), "mail.example.com:587");
    }

    #[test]
    fn user_may_contain_percent_and_server_a_port() {
        let login = ProxyLogin::parse(&format!("a%b@x%Mail.Example.com:2525%{ID}")).unwrap();
        assert_eq!(login.remote_user, "a%b@x");
        assert_eq!(login.host, "mail.example.com");
        assert_eq!(login.port, Some(2525));
        let login = ProxyLogin::parse(&format!("u%127.0.0.1:995%{ID}")).unwrap();
        assert_eq!(login.target(110), "127.0.0.1:995");
        let login = ProxyLogin::parse(&format!("u%[::1]:465%{ID}")).unwrap();
        assert_eq!(login.host, "::1");
        assert_eq!(login.target(1), "[::1]:465");
    }

    #[test]
    fn mailbox_may_be_an_address() {
        let login = ProxyLogin::parse(&format!("u%h%{ID}@archive.example")).unwrap();
        assert_eq!(login.mailbox.as_str(), ID);
    }

    #[test]
    fn refuses_malformed_logins() {
        let cases = [
            (format!("mail.example.com%{ID}"), LoginError::Shape),
            (format!("%h%{ID}"), LoginError::RemoteUser),
            (format!("u\r\nRCPT%h%{ID}"), LoginError::RemoteUser),
            (format!("u%%{ID}"), LoginError::Server),
            (format!("u%h:0%{ID}"), LoginError::Server),
            (format!("u%h:99999%{ID}"), LoginError::Server),
            (format!("u%h_x.com%{ID}"), LoginError::Server),
            (format!("u%[::1%{ID}"), LoginError::Server),
            (format!("u%[nothost]:1%{ID}"), LoginError::Server),
            ("u%h%mbx-nothex".to_owned(), LoginError::Mailbox),
            (format!("u%h%{}", "x".repeat(600)), LoginError::Shape),
        ];
        for (login, expected) in cases {
            assert_eq!(ProxyLogin::parse(&login), Err(expected), "{login:?}");
        }
    }

    #[test]
    fn debug_hides_the_mailbox_id() {
        let login = ProxyLogin::parse(&format!("u%h%{ID}")).unwrap();
        assert!(!format!("{login:?}").contains(ID));
    }

    proptest! {
        #[test]
        fn any_input_parses_or_fails_cleanly(login in "\\PC{0,80}") {
            let _ = ProxyLogin::parse(&login);
        }

        #[test]
        fn well_formed_logins_round_trip(
            user in "[a-z0-9.%@+-]{1,20}",
            host in "[a-z]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z]{2,5}){0,2}",
            port in proptest::option::of(1u16..),
        ) {
            let server = match port { Some(p) => format!("{host}:{p}"), None => host.clone() };
            let login = ProxyLogin::parse(&format!("{user}%{server}%{ID}")).unwrap();
            prop_assert_eq!(login.remote_user, user);
            prop_assert_eq!(login.host, host);
            prop_assert_eq!(login.port, port);
        }
    }
}
