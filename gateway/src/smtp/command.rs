//! Typed SMTP commands and their parser.
//!
//! The parser sees one command line without its CRLF. It is strict where strictness protects
//! the archive (control characters, malformed paths, unknown parameters, BDAT sizes) and
//! lenient where real clients differ harmlessly (verb letter case, a space after `FROM:`,
//! trailing white space).

use super::address::{self, AddressError, ForwardPath, ReversePath};

/// A parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Helo {
        domain: String,
    },
    Ehlo {
        domain: String,
    },
    Mail {
        from: ReversePath,
        params: MailParams,
    },
    Rcpt {
        to: ForwardPath,
    },
    Data,
    /// RFC 3030 CHUNKING: `BDAT <size> [LAST]`; `size` octets of message follow the line.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    /// AUTH mechanism [initial-response] (RFC 4954 §4); the mechanism upper-cased.
    Auth {
        mechanism: String,
        initial_response: Option<String>,
    },
}

/// ESMTP parameters of `MAIL FROM`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailParams {
    /// RFC 1870 `SIZE=n`, the client's estimate of the message size.
    pub size: Option<u64>,
    /// RFC 6152 `BODY=`.
    pub body: Option<BodyType>,
    /// RFC 6531 `SMTPUTF8`.
    pub smtputf8: bool,
}

/// The parameters as they go on a `MAIL FROM` line (`SIZE=n BODY=8BITMIME SMTPUTF8`),
/// for passing on to an upstream.
impl std::fmt::Display for MailParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut words = Vec::new();
        if let Some(size) = self.size {
            words.push(format!("SIZE={size}"));
        }
        match self.body {
            Some(BodyType::SevenBit) => words.push("BODY=7BIT".to_owned()),
            Some(BodyType::EightBitMime) => words.push("BODY=8BITMIME".to_owned()),
            None => {}
        }
        if self.smtputf8 {
            words.push("SMTPUTF8".to_owned());
        }
        f.write_str(&words.join(" "))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyType {
    SevenBit,
    EightBitMime,
}

/// Why a command line was not accepted. Replies are chosen in `error_map`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command not recognized")]
    Unrecognized,
    #[error("NUL or bare CR in command line")]
    ControlCharacter,
    #[error("command line is not valid UTF-8")]
    InvalidUtf8,
    /// Wrong shape; the text is the usage to show.
    #[error("syntax error, usage: {0}")]
    Syntax(&'static str),
    /// Right shape, unacceptable argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    #[error("bad sender address: {0}")]
    BadSender(AddressError),
    #[error("bad recipient address: {0}")]
    BadRecipient(AddressError),
    #[error("unsupported parameter {0}")]
    UnsupportedParameter(String),
    /// BDAT whose size cannot be read: the end of its chunk is unknown, so the stream cannot
    /// be resynchronised and the session must close.
    #[error("malformed BDAT")]
    MalformedBdat,
}

/// BDAT sizes longer than this many digits are refused outright (u64 has 20).
const MAX_SIZE_DIGITS: usize = 20;

impl Command {
    /// Parses one command line (without CRLF). `smtputf8` tells whether the current
    /// transaction's MAIL carried SMTPUTF8, which permits UTF-8 in RCPT addresses.
    pub fn parse(line: &[u8], smtputf8: bool) -> Result<Command, CommandError> {
        if line
            .iter()
            .any(|&byte| byte == 0 || byte == b'\r' || byte == b'\n')
        {
            return Err(CommandError::ControlCharacter);
        }
        let line = std::str::from_utf8(line).map_err(|_| CommandError::InvalidUtf8)?;
        let (verb, args) = match line.split_once(' ') {
            Some((verb, args)) => (verb, args.trim_matches(' ')),
            None => (line, ""),
        };
        if verb.len() > 8 {
            return Err(CommandError::Unrecognized);
        }
        match verb.to_ascii_uppercase().as_str() {
            "HELO" => Ok(Command::Helo {
                domain: parse_helo_domain(args, "HELO <domain>")?,
            }),
            "EHLO" => Ok(Command::Ehlo {
                domain: parse_helo_domain(args, "EHLO <domain>")?,
            }),
            "MAIL" => parse_mail(args),
            "RCPT" => parse_rcpt(args, smtputf8),
            "DATA" => without_arguments(args, Command::Data, "DATA"),
            "BDAT" => parse_bdat(args),
            "RSET" => without_arguments(args, Command::Rset, "RSET"),
            // RFC 5321 §4.1.1.9 and §4.1.1.8: NOOP and HELP may carry a string.
            "NOOP" => Ok(Command::Noop),
            "HELP" => Ok(Command::Help),
            "QUIT" => without_arguments(args, Command::Quit, "QUIT"),
            "VRFY" if args.is_empty() => Err(CommandError::Syntax("VRFY <string>")),
            "VRFY" => Ok(Command::Vrfy),
            "EXPN" if args.is_empty() => Err(CommandError::Syntax("EXPN <string>")),
            "EXPN" => Ok(Command::Expn),
            "STARTTLS" => without_arguments(args, Command::StartTls, "STARTTLS"),
            "AUTH" => parse_auth(args),
            _ => Err(CommandError::Unrecognized),
        }
    }
}

