//! Numbers, sizes and times as the pages show them, in the page's language.

use crate::config::Language;

/// Bytes in binary units (`1.5 MiB`; German with a decimal comma).
pub fn size(bytes: u64, language: Language) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let number = if value < 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    };
    let number = match language {
        Language::De => number.replace('.', ","),
        Language::En => number,
    };
    format!("{number} {}", UNITS[unit])
}

/// Whole numbers with thousands separators (`12,345`; German `12.345`).
pub fn count(n: u64, language: Language) -> String {
    let separator = match language {
        Language::En => ',',
        Language::De => '.',
    };
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(separator);
        }
        out.push(digit);
    }
    out
}

/// A Unix-milliseconds time as `2026-12-04 17:51 UTC`: the gateway serves administrators
/// in any time zone, and UTC is what its logs use.
pub fn timestamp(unix_ms: u64) -> String {
    let nanos = i128::from(unix_ms) * 1_000_000;
    let Ok(at) = time::OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
        return String::new();
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}

/// A duration in seconds as days, hours and minutes (`3 d 4 h 5 min`).
pub fn duration(seconds: u64) -> String {
    let days = seconds / 86_400;
    let hours = seconds % 86_400 / 3600;
    let minutes = seconds % 3600 / 60;
    if days > 0 {
        format!("{days} d {hours} h {minutes} min")
    } else if hours > 0 {
        format!("{hours} h {minutes} min")
    } else {
        format!("{minutes} min")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_units_and_the_languages_decimal_mark() {
        assert_eq!(size(0, Language::En), "0 B");
        assert_eq!(size(1023, Language::En), "1023 B");
        assert_eq!(size(1536, Language::En), "1.5 KiB");
        assert_eq!(size(1536, Language::De), "1,5 KiB");
        assert_eq!(size(200 * 1024 * 1024, Language::En), "200 MiB");
        assert_eq!(size(u64::MAX, Language::En), "16384 PiB");
    }

    #[test]
    fn counts_group_thousands_per_language() {
        assert_eq!(count(0, Language::En), "0");
        assert_eq!(count(999, Language::En), "999");
        assert_eq!(count(1234567, Language::En), "1,234,567");
        assert_eq!(count(1234567, Language::De), "1.234.567");
    }

    #[test]
    fn timestamps_and_durations_read_plainly() {
        assert_eq!(timestamp(0), "1970-01-01 00:00 UTC");
        assert_eq!(timestamp(1_796_406_702_000), "2026-12-04 17:51 UTC");
        assert_eq!(duration(59), "0 min");
        assert_eq!(duration(3 * 86_400 + 4 * 3600 + 5 * 60), "3 d 4 h 5 min");
    }
}
