//! The StatsD line format, with DogStatsD tags: one line, parsed without
//! copying, then made into a sample's [`Value`] and [`Labels`].
//!
//! ```text
//! <name>:<value>|<type>[|@<sample rate>][|#<tag>[:<value>],…][|T<unix seconds>][|c:<container>]
//! ```
//!
//! No maintained crate on crates.io covers this: `statsd-parser` (the only
//! parser, last released in 2019) has no sets, no distributions and no gauge
//! deltas, and copies every name and tag into a `String` before the line is
//! known to be good. So this is a small hand-written parser over `&str`: a
//! [`Line`] borrows its name, set member and tags from the datagram; only a
//! line that parsed gives a value, and its name and labels are copied once
//! per series and burst (see [`fold`](super::fold)). Fields are split at
//! bytes (every separator is ASCII), found with `memchr`.

use std::fmt;

use crate::monitor::sample::{Labels, Value};

/// The source of a line without a `service` tag.
pub const DEFAULT_SOURCE: &str = "statsd";

/// Why a line was refused. [`Reason::as_str`] is the reason counted in
/// `/api/summary` (`ingest.statsd.malformed_by_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// No `:` after the name, or nothing after it.
    NoValue,
    /// No `|type` after the value.
    NoType,
    /// The value is not a finite number (or an empty set member).
    BadValue,
    /// The type is none of `c`, `g`, `ms`, `h`, `d`, `s`.
    UnknownType,
    /// `@rate` is not a number in (0, 1].
    BadSampleRate,
    /// An empty tag, or a tag with an empty name.
    BadTag,
    /// `|T` is not a Unix time in seconds.
    BadTimestamp,
    /// A `|` section that is none of `@`, `#`, `T`, `c:`.
    UnknownField,
    /// The name before `:` is empty.
    EmptyName,
    /// The line is not UTF-8.
    NotUtf8,
}

impl Reason {
    /// The reason as counted and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoValue => "no value",
            Reason::NoType => "no type",
            Reason::BadValue => "bad value",
            Reason::UnknownType => "unknown type",
            Reason::BadSampleRate => "bad sample rate",
            Reason::BadTag => "bad tag",
            Reason::BadTimestamp => "bad timestamp",
            Reason::UnknownField => "unknown field",
            Reason::EmptyName => "empty name",
            Reason::NotUtf8 => "not UTF-8",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a line measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind<'a> {
    /// `|c`: an increment.
    Counter(f64),
    /// `|g` with an unsigned value: the gauge's value.
    Gauge(f64),
    /// `|g` with `+n` / `-n`: a change of the gauge.
    GaugeDelta(f64),
    /// `|ms`, `|h`, `|d`: one observation.
    Observation(f64),
    /// `|s`: a member of a set.
    Set(&'a str),
}

/// One parsed line, borrowing from the datagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line<'a> {
    /// The metric's name.
    pub name: &'a str,
    /// The kind and value (a counter not yet scaled by its rate).
    pub kind: Kind<'a>,
    /// The sample rate, 1 when not given.
    pub rate: f64,
    /// The tags as sent (`a:1,b`), checked.
    pub tags: &'a str,
    /// `|T`: when it was measured, Unix milliseconds.
    pub at_ms: Option<u64>,
    /// The `service` tag's value, if it has a non-empty one.
    service: Option<&'a str>,
}

