//! Reading the Prometheus text in tests, here and in [`crate::metrics_endpoint`].

/// The sample lines (not comments) of `text`, as `name{labels} value`.
pub(crate) fn samples(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

pub(crate) fn value(text: &str, series: &str) -> Option<f64> {
    samples(text).into_iter().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}
