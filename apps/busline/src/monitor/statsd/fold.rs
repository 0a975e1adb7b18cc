//! Folding a burst of StatsD datagrams into [`Run`]s: one per series, each
//! holding the values of that series' lines in the order they came.
//!
//! A sender repeats a few series many times a second; a line's name and
//! labels are made into owned strings once per series and burst, not once
//! per line. A line is found by its raw key — name, tags as sent and `|T`
//! time — hashed with `ahash`; only a key not seen in the burst is parsed
//! into labels, and keys that make the same series (tags in another order)
//! share one run. [`Fold::finish`] gives one [`Metric::Runs`] per source and
//! topic, in the order the topics first came, cut into several (between
//! runs, or inside a long run) where one would hold more than
//! [`EVENT_BYTES`].
//!
//! Nothing is summed or dropped: every line that passes the checks is one
//! value in its series' run, so the series store, the rules and the
//! dashboard count exactly what they would count line by line.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::parse::{lines, parse_line, Kind, Line, Reason};
use crate::monitor::ingest_status::Protocol;
use crate::monitor::metric::Metric;
use crate::monitor::run::{value_bytes, Run};
use crate::monitor::sample::{topic_of, Labels, Value};
use crate::monitor::sample_check::{check_labels, check_value};

/// The most bytes one event holds (its runs' [`Run::bytes`]; one value
/// whatever its size): the subscribers' queues are bounded in events, so a
/// queue of 4096 events holds at most 64 MiB of StatsD runs, however many
/// series a burst brings.
pub const EVENT_BYTES: usize = 16 << 10;

/// The reason a sample past the aggregations' limits is counted under.
const OVER_LIMITS: &str = "over the monitor's limits";

/// A raw key seen in this burst and the run it feeds; its name and tags
/// are `Fold::text[start..]`, one after the other.
#[derive(Debug)]
struct Key {
    start: usize,
    name_len: usize,
    tags_len: usize,
    at_ms: Option<u64>,
    run: usize,
    /// The next key of the same hash, if any.
    next: Option<usize>,
}

/// A line seen in this burst whose text tends to repeat (a counter's
/// `:1|c`, a gauge's `:+1|g`), so the same text again is not parsed: its
/// run and value; the text is `Fold::text[start..start + len]`.
#[derive(Debug)]
struct Seen {
    start: usize,
    len: usize,
    run: usize,
    value: Value,
    /// The next line of the same hash, if any.
    next: Option<usize>,
}

/// The values a run has cut off as it grew, so that each piece of it fits
/// one event: no value is copied again to cut it at the end.
#[derive(Debug)]
struct Cuts {
    /// The bytes one piece's values may take (`EVENT_BYTES` less the
    /// run's name and labels).
    room: usize,
    /// The bytes of the values the run holds now.
    bytes: usize,
    /// The values cut off, in order, each piece at most `room` bytes.
    full: Vec<Vec<Value>>,
}

/// Hashes a `u64` that is a hash already to itself.
#[derive(Debug, Default, Clone, Copy)]
struct AlreadyHashed(u64);

impl std::hash::Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ByHash = HashMap<u64, usize, std::hash::BuildHasherDefault<AlreadyHashed>>;

/// The runs of one burst, being filled.
#[derive(Debug)]
pub struct Fold {
    hasher: ahash::RandomState,
    /// Keys seen, the first of each hash by the hash of the raw key, and
    /// their names and tags (and the text of lines seen).
    keys: Vec<Key>,
    by_raw: ByHash,
    text: String,
    /// Lines seen whose text repeats, the first of each hash by the hash
    /// of the line.
    seen: Vec<Seen>,
    by_line: ByHash,
    /// Runs by source, in the order their series first came, and their
    /// indices by the hash of the series.
    runs: Vec<(String, Run)>,
    /// What each run has cut off so far, as it grew.
    cuts: Vec<Cuts>,
    by_series: HashMap<u64, Vec<usize>, ahash::RandomState>,
    /// Values held in all runs.
    values: usize,
}