/// Parses one line (without its `\n`).
pub fn parse_line(line: &str) -> Result<Line<'_>, Reason> {
    let (name, rest) = cut(line, b':').ok_or(Reason::NoValue)?;
    if name.is_empty() {
        return Err(Reason::EmptyName);
    }
    let mut sections = split(rest, b'|');
    let value = sections.next().unwrap_or_default();
    if value.is_empty() {
        return Err(Reason::NoValue);
    }
    let kind = sections.next().ok_or(Reason::NoType)?;
    let kind = match kind {
        "c" => Kind::Counter(number(value)?),
        "g" if matches!(value.as_bytes()[0], b'+' | b'-') => Kind::GaugeDelta(number(value)?),
        "g" => Kind::Gauge(number(value)?),
        "ms" | "h" | "d" => Kind::Observation(number(value)?),
        "s" => Kind::Set(value),
        _ => return Err(Reason::UnknownType),
    };
    let mut parsed = Line {
        name,
        kind,
        rate: 1.0,
        tags: "",
        at_ms: None,
        service: None,
    };
    for section in sections {
        // (The first byte is ASCII, so `&section[1..]` is whole characters.)
        match section.as_bytes() {
            [b'@', ..] => {
                parsed.rate = match section[1..].parse::<f64>() {
                    Ok(r) if r > 0.0 && r <= 1.0 => r,
                    _ => return Err(Reason::BadSampleRate),
                };
            }
            [b'#', ..] => {
                let tags = &section[1..];
                parsed.service = check_tags(tags)?;
                parsed.tags = tags;
            }
            [b'T', ..] => {
                let secs: u64 = section[1..].parse().map_err(|_| Reason::BadTimestamp)?;
                parsed.at_ms = Some(secs.checked_mul(1000).ok_or(Reason::BadTimestamp)?);
            }
            // DogStatsD's container id: not a label (one series per container).
            [b'c', b':', ..] => {}
            _ => return Err(Reason::UnknownField),
        }
    }
    Ok(parsed)
}

fn number(text: &str) -> Result<f64, Reason> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(Reason::BadValue),
    }
}

/// Checks the tags; the `service` tag's value, if one is non-empty.
fn check_tags(tags: &str) -> Result<Option<&str>, Reason> {
    let mut service = None;
    for tag in split(tags, b',') {
        let (key, value) = cut(tag, b':').unwrap_or((tag, ""));
        if key.is_empty() {
            return Err(Reason::BadTag);
        }
        if key == "service" && !value.is_empty() {
            service = Some(value);
        }
    }
    Ok(service)
}

impl<'a> Line<'a> {
    /// The tags as `(key, value)`; a tag without `:value` has an empty value.
    pub fn tags(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let tags = self.tags;
        tags.split(',')
            .filter(move |_| !tags.is_empty())
            .map(|t| t.split_once(':').unwrap_or((t, "")))
    }

    /// The source: the `service` tag if there is one, else [`DEFAULT_SOURCE`].
    pub fn source(&self) -> &'a str {
        self.service.unwrap_or(DEFAULT_SOURCE)
    }

    /// The sample it stands for: tags become labels (but `service`, which is
    /// the source), a counter is scaled by 1 / rate, an observation weighs
    /// 1 / rate.
    #[cfg(test)]
    pub fn to_sample(self) -> crate::monitor::sample::Sample {
        crate::monitor::sample::Sample {
            name: self.name.to_owned(),
            labels: self.labels(),
            value: self.value(),
            at_ms: self.at_ms,
        }
    }

    /// Its labels: the tags but `service` (the source).
    pub fn labels(&self) -> Labels {
        let mut labels = Labels::new();
        for (k, v) in self.tags() {
            if k != "service" || v.is_empty() {
                labels.insert(k.to_owned(), v.to_owned());
            }
        }
        // (With several `service` tags the last is the source, the others
        // are dropped with it.)
        labels
    }

    /// Its value: a counter scaled by 1 / rate, an observation weighing
    /// 1 / rate.
    pub fn value(&self) -> Value {
        match self.kind {
            Kind::Counter(v) => Value::Counter {
                value: v / self.rate,
            },
            Kind::Gauge(v) => Value::Gauge { value: v },
            Kind::GaugeDelta(v) => Value::GaugeDelta { value: v },
            Kind::Observation(v) => Value::Observation {
                value: v,
                weight: 1.0 / self.rate,
            },
            Kind::Set(m) => Value::Set {
                member: m.to_owned(),
            },
        }
    }
}

