//! The checks every sample passes before it enters the bus, whatever
//! protocol brought it (the JSON API, StatsD, OTLP, a scrape): one place, so
//! the series store, the rules and the dashboard can rely on them.
//!
//! | what | limit |
//! | --- | --- |
//! | labels | at most [`MAX_LABELS`]; keys 1 to [`MAX_LABEL_BYTES`] bytes, values at most that; no control characters |
//! | counter, gauge, gauge delta | a finite value |
//! | observation | a finite value; a finite weight in `(0, MAX_WEIGHT]` |
//! | histogram | one more count than bounds; finite, strictly ascending bounds; at most [`MAX_COUNT`] observations in all; finite `sum`/`min`/`max`, `min <= max` |
//! | set | a member of at most [`MAX_LABEL_BYTES`] bytes |
//!
//! ```text
//! check(&sample).map_err(|e| status.malformed(e.reason(), input, 1))?;
//! ```

use super::sample::{Labels, Sample, Value};

/// The most labels a sample may carry.
pub const MAX_LABELS: usize = 32;
/// The longest label key or value (and set member), in bytes.
pub const MAX_LABEL_BYTES: usize = 256;
/// The largest weight of an observation (a sample rate down to 1e-9).
pub const MAX_WEIGHT: f64 = 1e9;
/// The most observations one histogram sample may hold: 2^53, so counts
/// add up exactly as `f64` (and never overflow `u64`).
pub const MAX_COUNT: u64 = 1 << 53;

/// Why a sample was refused: the field at fault (relative to the sample:
/// `labels`, `value`, `weight`, `bounds`, `counts`, `sum`, `min`, `max`,
/// `member`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct SampleError {
    /// The sample's field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl SampleError {
    fn new(field: &'static str, reason: impl Into<String>) -> SampleError {
        SampleError {
            field,
            reason: reason.into(),
        }
    }
}

/// Checks one sample (not its name: each protocol names metrics its own
/// way; see the table above).
pub fn check(sample: &Sample) -> Result<(), SampleError> {
    check_labels(&sample.labels)?;
    check_value(&sample.value)
}

/// Checks a sample's value alone (a run of one series checks its labels
/// once, [`check_labels`], and each value with this).
pub fn check_value(value: &Value) -> Result<(), SampleError> {
    let finite = |field, v: f64| {
        if v.is_finite() {
            Ok(())
        } else {
            Err(SampleError::new(
                field,
                format!("{v} is not a finite number"),
            ))
        }
    };
    match value {
        Value::Counter { value } | Value::Gauge { value } | Value::GaugeDelta { value } => {
            finite("value", *value)
        }
        Value::Observation { value, weight } => {
            finite("value", *value)?;
            if !(*weight > 0.0 && *weight <= MAX_WEIGHT) {
                return Err(SampleError::new(
                    "weight",
                    format!("{weight}: expected a number > 0 and <= {MAX_WEIGHT:e}"),
                ));
            }
            Ok(())
        }
        Value::Histogram {
            bounds,
            counts,
            sum,
            min,
            max,
        } => histogram(bounds, counts, *sum, *min, *max),
        Value::Set { member } => {
            if member.len() > MAX_LABEL_BYTES {
                return Err(SampleError::new(
                    "member",
                    format!("{} bytes long; at most {MAX_LABEL_BYTES}", member.len()),
                ));
            }
            Ok(())
        }
        Value::Error { .. } => Ok(()),
    }
}

/// Checks a sample's labels alone.
pub fn check_labels(labels: &Labels) -> Result<(), SampleError> {
    check_label_count(labels.len())?;
    for (k, v) in labels {
        check_label(k, v)?;
    }
    Ok(())
}

/// Checks one sample whose labels were each checked with [`check_label`]
/// as they were made (`each_label_ok`): only their count is left, then the
/// value. The same answer as [`check`], which it is when `each_label_ok`
/// is false.
pub fn check_with_labels_seen(sample: &Sample, each_label_ok: bool) -> Result<(), SampleError> {
    if !each_label_ok {
        return check(sample);
    }
    check_label_count(sample.labels.len())?;
    check_value(&sample.value)
}

fn check_label_count(n: usize) -> Result<(), SampleError> {
    if n > MAX_LABELS {
        return Err(SampleError::new(
            "labels",
            format!("{n} labels; at most {MAX_LABELS}"),
        ));
    }
    Ok(())
}

/// Checks one label: its key and value.
pub fn check_label(k: &str, v: &str) -> Result<(), SampleError> {
    if k.is_empty() {
        return Err(SampleError::new("labels", "a label key must not be empty"));
    }
    if k.len() > MAX_LABEL_BYTES || v.len() > MAX_LABEL_BYTES {
        return Err(SampleError::new(
            "labels",
            format!("label {:.40?}: keys take 1 to {MAX_LABEL_BYTES} bytes, values at most {MAX_LABEL_BYTES}", k),
        ));
    }
    if has_control(k) || has_control(v) {
        return Err(SampleError::new(
            "labels",
            format!("label {k:.40?} contains control characters"),
        ));
    }
    Ok(())
}

/// Whether `s` holds a control character (`char::is_control`: U+0000 to
/// U+001F, U+007F to U+009F). Printable ASCII (most labels) is told apart
/// with one comparison a byte; only other text is decoded character by
/// character.
fn has_control(s: &str) -> bool {
    if s.bytes().all(|b| b.wrapping_sub(0x20) < 0x5f) {
        return false;
    }
    s.chars().any(char::is_control)
}