impl Default for Fold {
    fn default() -> Fold {
        Fold {
            hasher: ahash::RandomState::new(),
            keys: Vec::new(),
            by_raw: ByHash::default(),
            text: String::new(),
            seen: Vec::new(),
            by_line: ByHash::default(),
            runs: Vec::new(),
            cuts: Vec::new(),
            by_series: HashMap::default(),
            values: 0,
        }
    }
}

impl Fold {
    /// Parses one datagram into the runs; malformed lines, and samples past
    /// the aggregations' limits, are counted in `status`, and so are the
    /// datagram and the lines taken.
    pub fn datagram(&mut self, datagram: &[u8], status: &Protocol) {
        let before = self.values;
        lines(datagram, |line| match line {
            Ok(text) => self.text_line(text, status),
            Err(text) => status.malformed(Reason::NotUtf8.as_str(), text, 1),
        });
        status.received.fetch_add(1, Ordering::Relaxed);
        let taken = (self.values - before) as u64;
        status.accepted.fetch_add(taken, Ordering::Relaxed);
    }

    /// Takes one line: the run and value of the same text seen before, or
    /// the line parsed.
    fn text_line(&mut self, text: &str, status: &Protocol) {
        let h = self.hasher.hash_one(text);
        let mut next = self.by_line.get(&h).copied();
        while let Some(i) = next {
            let s = &self.seen[i];
            if &self.text[s.start..s.start + s.len] == text {
                let (run, value) = (s.run, s.value.clone());
                self.push(run, value);
                return;
            }
            next = s.next;
        }
        match parse_line(text) {
            Ok(line) => {
                let repeats = matches!(line.kind, Kind::Counter(_) | Kind::GaugeDelta(_));
                if let Some(run) = self.line(line, status).filter(|_| repeats) {
                    let value = line.value();
                    let next = self.by_line.insert(h, self.seen.len());
                    self.seen.push(Seen {
                        start: self.text.len(),
                        len: text.len(),
                        run,
                        value,
                        next,
                    });
                    self.text.push_str(text);
                }
            }
            Err(reason) => status.malformed(reason.as_str(), text, 1),
        }
    }

    /// Takes one parsed line into its run: the run, or `None` if the line
    /// was refused.
    fn line(&mut self, line: Line<'_>, status: &Protocol) -> Option<usize> {
        let h = self.hasher.hash_one((line.name, line.tags, line.at_ms));
        let run = match self.find(h, &line) {
            Some(run) => run,
            None => match self.add_key(h, &line) {
                Ok(run) => run,
                Err(reason) => {
                    status.malformed(OVER_LIMITS, &reason, 1);
                    return None;
                }
            },
        };
        let value = line.value();
        if let Err(e) = check_value(&value) {
            status.malformed(OVER_LIMITS, &e.reason, 1);
            return None;
        }
        self.push(run, value);
        Some(run)
    }

    /// Adds a value to a run; a run whose values would take more than an
    /// event's room has them cut off first.
    fn push(&mut self, run: usize, value: Value) {
        let bytes = value_bytes(&value);
        let values = &mut self.runs[run].1.values;
        let cuts = &mut self.cuts[run];
        if cuts.bytes + bytes > cuts.room && !values.is_empty() {
            let mut full = std::mem::take(values);
            full.shrink_to_fit();
            cuts.full.push(full);
            cuts.bytes = 0;
        }
        cuts.bytes += bytes;
        values.push(value);
        self.values += 1;
    }

    /// The run of a raw key seen before in this burst.
    fn find(&self, h: u64, line: &Line<'_>) -> Option<usize> {
        let mut next = self.by_raw.get(&h).copied();
        while let Some(i) = next {
            let k = &self.keys[i];
            let (name, tags) =
                self.text[k.start..k.start + k.name_len + k.tags_len].split_at(k.name_len);
            if k.at_ms == line.at_ms && name == line.name && tags == line.tags {
                return Some(k.run);
            }
            next = k.next;
        }
        None
    }

