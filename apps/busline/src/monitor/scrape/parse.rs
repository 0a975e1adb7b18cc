//! The Prometheus text exposition format (0.0.4, and the OpenMetrics text
//! that prometheus-client and most exporters also serve).
//!
//! Written here rather than taken from crates.io: `prometheus-parse` (the
//! one published parser of the text format) splits labels at every `,` and
//! `=` (a label value holding one is cut) and skips lines it cannot read
//! without saying so; the monitor must say what was wrong with a scrape.
//!
//! ```text
//! # HELP http_requests_total Requests served.
//! # TYPE http_requests_total counter
//! http_requests_total{method="get",path="/a \"b\""} 1027 1395066363000
//! ```
//!
//! A line is a comment (`# HELP`, `# TYPE`, anything else after `#` is
//! ignored), empty, or a sample: a name, optional labels in braces (values
//! in double quotes with `\\`, `\"` and `\n` escapes; a trailing comma is
//! allowed), a value (a float, `NaN`, `+Inf`, `-Inf`) and an optional
//! integer timestamp. Any other line fails the whole scrape with its line
//! number, as it does in Prometheus.

use std::collections::HashMap;

use crate::monitor::sample::Labels;

/// A metric family's type, from its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram` (and OpenMetrics `gaugehistogram`).
    Histogram,
    /// `summary`.
    Summary,
    /// `untyped`, `unknown`, `info`, `stateset`, or no `# TYPE` line.
    Untyped,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Its name as written (`foo_bucket`, `foo_total`).
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// Its value.
    pub value: f64,
}

/// The lines of one metric family, in the order written.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family's name (`foo` for `foo_bucket`, `foo_count`, …).
    pub name: String,
    /// Its type.
    pub kind: Kind,
    /// Its sample lines.
    pub lines: Vec<Line>,
}

/// Why a scrape's text was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}: {text:?}")]
pub struct ParseError {
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
    /// The line (cut at 120 bytes).
    pub text: String,
}

/// Suffixes of a family's sample names.
const SUFFIXES: [&str; 8] = [
    "_total", "_created", "_bucket", "_count", "_sum", "_gcount", "_gsum", "_info",
];

/// Parses a whole exposition.
pub fn parse(text: &str) -> Result<Vec<Family>, ParseError> {
    let mut types: HashMap<String, Kind> = HashMap::new();
    let mut families: Vec<Family> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let fail = |reason| ParseError {
            line: i + 1,
            reason,
            text: cut(raw),
        };
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE") {
                let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                    return Err(fail("a # TYPE line without a name and a type"));
                };
                types.insert(
                    name.to_owned(),
                    kind_of(kind).ok_or_else(|| fail("an unknown type"))?,
                );
            }
            continue;
        }
        let sample = sample(line).map_err(fail)?;
        let family = family_of(&sample.name, &types);
        let at = *index.entry(family.clone()).or_insert_with(|| {
            families.push(Family {
                kind: types.get(&family).copied().unwrap_or(Kind::Untyped),
                name: family,
                lines: Vec::new(),
            });
            families.len() - 1
        });
        families[at].lines.push(sample);
    }
    Ok(families)
}

fn cut(s: &str) -> String {
    let mut end = s.len().min(120);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn kind_of(text: &str) -> Option<Kind> {
    Some(match text {
        "counter" => Kind::Counter,
        "gauge" => Kind::Gauge,
        "histogram" | "gaugehistogram" => Kind::Histogram,
        "summary" => Kind::Summary,
        "untyped" | "unknown" | "info" | "stateset" => Kind::Untyped,
        _ => return None,
    })
}

/// The family a sample name belongs to: itself if typed, else its name
/// without a known suffix if that is typed, else itself.
fn family_of(name: &str, types: &HashMap<String, Kind>) -> String {
    if types.contains_key(name) {
        return name.to_owned();
    }
    for s in SUFFIXES {
        if let Some(base) = name.strip_suffix(s) {
            if types.contains_key(base) {
                return base.to_owned();
            }
        }
    }
    name.to_owned()
}

fn sample(line: &str) -> Result<Line, &'static str> {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
        i += 1;
    }
    if i == 0 || b[0].is_ascii_digit() {
        return Err("a sample line must start with a metric name");
    }
    let name = line[..i].to_owned();
    let mut labels = Labels::new();
    let mut rest = &line[i..];
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut words = rest.split_whitespace();
    if !rest.starts_with([' ', '\t']) {
        return Err("expected a space before the value");
    }
    let value = number(words.next().ok_or("a sample without a value")?)?;
    if let Some(ts) = words.next() {
        ts.parse::<i64>()
            .or_else(|_| ts.parse::<f64>().map(|f| f as i64))
            .map_err(|_| "a timestamp that is not a number")?;
    }
    if words.next().is_some() {
        return Err("more than a value and a timestamp after the labels");
    }
    Ok(Line {
        name,
        labels,
        value,
    })
}

