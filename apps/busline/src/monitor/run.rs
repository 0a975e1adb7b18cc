//! A run: several samples of one series in a row, carried once.
//!
//! A busy StatsD sender repeats the same few series many times a second.
//! The listener folds each burst of datagrams into one [`Run`] per series
//! (see [`fold`](super::statsd::fold)) and publishes the runs of a topic as
//! one [`Metric::Runs`](super::metric::Metric::Runs): the name and labels
//! are made once per series and burst instead of once per line.
//!
//! A run stands for exactly its samples: `values[i]` is the sample
//! `{ name, labels, value: values[i], at_ms }`, in the order they were sent.
//! Consumers take them one by one ([`Run::for_each_sample`],
//! [`Metric::for_each_sample`](super::metric::Metric::for_each_sample)), so
//! every count, sum, percentile, gauge and set member comes out as if each
//! line had been its own sample.

use serde::{Deserialize, Serialize};

use super::sample::{Labels, Sample, Value};

/// Samples of one series, in the order they were sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The metric's name as sent.
    pub name: String,
    /// Its labels.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// When they were measured, Unix milliseconds, if the sender said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
    /// The samples' values, at least one.
    pub values: Vec<Value>,
}

impl Run {
    /// Calls `f` with each sample of the run, in order. The name and labels
    /// are copied once per run, not per sample.
    pub fn for_each_sample(&self, mut f: impl FnMut(&Sample)) {
        let Some(first) = self.values.first() else {
            return;
        };
        let mut s = Sample {
            name: self.name.clone(),
            labels: self.labels.clone(),
            value: first.clone(),
            at_ms: self.at_ms,
        };
        f(&s);
        for v in &self.values[1..] {
            s.value.clone_from(v);
            f(&s);
        }
    }

    /// The bytes it holds, itself and on the heap (an estimate: the
    /// allocator rounds sizes up). See [`Run::split_at_bytes`].
    pub fn bytes(&self) -> usize {
        self.head_bytes()
            + (self.values.capacity() - self.values.len()) * std::mem::size_of::<Value>()
            + self.values.iter().map(value_bytes).sum::<usize>()
    }

    /// The bytes it holds without its values: itself, its name, its labels.
    pub fn head_bytes(&self) -> usize {
        std::mem::size_of::<Run>() + self.name.len() + labels_bytes(&self.labels)
    }

    /// The run cut into runs of at most `max` [`bytes`](Run::bytes) each
    /// (at least one value each, whatever its size), the values in order:
    /// the run itself when it fits.
    pub fn split_at_bytes(mut self, max: usize) -> Vec<Run> {
        if self.bytes() <= max {
            return vec![self];
        }
        let head = self.head_bytes();
        let mut pieces = Vec::new();
        let mut values = std::mem::take(&mut self.values).into_iter().peekable();
        while values.peek().is_some() {
            let mut piece = Vec::new();
            let mut bytes = head;
            while let Some(v) =
                values.next_if(|v| piece.is_empty() || bytes + value_bytes(v) <= max)
            {
                bytes += value_bytes(&v);
                piece.push(v);
            }
            piece.shrink_to_fit();
            pieces.push(Run {
                name: self.name.clone(),
                labels: self.labels.clone(),
                at_ms: self.at_ms,
                values: piece,
            });
        }
        pieces
    }

    /// Its samples, each on its own.
    pub fn samples(&self) -> impl Iterator<Item = Sample> + '_ {
        self.values.iter().map(|v| Sample {
            name: self.name.clone(),
            labels: self.labels.clone(),
            value: v.clone(),
            at_ms: self.at_ms,
        })
    }
}

/// The bytes of one value, itself and on the heap.
pub fn value_bytes(v: &Value) -> usize {
    std::mem::size_of::<Value>()
        + match v {
            Value::Set { member } => member.len(),
            Value::Error { message } => message.len(),
            Value::Histogram { bounds, counts, .. } => 8 * (bounds.len() + counts.len()),
            Value::Counter { .. }
            | Value::Gauge { .. }
            | Value::GaugeDelta { .. }
            | Value::Observation { .. } => 0,
        }
}

/// The bytes of a label map on the heap: its B-tree nodes (up to 11
/// entries each) and the text of its keys and values.
fn labels_bytes(labels: &Labels) -> usize {
    const NODE: usize = 16 + 11 * std::mem::size_of::<(String, String)>();
    labels.len().div_ceil(11) * NODE + labels.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_its_samples_in_order() {
        let run = Run {
            name: "q".into(),
            labels: Labels::from([("k".to_owned(), "v".to_owned())]),
            at_ms: Some(5),
            values: vec![
                Value::Gauge { value: 1.0 },
                Value::GaugeDelta { value: 2.0 },
                Value::Set { member: "m".into() },
            ],
        };
        let mut seen = Vec::new();
        run.for_each_sample(|s| seen.push(s.clone()));
        let each: Vec<Sample> = run.samples().collect();
        assert_eq!(seen, each);
        assert_eq!(each.len(), 3);
        assert_eq!(each[1].value, Value::GaugeDelta { value: 2.0 });
        assert!(each
            .iter()
            .all(|s| s.name == "q" && s.labels["k"] == "v" && s.at_ms == Some(5)));
        let json = serde_json::to_string(&run).unwrap();
        assert_eq!(serde_json::from_str::<Run>(&json).unwrap(), run);
    }

    #[test]
    fn a_run_split_at_bytes_keeps_its_samples_in_order() {
        let run = Run {
            name: "q".into(),
            labels: Labels::from([("k".to_owned(), "v".to_owned())]),
            at_ms: None,
            values: (0..1000)
                .map(|v| Value::Gauge { value: v as f64 })
                .collect(),
        };
        assert_eq!(run.clone().split_at_bytes(usize::MAX), vec![run.clone()]);
        let max = 4096;
        let pieces = run.clone().split_at_bytes(max);
        assert!(pieces.len() > 1);
        assert!(pieces
            .iter()
            .all(|p| p.bytes() <= max && !p.values.is_empty()));
        let all: Vec<Sample> = pieces.iter().flat_map(Run::samples).collect();
        assert_eq!(all, run.samples().collect::<Vec<_>>());
        // A value larger than the limit still travels, alone.
        let one = run.split_at_bytes(1);
        assert_eq!(one.len(), 1000);
    }
}