fn histogram(
    bounds: &[f64],
    counts: &[u64],
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
) -> Result<(), SampleError> {
    if counts.len() != bounds.len() + 1 {
        return Err(SampleError::new(
            "counts",
            format!(
                "{} counts for {} bounds: expected one more count than bounds",
                counts.len(),
                bounds.len()
            ),
        ));
    }
    if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err(SampleError::new(
            "bounds",
            "expected finite, strictly ascending bounds",
        ));
    }
    let total = counts.iter().try_fold(0u64, |t, c| t.checked_add(*c));
    if total.is_none_or(|t| t > MAX_COUNT) {
        return Err(SampleError::new(
            "counts",
            format!("more than {MAX_COUNT} observations in all"),
        ));
    }
    for (field, v) in [("sum", sum), ("min", min), ("max", max)] {
        if let Some(v) = v.filter(|v| !v.is_finite()) {
            return Err(SampleError::new(
                field,
                format!("{v} is not a finite number"),
            ));
        }
    }
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            return Err(SampleError::new(
                "min",
                format!("min {lo} is greater than max {hi}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(bounds: &[f64], counts: &[u64], min: Option<f64>, max: Option<f64>) -> Sample {
        Sample::new(
            "h",
            Value::Histogram {
                bounds: bounds.to_vec(),
                counts: counts.to_vec(),
                sum: None,
                min,
                max,
            },
        )
    }

    fn field(s: &Sample) -> &'static str {
        check(s).expect_err("refused").field
    }

    #[test]
    fn labels_checked_as_made_answer_as_check_does() {
        let long = "x".repeat(MAX_LABEL_BYTES + 1);
        let cases: [&[(&str, &str)]; 6] = [
            &[("a", "b"), ("c", "d")],
            &[("", "b")],
            &[("a", "\u{7}")],
            &[("k\u{85}", "v")],
            &[("k", long.as_str())],
            &[("k", "v"); 1],
        ];
        let mut many = Sample::new("m", Value::Gauge { value: 1.0 });
        for i in 0..=MAX_LABELS {
            many = many.label(format!("k{i}"), "v");
        }
        let samples = cases
            .iter()
            .map(|labels| {
                labels.iter().fold(
                    Sample::new("m", Value::Gauge { value: f64::NAN }),
                    |s, (k, v)| s.label(*k, *v),
                )
            })
            .chain([many]);
        for s in samples {
            let each_ok = s.labels.iter().all(|(k, v)| check_label(k, v).is_ok());
            assert_eq!(check_with_labels_seen(&s, each_ok), check(&s), "{s:?}");
            assert_eq!(check_with_labels_seen(&s, false), check(&s), "{s:?}");
        }
    }

    #[test]
    fn control_characters_are_found_in_ascii_and_beyond() {
        for text in ["a\u{0}", "\tb", "x\u{7f}", "é\u{85}", "\u{9f}"] {
            assert!(has_control(text), "{text:?}");
        }
        for text in ["", "route=/a b", "é", "\u{a0}", "~", "日本"] {
            assert!(!has_control(text), "{text:?}");
        }
    }

    #[test]
    fn histograms() {
        assert_eq!(check(&hist(&[1.0], &[1, 1], Some(0.5), Some(2.0))), Ok(()));
        assert_eq!(field(&hist(&[1.0], &[1, 1], Some(5.0), Some(1.0))), "min");
        assert_eq!(field(&hist(&[1.0], &[1], None, None)), "counts");
        assert_eq!(field(&hist(&[2.0, 1.0], &[1, 1, 1], None, None)), "bounds");
        assert_eq!(field(&hist(&[f64::NAN], &[1, 1], None, None)), "bounds");
        assert_eq!(field(&hist(&[1.0], &[u64::MAX, 1], None, None)), "counts");
        assert_eq!(field(&hist(&[1.0], &[MAX_COUNT, 1], None, None)), "counts");
        assert_eq!(
            field(&hist(&[1.0], &[1, 1], Some(f64::NEG_INFINITY), None)),
            "min"
        );
    }

    #[test]
    fn weights_and_values() {
        let obs = |value, weight| Sample::new("o", Value::Observation { value, weight });
        assert_eq!(check(&obs(1.0, 1e9)), Ok(()));
        assert_eq!(field(&obs(1.0, 1e300)), "weight");
        assert_eq!(field(&obs(1.0, 0.0)), "weight");
        assert_eq!(field(&obs(1.0, f64::NAN)), "weight");
        assert_eq!(field(&obs(f64::INFINITY, 1.0)), "value");
        let gauge = Sample::new("g", Value::Gauge { value: f64::NAN });
        assert_eq!(field(&gauge), "value");
    }

    #[test]
    fn labels_are_bounded() {
        let g = || Sample::new("g", Value::Gauge { value: 1.0 });
        assert_eq!(check(&g().label("k", "v")), Ok(()));
        assert_eq!(field(&g().label("k", "\u{1b}[2J")), "labels");
        assert_eq!(field(&g().label("", "v")), "labels");
        assert_eq!(field(&g().label("k", "x".repeat(257))), "labels");
        let many = (0..33).fold(g(), |s, i| s.label(format!("k{i}"), "v"));
        assert_eq!(field(&many), "labels");
        let member = Sample::new(
            "s",
            Value::Set {
                member: "m".repeat(257),
            },
        );
        assert_eq!(field(&member), "member");
    }
}
