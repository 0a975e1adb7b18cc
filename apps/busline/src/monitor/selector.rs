//! Which samples an alert rule looks at: a metric name, a source and label
//! matchers, each a glob.
//!
//! A glob is the text to match, where `*` stands for any run of characters
//! (none included) and everything else is literal: `api.*` matches
//! `api.requests` and `api.v2.latency`, `http_*_total` matches
//! `http_requests_total`, `*` matches everything.
//!
//! | key | matches |
//! | --- | --- |
//! | `metric = "api.*"` | the sample's name, as sent |
//! | `source = "web"` | the service that sent it (optional: any source) |
//! | `labels = { route = "/api/*" }` | the label is present and its value matches |
//! | `labels = { status = "!2*" }` | the label is absent, or its value does not match (`!` in front) |
//!
//! A sample matches when all of them do. Written back (in rule expressions
//! and alert lines) a selector reads like a Prometheus one:
//! `api.latency{source="web",route="/api/*",status!="2*"}`.

use std::fmt;

use super::sample::{Sample, Value};

/// A glob: `*` is any run of characters, the rest literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    /// The literal parts between the `*`s.
    parts: Vec<String>,
}

impl Glob {
    /// The glob `text`.
    pub fn new(text: &str) -> Glob {
        Glob {
            text: text.to_owned(),
            parts: text.split('*').map(str::to_owned).collect(),
        }
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `s` matches it whole.
    pub fn matches(&self, s: &str) -> bool {
        let (first, rest) = match self.parts.split_first() {
            Some(x) => x,
            None => return s.is_empty(),
        };
        let Some(mut s) = s.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return s.is_empty(); // no `*`: all of it literal
        };
        for part in middle {
            match s.find(part.as_str()) {
                Some(i) => s = &s[i + part.len()..],
                None => return false,
            }
        }
        s.len() >= last.len() && s.ends_with(last.as_str())
    }
}

/// One label matcher: `key = "glob"` or `key = "!glob"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMatcher {
    /// The label's key.
    pub key: String,
    /// The pattern of its value.
    pub value: Glob,
    /// `!`: the label must be absent or not match.
    pub negated: bool,
}

impl LabelMatcher {
    /// Parses the value of `key` as written in a rule (`"/api/*"`, `"!200"`).
    pub fn new(key: &str, pattern: &str) -> LabelMatcher {
        let (negated, glob) = match pattern.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        LabelMatcher {
            key: key.to_owned(),
            value: Glob::new(glob),
            negated,
        }
    }

    fn matches(&self, sample: &Sample) -> bool {
        let hit = sample
            .labels
            .get(&self.key)
            .is_some_and(|v| self.value.matches(v));
        hit != self.negated
    }
}

/// The samples a rule looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The metric's name.
    pub metric: Glob,
    /// The source, if the rule names one.
    pub source: Option<Glob>,
    /// Label matchers, all of which must match.
    pub labels: Vec<LabelMatcher>,
    /// Only error samples (the default error-rate rule).
    pub errors_only: bool,
}

impl Selector {
    /// Every sample named `metric` (a glob).
    pub fn metric(metric: &str) -> Selector {
        Selector {
            metric: Glob::new(metric),
            source: None,
            labels: Vec::new(),
            errors_only: false,
        }
    }

    /// Whether `sample`, sent by `source`, is one the rule looks at.
    pub fn matches(&self, source: &str, sample: &Sample) -> bool {
        (!self.errors_only || matches!(sample.value, Value::Error { .. }))
            && self.metric.matches(&sample.name)
            && self.source.as_ref().is_none_or(|g| g.matches(source))
            && self.labels.iter().all(|m| m.matches(sample))
    }
}

/// `name{source="web",key="glob",key!="glob"}` (just `name` with no matchers).
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.metric.as_str())?;
        if self.source.is_none() && self.labels.is_empty() {
            return Ok(());
        }
        f.write_str("{")?;
        let mut first = true;
        if let Some(s) = &self.source {
            write!(f, "source={:?}", s.as_str())?;
            first = false;
        }
        for m in &self.labels {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            let op = if m.negated { "!=" } else { "=" };
            write!(f, "{}{op}{:?}", m.key, m.value.as_str())?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        let cases = [
            ("api.*", "api.requests", true),
            ("api.*", "api.v2.latency", true),
            ("api.*", "api", false),
            ("api.*", "web.api.x", false),
            ("http_*_total", "http_requests_total", true),
            ("http_*_total", "http_total", false),
            ("*", "", true),
            ("*", "anything", true),
            ("up", "up", true),
            ("up", "upx", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("*ab", "ab", true),
            ("a*a", "a", false),
            ("", "", true),
            ("", "x", false),
        ];
        for (glob, s, want) in cases {
            assert_eq!(Glob::new(glob).matches(s), want, "{glob:?} ~ {s:?}");
        }
    }

    #[test]
    fn selectors_match_name_source_and_labels() {
        let mut sel = Selector::metric("request.*");
        sel.source = Some(Glob::new("web"));
        sel.labels = vec![
            LabelMatcher::new("path", "/api/*"),
            LabelMatcher::new("status", "!2*"),
        ];
        let s = |path: &str, status: &str| {
            Sample::new("request.latency_ms", Value::Gauge { value: 1.0 })
                .label("path", path)
                .label("status", status)
        };
        assert!(sel.matches("web", &s("/api/data", "500")));
        assert!(!sel.matches("web", &s("/api/data", "200")));
        assert!(!sel.matches("web", &s("/health", "500")));
        assert!(!sel.matches("db", &s("/api/data", "500")));
        // A negated matcher is met by a missing label; a plain one is not.
        let bare = Sample::new("request.latency_ms", Value::Gauge { value: 1.0 });
        assert!(!sel.matches("web", &bare));
        sel.labels.remove(0);
        assert!(sel.matches("web", &bare));
        assert_eq!(sel.to_string(), r#"request.*{source="web",status!="2*"}"#);
        assert_eq!(Selector::metric("up").to_string(), "up");
    }

    #[test]
    fn the_error_selector_takes_error_samples_only() {
        let mut sel = Selector::metric("error");
        sel.errors_only = true;
        let err = Sample::new(
            "error",
            Value::Error {
                message: "x".into(),
            },
        );
        assert!(sel.matches("db", &err));
        assert!(!sel.matches("db", &Sample::new("error", Value::Counter { value: 1.0 })));
    }
}
