//! The samples of a request as events: one [`Metric::Samples`] per source
//! and topic, in the order the topics first came, each with its topic.
//!
//! A metric's points are its own vector of samples, moved whole into its
//! event (the first of its topic) or appended to it (a later metric of the
//! same topic); the topic is worked out once per metric, not per sample.

use std::collections::HashMap;

use crate::monitor::metric::Metric;
use crate::monitor::sample::{topic_of, Sample};

/// The events of one request, being filled.
#[derive(Debug, Default)]
pub struct Batches {
    /// Each event with its topic.
    out: Vec<(String, Metric)>,
    /// The next event of the same topic (another source), by event.
    next: Vec<Option<usize>>,
    /// The first event of each topic.
    by_topic: HashMap<String, usize, ahash::RandomState>,
}

impl Batches {
    /// Adds the samples of one metric of `source`, in order.
    pub fn add(&mut self, source: &str, samples: Vec<Sample>) {
        let Some(first) = samples.first() else {
            return;
        };
        if samples.iter().all(|s| s.name == first.name) {
            return self.add_one_name(source, samples);
        }
        // A summary: its quantiles, `_count` and `_sum` go apart.
        let mut run: Vec<Sample> = Vec::new();
        for s in samples {
            if run.last().is_some_and(|l| l.name != s.name) {
                let topic = topic_of(source, &run[0].name);
                self.push(source, topic, std::mem::take(&mut run));
            }
            run.push(s);
        }
        if !run.is_empty() {
            let topic = topic_of(source, &run[0].name);
            self.push(source, topic, run);
        }
    }

    /// Adds the samples of one metric of `source` that all carry one name
    /// (the metric's own: any kind but a summary), without comparing them.
    pub fn add_one_name(&mut self, source: &str, samples: Vec<Sample>) {
        let Some(first) = samples.first() else {
            return;
        };
        let topic = topic_of(source, &first.name);
        self.push(source, topic, samples);
    }

    fn push(&mut self, source: &str, topic: String, samples: Vec<Sample>) {
        let mut last = None;
        let mut at = self.by_topic.get(&topic).copied();
        while let Some(i) = at {
            if let Metric::Samples {
                source: s,
                samples: held,
            } = &mut self.out[i].1
            {
                if s == source {
                    held.extend(samples);
                    return;
                }
            }
            (last, at) = (Some(i), self.next[i]);
        }
        let i = self.out.len();
        match last {
            Some(l) => self.next[l] = Some(i),
            None => {
                self.by_topic.insert(topic.clone(), i);
            }
        }
        self.next.push(None);
        self.out.push((
            topic,
            Metric::Samples {
                source: source.to_owned(),
                samples,
            },
        ));
    }

    /// The events, each with its topic.
    pub fn into_events(self) -> Vec<(String, Metric)> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::sample::Value;

    fn s(name: &str) -> Sample {
        Sample::new(name, Value::Gauge { value: 1.0 })
    }

    #[test]
    fn one_event_per_source_and_topic_in_the_order_topics_came() {
        let mut b = Batches::default();
        b.add("web", vec![s("a"), s("a")]);
        b.add("db", vec![s("a")]);
        b.add("web", vec![s("q"), s("q_count"), s("q_sum"), s("q")]);
        // Names that differ only where a topic cannot hold a character
        // share one topic, and one event.
        b.add("web", vec![s("a b")]);
        b.add("web", vec![s("a_b")]);
        // Sources that share a topic keep their events apart.
        b.add("x.y", vec![s("z")]);
        b.add("x_y", vec![s("z")]);
        b.add("x.y", vec![s("z")]);
        let got: Vec<(String, usize)> = b
            .into_events()
            .into_iter()
            .map(|(t, m)| (t, m.sample_count()))
            .collect();
        let want = [
            ("metrics.web.a", 2),
            ("metrics.db.a", 1),
            ("metrics.web.q", 2),
            ("metrics.web.q_count", 1),
            ("metrics.web.q_sum", 1),
            ("metrics.web.a_b", 2),
            ("metrics.x_y.z", 2),
            ("metrics.x_y.z", 1),
        ];
        let want: Vec<(String, usize)> = want.iter().map(|(t, n)| (t.to_string(), *n)).collect();
        assert_eq!(got, want);
    }
}
