//! The typed POP3 command parser (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH).
//!
//! Keywords are case-insensitive. Message numbers and line counts are decimal digits without
//! sign, at most 10 of them. Arguments of USER, PASS and AUTH are only split off here, never
//! interpreted: the session decides first whether credentials may be processed at all (not
//! before TLS), then decodes them.

/// A parsed command line. Borrowed from the line, which the session wipes afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// USER: the rest of the line (a mailbox id or address, interpreted later).
    User(&'a str),
    /// PASS: the rest of the line (passwords may contain spaces, RFC 1939 §7).
    Pass(&'a str),
    /// AUTH mechanism [initial-response] (RFC 5034 §4).
    Auth {
        mechanism: &'a str,
        initial_response: Option<&'a str>,
    },
    Capa,
    Stls,
    Stat,
    List(Option<u64>),
    Uidl(Option<u64>),
    Retr(u64),
    Top {
        message: u64,
        lines: u64,
    },
    Dele(u64),
    Rset,
    Noop,
    Quit,
}

/// Why a line is not a command. [`super::error_map`] turns each into its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    /// Control characters or invalid UTF-8.
    InvalidCharacters,
    UnknownCommand,
    MissingArgument,
    TooManyArguments,
    /// Not 1 to 10 decimal digits.
    InvalidNumber,
    /// Not a SASL mechanism name (RFC 4422 §3.1: 1 to 20 of `A-Z 0-9 - _`).
    InvalidMechanism,
}

/// Digits a number may have.
const MAX_DIGITS: usize = 10;

/// Parses one line without its line end.
pub fn parse(line: &[u8]) -> Result<Command<'_>, ParseError> {
    if line.is_empty() {
        return Err(ParseError::Empty);
    }
    if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(ParseError::InvalidCharacters);
    }
    let text = std::str::from_utf8(line).map_err(|_| ParseError::InvalidCharacters)?;
    let (keyword, rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut args = rest.split(' ').filter(|a| !a.is_empty());
    let is = |name: &str| keyword.eq_ignore_ascii_case(name);

    let command = if is("USER") {
        let name = rest.trim_matches(' ');
        if name.is_empty() {
            return Err(ParseError::MissingArgument);
        }
        Command::User(name)
    } else if is("PASS") {
        if rest.is_empty() {
            return Err(ParseError::MissingArgument);
        }
        Command::Pass(rest)
    } else if is("AUTH") {
        let mechanism = args.next().ok_or(ParseError::MissingArgument)?;
        if !crate::wire::sasl::is_mechanism_name(mechanism) {
            return Err(ParseError::InvalidMechanism);
        }
        let initial_response = args.next();
        no_more(&mut args)?;
        Command::Auth {
            mechanism,
            initial_response,
        }
    } else if is("LIST") {
        Command::List(optional_number(&mut args)?)
    } else if is("UIDL") {
        Command::Uidl(optional_number(&mut args)?)
    } else if is("RETR") {
        Command::Retr(required_number(&mut args)?)
    } else if is("DELE") {
        Command::Dele(required_number(&mut args)?)
    } else if is("TOP") {
        let message = number(args.next().ok_or(ParseError::MissingArgument)?)?;
        let lines = required_number(&mut args)?;
        Command::Top { message, lines }
    } else {
        let command = if is("CAPA") {
            Command::Capa
        } else if is("STLS") {
            Command::Stls
        } else if is("STAT") {
            Command::Stat
        } else if is("RSET") {
            Command::Rset
        } else if is("NOOP") {
            Command::Noop
        } else if is("QUIT") {
            Command::Quit
        } else {
            return Err(ParseError::UnknownCommand);
        };
        no_more(&mut args)?;
        command
    };
    Ok(command)
}