impl Command {
    /// Appends the command line, CRLF included, as a client sends it: [`Command::parse`]
    /// reads it back as the same command. VRFY and EXPN keep no argument when parsed, so
    /// they are written with `postmaster` as theirs.
    pub fn write(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        // Writing to a Vec cannot fail.
        let _ = match self {
            Command::Helo { domain } => write!(out, "HELO {domain}"),
            Command::Ehlo { domain } => write!(out, "EHLO {domain}"),
            Command::Mail { from, params } => {
                let _ = write!(out, "MAIL FROM:<{from}>");
                let params = params.to_string();
                if params.is_empty() {
                    Ok(())
                } else {
                    write!(out, " {params}")
                }
            }
            Command::Rcpt { to } => write!(out, "RCPT TO:<{to}>"),
            Command::Data => write!(out, "DATA"),
            Command::Bdat { size, last: false } => write!(out, "BDAT {size}"),
            Command::Bdat { size, last: true } => write!(out, "BDAT {size} LAST"),
            Command::Rset => write!(out, "RSET"),
            Command::Noop => write!(out, "NOOP"),
            Command::Quit => write!(out, "QUIT"),
            Command::Vrfy => write!(out, "VRFY postmaster"),
            Command::Expn => write!(out, "EXPN postmaster"),
            Command::Help => write!(out, "HELP"),
            Command::StartTls => write!(out, "STARTTLS"),
            Command::Auth {
                mechanism,
                initial_response,
            } => {
                crate::wire::sasl::write_auth(out, mechanism, initial_response.as_deref());
                Ok(())
            }
        };
        out.extend_from_slice(b"\r\n");
    }
}

fn parse_auth(args: &str) -> Result<Command, CommandError> {
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    let usage = "AUTH <mechanism> [<initial-response>]";
    let Some(mechanism) = words.next() else {
        return Err(CommandError::Syntax(usage));
    };
    let initial_response = words.next();
    if !crate::wire::sasl::is_mechanism_name(mechanism) || words.next().is_some() {
        return Err(CommandError::Syntax(usage));
    }
    // Copied only once the command is known good; the session wraps the copy in `Zeroizing`.
    Ok(Command::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial_response: initial_response.map(str::to_owned),
    })
}

fn without_arguments(
    args: &str,
    command: Command,
    usage: &'static str,
) -> Result<Command, CommandError> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(CommandError::Syntax(usage))
    }
}

/// One token that is a domain name or an address literal. Underscores are tolerated because
/// real hosts use them in names; anything that could break the Received header is not.
fn parse_helo_domain(args: &str, usage: &'static str) -> Result<String, CommandError> {
    if args.is_empty() || args.contains(' ') {
        return Err(CommandError::Syntax(usage));
    }
    let valid = if let Some(literal) = args.strip_prefix('[') {
        literal.strip_suffix(']').is_some_and(|inner| {
            !inner.is_empty()
                && inner
                    .bytes()
                    .all(|b| matches!(b, b'!'..=b'Z' | b'^'..=b'~'))
        })
    } else {
        args.len() <= address::MAX_DOMAIN
            && args.split('.').enumerate().all(|(index, label)| {
                // A trailing dot (root label) is tolerated: some clients send FQDNs so.
                (label.is_empty() && index > 0 && args.ends_with('.'))
                    || (!label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            })
            && !args.starts_with('.')
            && !args.ends_with("..")
    };
    if valid {
        Ok(args.to_owned())
    } else {
        Err(CommandError::InvalidArgument(
            "not a domain name or address literal",
        ))
    }
}

/// Strips a case-insensitive keyword such as `FROM:`, then the spaces some clients put after
/// the colon.
fn strip_keyword<'a>(args: &'a str, keyword: &str) -> Option<&'a str> {
    let head = args.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| args[keyword.len()..].trim_start_matches(' '))
}

