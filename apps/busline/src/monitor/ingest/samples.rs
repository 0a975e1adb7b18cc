//! The samples of the generic form (`{"type":"samples",…}`), one by one:
//! see the [parent module](super) for what is checked.

use crate::monitor::sample_check::check;
use serde::Deserialize;
use serde_json::Value;

use super::{fields, json_kind, text, IngestError};
use crate::monitor::sample::{Labels, Sample, Value as SampleValue};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SampleIn {
    name: String,
    #[serde(default)]
    labels: Labels,
    kind: String,
    #[serde(default)]
    at_ms: Option<u64>,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default)]
    bounds: Option<Vec<f64>>,
    #[serde(default)]
    counts: Option<Vec<u64>>,
    #[serde(default)]
    sum: Option<f64>,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
    #[serde(default)]
    member: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The fields each kind takes (beside `name`, `labels`, `at_ms`, `kind`).
const KINDS: [(&str, &[&str]); 7] = [
    ("counter", &["value"]),
    ("gauge", &["value"]),
    ("gauge_delta", &["value"]),
    ("observation", &["value", "weight"]),
    ("histogram", &["bounds", "counts", "sum", "min", "max"]),
    ("set", &["member"]),
    ("error", &["message"]),
];

/// Parses and checks one sample of a `samples` event.
pub(super) fn parse_sample(v: Value) -> Result<Sample, IngestError> {
    let given: Vec<String> = match &v {
        Value::Object(m) => m.keys().cloned().collect(),
        other => {
            return Err(IngestError::new(
                None,
                format!("expected a JSON object, got {}", json_kind(other)),
            ))
        }
    };
    let s: SampleIn = fields(v)?;
    text("name", &s.name)?;
    let Some((kind, takes)) = KINDS.iter().find(|(k, _)| *k == s.kind) else {
        return Err(IngestError::new(
            Some("kind"),
            format!(
                "unknown kind {:?}; expected one of {}",
                s.kind,
                KINDS.map(|(k, _)| format!("`{k}`")).join(", ")
            ),
        ));
    };
    let common = ["name", "labels", "kind", "at_ms"];
    if let Some(extra) = given
        .iter()
        .find(|f| !common.contains(&f.as_str()) && !takes.contains(&f.as_str()))
    {
        return Err(IngestError::new(
            Some(extra),
            format!("a `{kind}` sample has no field `{extra}`"),
        ));
    }
    let value = |v: Option<f64>| -> Result<f64, IngestError> {
        match v {
            None => Err(IngestError::new(Some("value"), "missing")),
            Some(v) => finite("value", v),
        }
    };
    let value = match *kind {
        "counter" => SampleValue::Counter {
            value: value(s.value)?,
        },
        "gauge" => SampleValue::Gauge {
            value: value(s.value)?,
        },
        "gauge_delta" => SampleValue::GaugeDelta {
            value: value(s.value)?,
        },
        "observation" => {
            let weight = finite("weight", s.weight.unwrap_or(1.0))?;
            if weight <= 0.0 {
                return Err(IngestError::new(Some("weight"), "must be > 0"));
            }
            SampleValue::Observation {
                value: value(s.value)?,
                weight,
            }
        }
        "histogram" => histogram(s.bounds, s.counts, [s.sum, s.min, s.max])?,
        "set" => {
            let member = s.member.unwrap_or_default();
            text("member", &member)?;
            SampleValue::Set { member }
        }
        _ => {
            let message = s.message.unwrap_or_default();
            text("message", &message)?;
            SampleValue::Error { message }
        }
    };
    let sample = Sample {
        name: s.name,
        labels: s.labels,
        value,
        at_ms: s.at_ms,
    };
    // The limits every ingest path shares (label sizes, histogram sanity,
    // weights and counts the aggregations can hold).
    check(&sample).map_err(|e| IngestError::new(Some(e.field), e.reason))?;
    Ok(sample)
}

pub(super) fn finite(field: &str, v: f64) -> Result<f64, IngestError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(IngestError::new(
            Some(field),
            format!("{v} is not a finite number"),
        ))
    }
}

fn histogram(
    bounds: Option<Vec<f64>>,
    counts: Option<Vec<u64>>,
    [sum, min, max]: [Option<f64>; 3],
) -> Result<SampleValue, IngestError> {
    let bounds = bounds.ok_or_else(|| IngestError::new(Some("bounds"), "missing"))?;
    let counts = counts.ok_or_else(|| IngestError::new(Some("counts"), "missing"))?;
    if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err(IngestError::new(
            Some("bounds"),
            "must be finite and strictly ascending",
        ));
    }
    if counts.len() != bounds.len() + 1 {
        return Err(IngestError::new(
            Some("counts"),
            format!(
                "{} counts for {} bounds; expected one more count than bounds",
                counts.len(),
                bounds.len()
            ),
        ));
    }
    for (f, v) in [("sum", sum), ("min", min), ("max", max)] {
        if let Some(v) = v {
            finite(f, v)?;
        }
    }
    Ok(SampleValue::Histogram {
        bounds,
        counts,
        sum,
        min,
        max,
    })
}