impl Command<'_> {
    /// Appends the command line, CRLF included, as a client sends it (the proxy toward an
    /// upstream): [`parse`] reads it back as the same command.
    pub fn write(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        // Writing to a Vec cannot fail.
        let _ = match self {
            Command::User(name) => write!(out, "USER {name}"),
            Command::Pass(password) => write!(out, "PASS {password}"),
            Command::Auth {
                mechanism,
                initial_response,
            } => {
                crate::wire::sasl::write_auth(out, mechanism, *initial_response);
                Ok(())
            }
            Command::Capa => write!(out, "CAPA"),
            Command::Stls => write!(out, "STLS"),
            Command::Stat => write!(out, "STAT"),
            Command::List(None) => write!(out, "LIST"),
            Command::List(Some(n)) => write!(out, "LIST {n}"),
            Command::Uidl(None) => write!(out, "UIDL"),
            Command::Uidl(Some(n)) => write!(out, "UIDL {n}"),
            Command::Retr(n) => write!(out, "RETR {n}"),
            Command::Top { message, lines } => write!(out, "TOP {message} {lines}"),
            Command::Dele(n) => write!(out, "DELE {n}"),
            Command::Rset => write!(out, "RSET"),
            Command::Noop => write!(out, "NOOP"),
            Command::Quit => write!(out, "QUIT"),
        };
        out.extend_from_slice(b"\r\n");
    }
}

/// Whether a raw line is an AUTH command, which may be longer than other commands.
pub fn is_auth_line(line: &[u8]) -> bool {
    line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"AUTH ")
}

fn number(text: &str) -> Result<u64, ParseError> {
    if text.is_empty() || text.len() > MAX_DIGITS || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::InvalidNumber);
    }
    text.parse().map_err(|_| ParseError::InvalidNumber)
}

fn required_number<'a>(args: &mut impl Iterator<Item = &'a str>) -> Result<u64, ParseError> {
    let n = number(args.next().ok_or(ParseError::MissingArgument)?)?;
    no_more(args)?;
    Ok(n)
}

fn optional_number<'a>(
    args: &mut impl Iterator<Item = &'a str>,
) -> Result<Option<u64>, ParseError> {
    let n = args.next().map(number).transpose()?;
    no_more(args)?;
    Ok(n)
}