fn parse_mail(args: &str) -> Result<Command, CommandError> {
    const USAGE: &str = "MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8]";
    let path = strip_keyword(args, "FROM:").ok_or(CommandError::Syntax(USAGE))?;
    // Syntax first with UTF-8 allowed: whether it is permitted depends on SMTPUTF8, which
    // comes after the path.
    let (from, rest) = address::parse_reverse_path(path, true).map_err(CommandError::BadSender)?;
    let params = parse_mail_params(rest)?;
    if !params.smtputf8 && !from.is_ascii() {
        return Err(CommandError::BadSender(AddressError::Utf8NotPermitted));
    }
    Ok(Command::Mail { from, params })
}

fn parse_mail_params(rest: &str) -> Result<MailParams, CommandError> {
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(CommandError::BadSender(AddressError::Syntax));
    }
    let mut params = MailParams::default();
    for param in rest.split(' ').filter(|param| !param.is_empty()) {
        let (keyword, value) = match param.split_once('=') {
            Some((keyword, value)) => (keyword, Some(value)),
            None => (param, None),
        };
        match (keyword.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(value)) if params.size.is_none() => {
                if value.is_empty()
                    || value.len() > MAX_SIZE_DIGITS
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(CommandError::InvalidArgument("SIZE needs a number"));
                }
                // 20 digits may exceed u64; such a size is over any limit anyway.
                params.size = Some(value.parse().unwrap_or(u64::MAX));
            }
            ("BODY", Some(value)) if params.body.is_none() => {
                params.body = Some(if value.eq_ignore_ascii_case("7BIT") {
                    BodyType::SevenBit
                } else if value.eq_ignore_ascii_case("8BITMIME") {
                    BodyType::EightBitMime
                } else {
                    return Err(CommandError::UnsupportedParameter(param.to_owned()));
                });
            }
            ("SMTPUTF8", None) if !params.smtputf8 => params.smtputf8 = true,
            ("SIZE" | "BODY" | "SMTPUTF8", _) => {
                return Err(CommandError::InvalidArgument(
                    "repeated or malformed parameter",
                ));
            }
            _ => return Err(CommandError::UnsupportedParameter(keyword.to_owned())),
        }
    }
    Ok(params)
}

fn parse_rcpt(args: &str, smtputf8: bool) -> Result<Command, CommandError> {
    let path = strip_keyword(args, "TO:").ok_or(CommandError::Syntax("RCPT TO:<address>"))?;
    let (to, rest) =
        address::parse_forward_path(path, smtputf8).map_err(CommandError::BadRecipient)?;
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(CommandError::BadRecipient(AddressError::Syntax));
    }
    // No RCPT extension (DSN's NOTIFY/ORCPT) is advertised, so any parameter is unknown.
    if let Some(param) = rest.split(' ').find(|param| !param.is_empty()) {
        let keyword = param.split_once('=').map_or(param, |(keyword, _)| keyword);
        return Err(CommandError::UnsupportedParameter(keyword.to_owned()));
    }
    Ok(Command::Rcpt { to })
}