/// Reads `name="value",…}` into `labels`; the text after the `}`.
fn parse_labels<'a>(mut s: &'a str, labels: &mut Labels) -> Result<&'a str, &'static str> {
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("labels without a closing brace")?;
        if end == 0 {
            return Err("a label without a name");
        }
        let key = &s[..end];
        s = s[end..].trim_start();
        s = s
            .strip_prefix('=')
            .ok_or("a label without `=`")?
            .trim_start();
        s = s
            .strip_prefix('"')
            .ok_or("a label value not in double quotes")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let close = loop {
            match chars.next() {
                None => return Err("a label value without its closing quote"),
                Some((at, '"')) => break at,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => return Err("a bad escape in a label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(key.to_owned(), value).is_some() {
            return Err("a label given twice");
        }
        s = s[close + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err("expected `,` or `}` after a label");
        }
    }
}

fn number(text: &str) -> Result<f64, &'static str> {
    match text {
        "NaN" | "nan" => Ok(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        t => t.parse().map_err(|_| "a value that is not a number"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
# HELP http_requests_total Requests served.
# TYPE http_requests_total counter
http_requests_total{method="get",path="/a,b=\"c\"\\"} 1027 1395066363000
http_requests_total{method="post",} 3
http_requests_created{method="post"} 1.7e9
# TYPE temp gauge
temp -1.5
# TYPE lat histogram
lat_bucket{le="0.1"} 2
lat_bucket{le="+Inf"} 5
lat_sum 1.25
lat_count 5
plain_total NaN
"#;

    #[test]
    fn families_and_labels_with_escapes() {
        let f = parse(TEXT).unwrap();
        let names: Vec<(&str, Kind, usize)> = f
            .iter()
            .map(|f| (f.name.as_str(), f.kind, f.lines.len()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("http_requests_total", Kind::Counter, 2),
                ("http_requests_created", Kind::Untyped, 1),
                ("temp", Kind::Gauge, 1),
                ("lat", Kind::Histogram, 4),
                ("plain_total", Kind::Untyped, 1),
            ]
        );
        assert_eq!(f[0].lines[0].labels["path"], "/a,b=\"c\"\\");
        assert_eq!(f[0].lines[0].value, 1027.0);
        assert_eq!(f[0].lines[1].labels.len(), 1);
        assert_eq!(f[2].lines[0].value, -1.5);
        assert_eq!(f[3].lines[1].value, 5.0);
        assert!(f[3].lines[1].labels["le"] == "+Inf");
        assert!(f[4].lines[0].value.is_nan());
    }

    #[test]
    fn garbage_names_its_line() {
        for (text, line, reason) in [
            (
                "ok 1\n<html>",
                2,
                "a sample line must start with a metric name",
            ),
            ("x{a=\"1} 2", 1, "a label value without its closing quote"),
            ("x{a=1} 2", 1, "a label value not in double quotes"),
            ("x two", 1, "a value that is not a number"),
            (
                "x 1 2 3",
                1,
                "more than a value and a timestamp after the labels",
            ),
            ("x{a=\"1\"}2", 1, "expected a space before the value"),
            ("# TYPE x nonsense\nx 1", 1, "an unknown type"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!((e.line, e.reason), (line, reason), "{text:?}");
        }
    }
}