fn no_more<'a>(args: &mut impl Iterator<Item = &'a str>) -> Result<(), ParseError> {
    match args.next() {
        None => Ok(()),
        Some(_) => Err(ParseError::TooManyArguments),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(line: &str) -> Result<Command<'_>, ParseError> {
        parse(line.as_bytes())
    }

    #[test]
    fn accepts_every_command_in_any_case() {
        assert_eq!(p("user mbx-1"), Ok(Command::User("mbx-1")));
        assert_eq!(p("USER  a@b.example "), Ok(Command::User("a@b.example")));
        assert_eq!(
            p("Pass secret with spaces"),
            Ok(Command::Pass("secret with spaces"))
        );
        assert_eq!(
            p("auth plain"),
            Ok(Command::Auth {
                mechanism: "plain",
                initial_response: None
            })
        );
        assert_eq!(
            p("AUTH PLAIN AGEAYg=="),
            Ok(Command::Auth {
                mechanism: "PLAIN",
                initial_response: Some("AGEAYg==")
            })
        );
        assert_eq!(p("capa"), Ok(Command::Capa));
        assert_eq!(p("StLs"), Ok(Command::Stls));
        assert_eq!(p("STAT"), Ok(Command::Stat));
        assert_eq!(p("LIST"), Ok(Command::List(None)));
        assert_eq!(p("list 7"), Ok(Command::List(Some(7))));
        assert_eq!(p("UIDL"), Ok(Command::Uidl(None)));
        assert_eq!(p("uidl 0000000001"), Ok(Command::Uidl(Some(1))));
        assert_eq!(p("RETR 9999999999"), Ok(Command::Retr(9_999_999_999)));
        assert_eq!(
            p("top 1 0"),
            Ok(Command::Top {
                message: 1,
                lines: 0
            })
        );
        assert_eq!(p("DELE 3"), Ok(Command::Dele(3)));
        assert_eq!(p("rset"), Ok(Command::Rset));
        assert_eq!(p("noop"), Ok(Command::Noop));
        assert_eq!(p("QUIT"), Ok(Command::Quit));
        assert_eq!(p("STAT "), Ok(Command::Stat), "trailing space tolerated");
    }

    #[test]
    fn rejects_every_malformed_form() {
        use ParseError::*;
        let cases: &[(&[u8], ParseError)] = &[
            (b"", Empty),
            (b"STAT\t", InvalidCharacters),
            (b"ST\0AT", InvalidCharacters),
            (b"NOOP\x7f", InvalidCharacters),
            (b"USER \xff\xfe", InvalidCharacters),
            (b"STAT\r", InvalidCharacters),
            (b"XTND", UnknownCommand),
            (b"STATS", UnknownCommand),
            (b" STAT", UnknownCommand),
            (b"APOP mbx abc", UnknownCommand),
            (b"USER", MissingArgument),
            (b"USER   ", MissingArgument),
            (b"PASS", MissingArgument),
            (b"AUTH", MissingArgument),
            (b"AUTH PL@IN", InvalidMechanism),
            (b"AUTH ABCDEFGHIJKLMNOPQRSTU", InvalidMechanism),
            (b"AUTH PLAIN abc def", TooManyArguments),
            (b"STAT 1", TooManyArguments),
            (b"CAPA x", TooManyArguments),
            (b"STLS x", TooManyArguments),
            (b"RSET 1", TooManyArguments),
            (b"NOOP 1", TooManyArguments),
            (b"QUIT now", TooManyArguments),
            (b"LIST 1 2", TooManyArguments),
            (b"UIDL 1 2", TooManyArguments),
            (b"LIST -1", InvalidNumber),
            (b"LIST +1", InvalidNumber),
            (b"LIST x", InvalidNumber),
            (b"UIDL 1.0", InvalidNumber),
            (b"RETR", MissingArgument),
            (b"RETR 12345678901", InvalidNumber),
            (b"RETR 0x10", InvalidNumber),
            (b"RETR 1 2", TooManyArguments),
            (b"DELE", MissingArgument),
            (b"DELE one", InvalidNumber),
            (b"TOP", MissingArgument),
            (b"TOP 1", MissingArgument),
            (b"TOP 1 -5", InvalidNumber),
            (b"TOP a 5", InvalidNumber),
            (b"TOP 1 2 3", TooManyArguments),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse(line),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn auth_lines_are_recognised_raw() {
        assert!(is_auth_line(b"auth PLAIN xyz"));
        assert!(!is_auth_line(b"AUTH"));
        assert!(!is_auth_line(b"AUTHX"));
        assert!(!is_auth_line(b"USER x"));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&line);
            let _ = is_auth_line(&line);
        }

        /// Every command a client can send is written so that the server's parser reads
        /// back exactly that command.
        #[test]
        fn written_commands_parse_back_as_themselves(
            kind in 0u8..17,
            a in 0u64..=9_999_999_999,
            b in 0u64..=9_999_999_999,
            text in "[!-~]([ -~]{0,40}[!-~])?",
            word in "[!-~]{1,40}",
            mechanism in "[A-Z0-9_-]{1,20}",
        ) {
            let command = match kind {
                0 => Command::User(&text),
                1 => Command::Pass(&text),
                2 => Command::Auth { mechanism: &mechanism, initial_response: None },
                3 => Command::Auth { mechanism: &mechanism, initial_response: Some(&word) },
                4 => Command::Capa,
                5 => Command::Stls,
                6 => Command::Stat,
                7 => Command::List(None),
                8 => Command::List(Some(a)),
                9 => Command::Uidl(None),
                10 => Command::Uidl(Some(a)),
                11 => Command::Retr(a),
                12 => Command::Top { message: a, lines: b },
                13 => Command::Dele(a),
                14 => Command::Rset,
                15 => Command::Noop,
                _ => Command::Quit,
            };
            let mut line = Vec::new();
            command.write(&mut line);
            prop_assert!(line.ends_with(b"\r\n"));
            prop_assert_eq!(parse(&line[..line.len() - 2]), Ok(command));
        }

        /// And whatever the parser accepts, written again, parses to the same command.
        #[test]
        fn parsed_commands_write_back_to_themselves(line in "(?i)(user|pass|auth|list|uidl|retr|top|dele|stat|capa|stls|rset|noop|quit)( {1,2}[0-9A-Za-z+=_-]{1,12}){0,2}") {
            if let Ok(command) = parse(line.as_bytes()) {
                let mut written = Vec::new();
                command.write(&mut written);
                prop_assert_eq!(parse(&written[..written.len() - 2]), Ok(command));
            }
        }

        #[test]
        fn never_panics_on_command_like_text(line in "(?i)(user|pass|auth|list|uidl|retr|top|dele|stat|capa) {0,2}[0-9a-z +=-]{0,30}") {
            let _ = parse(line.as_bytes());
        }
    }
}