    /// Takes a new raw key: its series' run (made if new), or why its
    /// labels are refused.
    fn add_key(&mut self, h: u64, line: &Line<'_>) -> Result<usize, String> {
        let labels = line.labels();
        check_labels(&labels).map_err(|e| e.reason)?;
        let run = self.run_of(line.source(), line.name, labels, line.at_ms);
        let next = self.by_raw.insert(h, self.keys.len());
        self.keys.push(Key {
            start: self.text.len(),
            name_len: line.name.len(),
            tags_len: line.tags.len(),
            at_ms: line.at_ms,
            run,
            next,
        });
        self.text.push_str(line.name);
        self.text.push_str(line.tags);
        Ok(run)
    }

    /// The run of a series, made if new.
    fn run_of(&mut self, source: &str, name: &str, labels: Labels, at_ms: Option<u64>) -> usize {
        let h = self.hasher.hash_one((source, name, &labels, at_ms));
        let same = self.by_series.get(&h).and_then(|runs| {
            runs.iter().copied().find(|&i| {
                let (s, r) = &self.runs[i];
                s == source && r.name == name && r.labels == labels && r.at_ms == at_ms
            })
        });
        if let Some(i) = same {
            return i;
        }
        self.by_series.entry(h).or_default().push(self.runs.len());
        let run = Run {
            name: name.to_owned(),
            labels,
            at_ms,
            // Room for one: a flood of new series costs a value each.
            values: Vec::with_capacity(1),
        };
        self.cuts.push(Cuts {
            room: EVENT_BYTES.saturating_sub(run.head_bytes()),
            bytes: 0,
            full: Vec::new(),
        });
        self.runs.push((source.to_owned(), run));
        self.runs.len() - 1
    }

    /// The burst's runs as metrics, one per source and topic (more when
    /// they hold more than [`EVENT_BYTES`]), each with its topic, in the
    /// order the topics first came; the fold is then empty.
    pub fn finish(&mut self) -> Vec<(String, Metric)> {
        self.keys.clear();
        self.by_raw.clear();
        self.text.clear();
        self.seen.clear();
        self.by_line.clear();
        self.by_series.clear();
        self.values = 0;
        let mut out: Vec<(String, Metric)> = Vec::new();
        // The event being filled of each source and topic, and its bytes.
        let mut open: HashMap<(String, String), (usize, usize), ahash::RandomState> =
            HashMap::default();
        for ((source, mut run), cuts) in self.runs.drain(..).zip(self.cuts.drain(..)) {
            // A run whose every line was refused has no values.
            if run.values.is_empty() {
                continue;
            }
            let topic = topic_of(&source, &run.name);
            let key = (source, topic);
            run.values.shrink_to_fit();
            let cut = cuts.full.into_iter().map(|values| Run {
                name: run.name.clone(),
                labels: run.labels.clone(),
                at_ms: run.at_ms,
                values,
            });
            let pieces: Vec<Run> = cut.collect();
            for piece in pieces
                .into_iter()
                .chain(std::iter::once(run))
                .flat_map(|r| r.split_at_bytes(EVENT_BYTES))
            {
                let bytes = piece.bytes();
                match open.get_mut(&key) {
                    Some((i, held)) if *held + bytes <= EVENT_BYTES => {
                        *held += bytes;
                        if let Metric::Runs { runs, .. } = &mut out[*i].1 {
                            runs.push(piece);
                        }
                    }
                    _ => {
                        open.insert(key.clone(), (out.len(), bytes));
                        out.push((
                            key.1.clone(),
                            Metric::Runs {
                                source: key.0.clone(),
                                runs: vec![piece],
                            },
                        ));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
