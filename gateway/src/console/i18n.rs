//! The console's texts: Fluent catalogues compiled into the binary, one per language
//! (`locales/<lang>/console.ftl`). Templates call `t("key")` or `t("key", name=value)`
//! (see [`super::render`]); code calls [`text`] and [`text_with`].
//!
//! A key missing in one language would silently fall back to English: the unit test below
//! fails instead, as it does for a key a template uses that no catalogue defines.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use fluent_templates::fluent_bundle::FluentValue;
use fluent_templates::{LanguageIdentifier, Loader as _};

use crate::config::Language;

fluent_templates::static_loader! {
    static LOCALES = {
        locales: "./src/console/locales",
        fallback_language: "en",
        // No Unicode isolation marks around arguments: the pages are plain LTR HTML and
        // the marks would end up in copied text (addresses, passwords).
        customise: |bundle| bundle.set_use_isolating(false),
    };
}

fn langid(language: Language) -> LanguageIdentifier {
    // Both are valid language tags; the fallback only keeps this free of panics.
    language.as_str().parse().unwrap_or_default()
}

/// The text of `key` in `language`.
pub fn text(language: Language, key: &str) -> String {
    LOCALES.lookup(&langid(language), key)
}

/// The text of `key` in `language` with named arguments (`{ $name }` in the catalogue).
pub fn text_with(language: Language, key: &str, args: &[(&str, FluentValue<'static>)]) -> String {
    let args: HashMap<Cow<'static, str>, FluentValue<'static>> = args
        .iter()
        .map(|(name, value)| (Cow::Owned((*name).to_owned()), value.clone()))
        .collect();
    LOCALES.lookup_with_args(&langid(language), key, &args)
}

/// Every catalogue's source, by language (the same files `LOCALES` compiles).
pub(super) const CATALOGUES: &[(Language, &str)] = &[
    (
        Language::En,
        concat!(
            include_str!("locales/en/console.ftl"),
            "\n",
            include_str!("locales/en/pages.ftl")
        ),
    ),
    (
        Language::De,
        concat!(
            include_str!("locales/de/console.ftl"),
            "\n",
            include_str!("locales/de/pages.ftl")
        ),
    ),
];

/// The message ids a catalogue defines (`key = ...` at the start of a line; comments,
/// attributes and continuation lines do not start with a letter).
pub(super) fn keys(source: &str) -> BTreeSet<String> {
    source
        .lines()
        .filter(|line| line.starts_with(|c: char| c.is_ascii_alphabetic()))
        .filter_map(|line| line.split_once('='))
        .map(|(key, _)| key.trim().to_owned())
        .collect()
}

/// Whether `language`'s catalogue defines `key` (without falling back to English).
pub fn has_key(language: Language, key: &str) -> bool {
    static KEYS: OnceLock<Vec<(Language, BTreeSet<String>)>> = OnceLock::new();
    KEYS.get_or_init(|| {
        CATALOGUES
            .iter()
            .map(|(language, source)| (*language, keys(source)))
            .collect()
    })
    .iter()
    .any(|(l, keys)| *l == language && keys.contains(key))
}

/// The language a visitor's browser asks for in `Accept-Language`: the supported one with
/// the highest weight (`q`), the earlier one on a tie; `default` when none is supported.
pub fn from_accept_language(header: Option<&str>, default: Language) -> Language {
    let Some(header) = header else {
        return default;
    };
    let mut best: Option<(u16, Language)> = None;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim();
        let primary = tag.split(['-', '_']).next().unwrap_or("");
        let Ok(language) = primary.parse::<Language>() else {
            continue;
        };
        let mut weight = 1000u16;
        for parameter in parts {
            if let Some(q) = parameter.trim().strip_prefix("q=") {
                weight = parse_q(q).unwrap_or(0);
            }
        }
        if weight > 0 && best.is_none_or(|(w, _)| weight > w) {
            best = Some((weight, language));
        }
    }
    best.map_or(default, |(_, language)| language)
}

/// A quality value in thousandths; `None` when malformed.
fn parse_q(q: &str) -> Option<u16> {
    let value: f32 = q.trim().parse().ok()?;
    (0.0..=1.0)
        .contains(&value)
        .then(|| (value * 1000.0).round() as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_parses_and_every_language_has_every_key() {
        let all: BTreeSet<String> = CATALOGUES.iter().flat_map(|(_, s)| keys(s)).collect();
        assert!(all.len() > 10, "{all:?}");
        for (language, source) in CATALOGUES {
            if let Err((_, errors)) =
                fluent_templates::fluent_bundle::FluentResource::try_new(source.to_string())
            {
                panic!("{language}: the catalogue does not parse: {errors:?}");
            }
            let own = keys(source);
            let missing: Vec<&String> = all.difference(&own).collect();
            assert!(
                missing.is_empty(),
                "the {language} catalogue lacks {missing:?}"
            );
            for key in &all {
                assert!(
                    has_key(*language, key),
                    "{language}: {key} does not resolve"
                );
            }
        }
    }

    #[test]
    fn german_texts_are_german() {
        assert_eq!(text(Language::En, "sign-out"), "Sign out");
        assert_eq!(text(Language::De, "sign-out"), "Abmelden");
        assert!(text(Language::De, "settings-language").contains('S'));
    }

    #[test]
    fn arguments_are_filled_in_without_isolation_marks() {
        let text = text_with(
            Language::En,
            "login-throttled",
            &[("seconds", FluentValue::from(12))],
        );
        assert!(text.contains("12"), "{text}");
        assert!(!text.contains('\u{2068}'), "{text:?}");
    }

    #[test]
    fn accept_language_picks_the_supported_language_with_the_highest_weight() {
        let en = Language::En;
        let de = Language::De;
        let cases: &[(Option<&str>, Language, Language)] = &[
            (None, de, de),
            (Some(""), en, en),
            (Some("de-DE,de;q=0.9,en;q=0.8"), en, de),
            (Some("en-US,en;q=0.9,de;q=0.8"), de, en),
            (Some("fr-FR,fr;q=0.9,de;q=0.5,en;q=0.4"), en, de),
            (Some("en;q=0.2, de;q=0.7"), en, de),
            (Some("fr, it"), de, de),
            (Some("de;q=0, en;q=0.1"), de, en),
            (Some("de;q=bogus"), en, en),
            (Some("DE-at"), en, de),
            (Some("*"), de, de),
        ];
        for (header, default, expected) in cases {
            assert_eq!(
                from_accept_language(*header, *default),
                *expected,
                "{header:?}"
            );
        }
    }
}