fn parse_bdat(args: &str) -> Result<Command, CommandError> {
    let mut words = args.split(' ').filter(|word| !word.is_empty());
    let size = words.next().ok_or(CommandError::MalformedBdat)?;
    if size.len() > MAX_SIZE_DIGITS || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::MalformedBdat);
    }
    let size: u64 = size.parse().map_err(|_| CommandError::MalformedBdat)?;
    let last = match words.next() {
        None => false,
        Some(word) if word.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(CommandError::MalformedBdat),
    };
    if words.next().is_some() {
        return Err(CommandError::MalformedBdat);
    }
    Ok(Command::Bdat { size, last })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::{Domain, Mailbox};
    use proptest::prelude::*;

    fn parse(line: &str) -> Result<Command, CommandError> {
        Command::parse(line.as_bytes(), false)
    }

    fn mailbox(local: &str, domain: &str) -> Mailbox {
        Mailbox {
            local_part: local.into(),
            domain: Domain::Name(domain.into()),
        }
    }

    #[test]
    fn simple_commands_in_any_case() {
        assert_eq!(parse("DATA"), Ok(Command::Data));
        assert_eq!(parse("data"), Ok(Command::Data));
        assert_eq!(parse("RSET"), Ok(Command::Rset));
        assert_eq!(parse("NOOP"), Ok(Command::Noop));
        assert_eq!(parse("noop anything"), Ok(Command::Noop));
        assert_eq!(parse("QUIT"), Ok(Command::Quit));
        assert_eq!(parse("QUIT "), Ok(Command::Quit));
        assert_eq!(parse("HELP"), Ok(Command::Help));
        assert_eq!(parse("HELP MAIL"), Ok(Command::Help));
        assert_eq!(parse("VRFY someone"), Ok(Command::Vrfy));
        assert_eq!(parse("EXPN list"), Ok(Command::Expn));
        assert_eq!(parse("StartTLS"), Ok(Command::StartTls));
        assert_eq!(
            parse("AUTH plain AGZvbwBiYXI="),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial_response: Some("AGZvbwBiYXI=".into())
            })
        );
        assert_eq!(
            parse("AUTH LOGIN"),
            Ok(Command::Auth {
                mechanism: "LOGIN".into(),
                initial_response: None
            })
        );
        assert!(parse("AUTH").is_err());
        assert!(parse("AUTH PLAIN a b").is_err());
        assert!(parse("AUTH PL@IN").is_err());
    }

    #[test]
    fn helo_and_ehlo() {
        assert_eq!(
            parse("EHLO mx.example.com"),
            Ok(Command::Ehlo {
                domain: "mx.example.com".into()
            })
        );
        assert_eq!(
            parse("helo [192.0.2.1]"),
            Ok(Command::Helo {
                domain: "[192.0.2.1]".into()
            })
        );
        assert_eq!(
            parse("EHLO [IPv6:2001:db8::1]"),
            Ok(Command::Ehlo {
                domain: "[IPv6:2001:db8::1]".into()
            })
        );
        assert_eq!(
            parse("EHLO my_host"),
            Ok(Command::Ehlo {
                domain: "my_host".into()
            })
        );
        assert_eq!(
            parse("EHLO mx.example.com."),
            Ok(Command::Ehlo {
                domain: "mx.example.com.".into()
            })
        );
    }

    #[test]
    fn mail_with_parameters() {
        assert_eq!(
            parse("MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8"),
            Ok(Command::Mail {
                from: ReversePath::Mailbox(mailbox("a", "b.example")),
                params: MailParams {
                    size: Some(1000),
                    body: Some(BodyType::EightBitMime),
                    smtputf8: true
                },
            })
        );
        assert_eq!(
            parse("mail from: <>"),
            Ok(Command::Mail {
                from: ReversePath::Null,
                params: MailParams::default()
            })
        );
        assert_eq!(
            parse("MAIL FROM:<> body=7bit"),
            Ok(Command::Mail {
                from: ReversePath::Null,
                params: MailParams {
                    body: Some(BodyType::SevenBit),
                    ..MailParams::default()
                }
            })
        );
        let Ok(Command::Mail { params, .. }) = parse("MAIL FROM:<> SIZE=99999999999999999999")
        else {
            panic!("huge SIZE must parse");
        };
        assert_eq!(params.size, Some(u64::MAX));
    }

    #[test]
    fn utf8_sender_needs_the_smtputf8_parameter() {
        assert_eq!(
            parse("MAIL FROM:<jøran@example.com>"),
            Err(CommandError::BadSender(AddressError::Utf8NotPermitted))
        );
        assert!(parse("MAIL FROM:<jøran@example.com> SMTPUTF8").is_ok());
    }

    #[test]
    fn utf8_recipient_needs_smtputf8_in_the_transaction() {
        let line = "RCPT TO:<jøran@example.com>".as_bytes();
        assert_eq!(
            Command::parse(line, false),
            Err(CommandError::BadRecipient(AddressError::Utf8NotPermitted))
        );
        assert_eq!(
            Command::parse(line, true),
            Ok(Command::Rcpt {
                to: ForwardPath::Mailbox(mailbox("jøran", "example.com"))
            })
        );
    }

    #[test]
    fn rcpt_forms() {
        assert_eq!(
            parse("RCPT TO:<mbx-1@d>"),
            Ok(Command::Rcpt {
                to: ForwardPath::Mailbox(mailbox("mbx-1", "d"))
            })
        );
        assert_eq!(
            parse("rcpt to:<postmaster>"),
            Ok(Command::Rcpt {
                to: ForwardPath::Postmaster
            })
        );
    }

    #[test]
    fn bdat_forms() {
        assert_eq!(
            parse("BDAT 0"),
            Ok(Command::Bdat {
                size: 0,
                last: false
            })
        );
        assert_eq!(
            parse("BDAT 512 LAST"),
            Ok(Command::Bdat {
                size: 512,
                last: true
            })
        );
        assert_eq!(
            parse("bdat 12 last"),
            Ok(Command::Bdat {
                size: 12,
                last: true
            })
        );
    }

    #[test]
    fn rejected_forms() {
        use CommandError::*;
        let cases: &[(&[u8], CommandError)] = &[
            (b"", Unrecognized),
            (b" DATA", Unrecognized),
            (b"FOO", Unrecognized),
            (b"TURN", Unrecognized),
            (b"MAILFROM:<>", Unrecognized),
            (b"DATA\0", ControlCharacter),
            (b"NOOP \r", ControlCharacter),
            (b"NOOP \n", ControlCharacter),
            (b"NOOP \xff", InvalidUtf8),
            (b"MAIL FROM:<\xc3>", InvalidUtf8),
            (b"DATA now", Syntax("DATA")),
            (b"RSET x", Syntax("RSET")),
            (b"QUIT now", Syntax("QUIT")),
            (b"STARTTLS x", Syntax("STARTTLS")),
            (b"VRFY", Syntax("VRFY <string>")),
            (b"EXPN", Syntax("EXPN <string>")),
            (b"HELO", Syntax("HELO <domain>")),
            (b"EHLO", Syntax("EHLO <domain>")),
            (b"EHLO a b", Syntax("EHLO <domain>")),
            (
                b"EHLO a;b",
                InvalidArgument("not a domain name or address literal"),
            ),
            (
                b"EHLO a(b)",
                InvalidArgument("not a domain name or address literal"),
            ),
            (
                b"EHLO .a",
                InvalidArgument("not a domain name or address literal"),
            ),
            (
                b"EHLO a..b",
                InvalidArgument("not a domain name or address literal"),
            ),
            (
                b"EHLO []",
                InvalidArgument("not a domain name or address literal"),
            ),
            (
                b"EHLO [1.2.3.4",
                InvalidArgument("not a domain name or address literal"),
            ),
            (
                b"MAIL",
                Syntax("MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8]"),
            ),
            (
                b"MAIL TO:<>",
                Syntax("MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8]"),
            ),
            (b"MAIL FROM:a@b", BadSender(AddressError::Syntax)),
            (b"MAIL FROM:<a@b>x", BadSender(AddressError::Syntax)),
            (
                b"MAIL FROM:<> SIZE=",
                InvalidArgument("SIZE needs a number"),
            ),
            (
                b"MAIL FROM:<> SIZE=-1",
                InvalidArgument("SIZE needs a number"),
            ),
            (
                b"MAIL FROM:<> SIZE=1x",
                InvalidArgument("SIZE needs a number"),
            ),
            (
                b"MAIL FROM:<> SIZE=123456789012345678901",
                InvalidArgument("SIZE needs a number"),
            ),
            (
                b"MAIL FROM:<> SIZE=1 SIZE=2",
                InvalidArgument("repeated or malformed parameter"),
            ),
            (
                b"MAIL FROM:<> SIZE",
                InvalidArgument("repeated or malformed parameter"),
            ),
            (
                b"MAIL FROM:<> SMTPUTF8=yes",
                InvalidArgument("repeated or malformed parameter"),
            ),
            (
                b"MAIL FROM:<> BODY=BINARYMIME",
                UnsupportedParameter("BODY=BINARYMIME".into()),
            ),
            (b"MAIL FROM:<> RET=HDRS", UnsupportedParameter("RET".into())),
            (b"MAIL FROM:<> AUTH=<>", UnsupportedParameter("AUTH".into())),
            (b"RCPT", Syntax("RCPT TO:<address>")),
            (b"RCPT FROM:<a@b>", Syntax("RCPT TO:<address>")),
            (b"RCPT TO:<>", BadRecipient(AddressError::Syntax)),
            (b"RCPT TO:<a@b>x", BadRecipient(AddressError::Syntax)),
            (
                b"RCPT TO:<a@b> NOTIFY=NEVER",
                UnsupportedParameter("NOTIFY".into()),
            ),
            (b"BDAT", MalformedBdat),
            (b"BDAT x", MalformedBdat),
            (b"BDAT -1", MalformedBdat),
            (b"BDAT 1 FIRST", MalformedBdat),
            (b"BDAT 1 LAST x", MalformedBdat),
            (b"BDAT 99999999999999999999", MalformedBdat),
            (b"BDAT 123456789012345678901", MalformedBdat),
        ];
        for (line, expected) in cases {
            assert_eq!(
                Command::parse(line, false).as_ref(),
                Err(expected),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(line in proptest::collection::vec(any::<u8>(), 0..300), utf8 in any::<bool>()) {
            let _ = Command::parse(&line, utf8);
        }

        /// Whatever the parser accepts, written again, parses to the same command: the
        /// command type both reads and writes the protocol.
        #[test]
        fn parsed_commands_write_back_to_themselves(
            line in "(HELO |EHLO |MAIL FROM:|RCPT TO:|BDAT |AUTH |DATA|RSET|NOOP|QUIT|HELP|STARTTLS|VRFY |EXPN )[<>@\\[\\]\"\\\\:,. a-zA-Z0-9=_ø+-]{0,60}",
            utf8 in any::<bool>(),
        ) {
            if let Ok(command) = Command::parse(line.as_bytes(), utf8) {
                let mut written = Vec::new();
                command.write(&mut written);
                prop_assert!(written.ends_with(b"\r\n"));
                let again = Command::parse(&written[..written.len() - 2], utf8);
                prop_assert_eq!(again, Ok(command), "{:?}", String::from_utf8_lossy(&written));
            }
        }

        /// Written commands from well-formed parts parse back as themselves.
        #[test]
        fn written_envelopes_parse_back(
            local in "[a-z0-9.+_-]{1,20}|\"[a-z ,@]{1,10}\"",
            domain in "[a-z0-9]{1,10}\\.[a-z]{2,5}",
            size in proptest::option::of(0u64..1_000_000_000),
            body in 0u8..3,
            last in any::<bool>(),
        ) {
            let line = format!("MAIL FROM:<{local}@{domain}>");
            let Ok(Command::Mail { from, .. }) = Command::parse(line.as_bytes(), false) else {
                return Ok(());
            };
            let params = MailParams {
                size,
                body: [None, Some(BodyType::SevenBit), Some(BodyType::EightBitMime)][usize::from(body)],
                smtputf8: false,
            };
            let rcpt = format!("RCPT TO:<{local}@{domain}>");
            let Ok(rcpt) = Command::parse(rcpt.as_bytes(), false) else {
                return Ok(());
            };
            for command in [Command::Mail { from, params }, rcpt, Command::Bdat { size: size.unwrap_or(0), last }] {
                let mut written = Vec::new();
                command.write(&mut written);
                prop_assert_eq!(Command::parse(&written[..written.len() - 2], false), Ok(command));
            }
        }

        #[test]
        fn never_panics_on_command_like_text(line in "(MAIL FROM:|RCPT TO:|BDAT |EHLO )?[<>@\\[\\]\"\\\\:,. a-zA-Z0-9=ø-]{0,80}") {
            let _ = Command::parse(line.as_bytes(), true);
        }
    }
}
