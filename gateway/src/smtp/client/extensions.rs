//! The service extensions an EHLO reply advertises (RFC 5321 §4.1.1.1).

use crate::smtp::Reply;

use super::config::AuthMechanism;

/// One advertised extension: its keyword (upper-cased) and parameters as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    pub keyword: String,
    pub params: Vec<String>,
}

/// What the upstream offered in its latest EHLO reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// The first line of the EHLO reply (the upstream's name and greeting).
    pub greeting: String,
    pub list: Vec<Extension>,
}

impl Extensions {
    /// Reads a `250` EHLO reply: the first line greets, every other line is
    /// `keyword *(SP param)`. Lines that are not a keyword are skipped.
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut lines = reply.lines().iter();
        let greeting = lines.next().cloned().unwrap_or_default();
        let list = lines
            .filter_map(|line| {
                let mut words = line.split_ascii_whitespace();
                let keyword = words.next()?;
                if !keyword
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'=')
                {
                    return None;
                }
                // Some old servers write `AUTH=LOGIN PLAIN`: the same as `AUTH LOGIN PLAIN`.
                let (keyword, first) = match keyword.split_once('=') {
                    Some((keyword, first)) if !first.is_empty() => (keyword, Some(first)),
                    Some((keyword, _)) => (keyword, None),
                    None => (keyword, None),
                };
                Some(Extension {
                    keyword: keyword.to_ascii_uppercase(),
                    params: first.into_iter().chain(words).map(str::to_owned).collect(),
                })
            })
            .collect();
        Self { greeting, list }
    }

    /// Whether `keyword` (any case) was advertised.
    pub fn has(&self, keyword: &str) -> bool {
        self.params(keyword).is_some()
    }

    /// The parameters of every line advertising `keyword`, joined.
    pub fn params(&self, keyword: &str) -> Option<Vec<&str>> {
        let mut found = None;
        for extension in &self.list {
            if extension.keyword.eq_ignore_ascii_case(keyword) {
                found
                    .get_or_insert_with(Vec::new)
                    .extend(extension.params.iter().map(String::as_str));
            }
        }
        found
    }

    /// Whether `AUTH` lists `mechanism`.
    pub fn offers_auth(&self, mechanism: AuthMechanism) -> bool {
        self.params("AUTH").is_some_and(|mechanisms| {
            mechanisms
                .iter()
                .any(|m| m.eq_ignore_ascii_case(mechanism.name()))
        })
    }

    /// The `SIZE` limit, if one was given (`SIZE` alone or `SIZE 0` means no fixed limit).
    pub fn size_limit(&self) -> Option<u64> {
        self.params("SIZE")?
            .first()
            .and_then(|size| size.parse().ok())
            .filter(|&size| size > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ehlo(lines: &[&str]) -> Extensions {
        Extensions::from_ehlo(&Reply::plain(
            250,
            lines.iter().map(|line| (*line).to_owned()).collect(),
        ))
    }

    #[test]
    fn keywords_and_params() {
        let extensions = ehlo(&[
            "smtp.example hello",
            "SIZE 35882577",
            "8BITMIME",
            "auth login Plain",
            "AUTH=XOAUTH2",
            "STARTTLS",
        ]);
        assert_eq!(extensions.greeting, "smtp.example hello");
        assert!(extensions.has("starttls"));
        assert!(extensions.has("8BITMIME"));
        assert!(!extensions.has("SMTPUTF8"));
        assert_eq!(extensions.size_limit(), Some(35_882_577));
        assert!(extensions.offers_auth(AuthMechanism::Plain));
        assert!(extensions.offers_auth(AuthMechanism::Login));
        assert_eq!(
            extensions.params("AUTH"),
            Some(vec!["login", "Plain", "XOAUTH2"])
        );
    }

    #[test]
    fn the_greeting_line_is_not_an_extension() {
        let extensions = ehlo(&["STARTTLS"]);
        assert!(!extensions.has("STARTTLS"));
    }
}