/// `text` before and after its first `sep` (an ASCII byte), like
/// `str::split_once` with a char, found with `memchr`.
fn cut(text: &str, sep: u8) -> Option<(&str, &str)> {
    let i = memchr::memchr(sep, text.as_bytes())?;
    Some((&text[..i], &text[i + 1..]))
}

/// `text` split at every `sep` (an ASCII byte), like `str::split` with a
/// char, a byte at a time.
fn split(text: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        match cut(t, sep) {
            Some((piece, after)) => {
                rest = Some(after);
                Some(piece)
            }
            None => {
                rest = None;
                Some(t)
            }
        }
    })
}

/// Splits a datagram into lines: `f` gets `Ok` with each line, or `Err`
/// with one that is not UTF-8 (invalid bytes replaced). Empty lines (a
/// trailing `\n`, `\r\n` endings) are skipped.
pub fn lines<'a>(datagram: &'a [u8], mut f: impl FnMut(Result<&'a str, &str>)) {
    // Most datagrams are text throughout: checked once, not line by line.
    if let Ok(text) = std::str::from_utf8(datagram) {
        for raw in split(text, b'\n') {
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if !raw.is_empty() {
                f(Ok(raw));
            }
        }
        return;
    }
    for raw in datagram.split(|b| *b == b'\n') {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            continue;
        }
        match std::str::from_utf8(raw) {
            Ok(text) => f(Ok(text)),
            Err(_) => f(Err(&String::from_utf8_lossy(raw))),
        }
    }
}

/// Splits a datagram into lines and parses each: `good` gets every line that
/// parsed, `bad` every one that did not, with its reason (the line as text,
/// invalid UTF-8 replaced). Empty lines (a trailing `\n`, `\r\n` endings)
/// are neither. One bad line never stops the ones after it.
#[cfg(test)]
pub fn parse_datagram<'a>(
    datagram: &'a [u8],
    mut good: impl FnMut(Line<'a>),
    mut bad: impl FnMut(Reason, &str),
) {
    lines(datagram, |line| match line {
        Ok(text) => match parse_line(text) {
            Ok(line) => good(line),
            Err(reason) => bad(reason, text),
        },
        Err(text) => bad(Reason::NotUtf8, text),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::sample::Sample;

    fn sample(line: &str) -> (String, Sample) {
        let l = parse_line(line).unwrap_or_else(|r| panic!("{line:?}: {r}"));
        (l.source().to_owned(), l.to_sample())
    }

    fn value(line: &str) -> Value {
        sample(line).1.value
    }

    #[test]
    fn every_type() {
        assert_eq!(value("a.b:3|c"), Value::Counter { value: 3.0 });
        assert_eq!(value("a:-2|c"), Value::Counter { value: -2.0 });
        assert_eq!(value("temp:21.5|g"), Value::Gauge { value: 21.5 });
        assert_eq!(value("q:+4|g"), Value::GaugeDelta { value: 4.0 });
        assert_eq!(value("q:-1.5|g"), Value::GaugeDelta { value: -1.5 });
        for t in ["ms", "h", "d"] {
            assert_eq!(
                value(&format!("lat:12.25|{t}")),
                Value::Observation {
                    value: 12.25,
                    weight: 1.0
                },
                "{t}"
            );
        }
        assert_eq!(
            value("users:alice|s"),
            Value::Set {
                member: "alice".into()
            }
        );
        let (source, s) = sample("api.requests:1|c");
        assert_eq!(
            (source.as_str(), s.name.as_str()),
            ("statsd", "api.requests")
        );
        assert!(s.labels.is_empty() && s.at_ms.is_none());
    }

    #[test]
    fn sample_rates_scale_counters_and_weigh_observations() {
        assert_eq!(value("name:1|c|@0.1"), Value::Counter { value: 10.0 });
        assert_eq!(value("name:2|c|@0.5"), Value::Counter { value: 4.0 });
        assert_eq!(
            value("t:7|ms|@0.25"),
            Value::Observation {
                value: 7.0,
                weight: 4.0
            }
        );
        // A gauge is a value, not a count: the rate changes nothing.
        assert_eq!(value("g:5|g|@0.5"), Value::Gauge { value: 5.0 });
        assert_eq!(value("c:1|c|@1"), Value::Counter { value: 1.0 });
    }

    #[test]
    fn tags_become_labels_and_service_the_source() {
        let (source, s) = sample("req:1|c|@0.5|#route:/a,service:shop,canary");
        assert_eq!(source, "shop");
        assert_eq!(s.labels.len(), 2);
        assert_eq!(s.labels["route"], "/a");
        assert_eq!(s.labels["canary"], "");
        assert_eq!(s.value, Value::Counter { value: 2.0 });
        // A value may hold ':'.
        let (_, s) = sample("x:1|c|#url:http://a:80");
        assert_eq!(s.labels["url"], "http://a:80");
        // Timestamps and container ids.
        let (_, s) = sample("x:1|g|#a:b|T1700000000|c:abc123");
        assert_eq!(s.at_ms, Some(1_700_000_000_000));
        assert_eq!(s.labels.len(), 1);
        // An empty service tag is no source: kept as a label.
        let (source, s) = sample("x:1|c|#service");
        assert_eq!(
            (source.as_str(), s.labels["service"].as_str()),
            ("statsd", "")
        );
    }

    #[test]
    fn malformed_lines_have_reasons() {
        for (line, reason) in [
            ("noval", Reason::NoValue),
            ("x:", Reason::NoValue),
            ("x:|c", Reason::NoValue),
            (":1|c", Reason::EmptyName),
            ("x:1", Reason::NoType),
            ("x:1|", Reason::UnknownType),
            ("x:1|q", Reason::UnknownType),
            ("x:abc|c", Reason::BadValue),
            ("x:NaN|g", Reason::BadValue),
            ("x:inf|ms", Reason::BadValue),
            ("x:1|c|@0", Reason::BadSampleRate),
            ("x:1|c|@2", Reason::BadSampleRate),
            ("x:1|c|@", Reason::BadSampleRate),
            ("x:1|c|@x", Reason::BadSampleRate),
            ("x:1|c|#a,,b", Reason::BadTag),
            ("x:1|c|#:v", Reason::BadTag),
            ("x:1|c|#", Reason::BadTag),
            ("x:1|c|Tsoon", Reason::BadTimestamp),
            ("x:1|c|zz", Reason::UnknownField),
        ] {
            assert_eq!(parse_line(line), Err(reason), "{line:?}");
        }
    }

    #[test]
    fn a_datagram_keeps_its_good_lines_beside_bad_and_truncated_ones() {
        let mut datagram = b"a:1|c\nbad\nb:2|g\r\n\nc:x|ms\n".to_vec();
        datagram.extend_from_slice(b"\xff\xfe:1|c\nd:+1|g\ne:12|ms|@0.5|#k:v,service:svc\nf:1|");
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        parse_datagram(
            &datagram,
            |l| good.push((l.source(), l.to_sample())),
            |r, text| bad.push((r, text.to_owned())),
        );
        let names: Vec<&str> = good.iter().map(|(_, s)| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "d", "e"]);
        assert_eq!(good[3].0, "svc");
        let reasons: Vec<Reason> = bad.iter().map(|(r, _)| *r).collect();
        assert_eq!(
            reasons,
            [
                Reason::NoValue,
                Reason::BadValue,
                Reason::NotUtf8,
                Reason::UnknownType
            ]
        );
        assert_eq!(bad[0].1, "bad");
        assert_eq!(bad[3].1, "f:1|", "the truncated last line");
    }
}
