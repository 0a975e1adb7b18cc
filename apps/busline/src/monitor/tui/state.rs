//! What the terminal view shows, apart from how it is drawn: the newest
//! snapshot, the sort order and the selected series.

use std::sync::Arc;

use serde_json::Value;

use super::input::Action;
use super::sort::Sort;
use crate::monitor::series::{SeriesView, StoreView};

/// The view's state.
#[derive(Debug)]
pub struct State {
    /// The table's order.
    pub sort: Sort,
    /// Whether the order is reversed.
    pub reverse: bool,
    /// The selected row (in the sorted table).
    pub selected: usize,
    /// The newest series view.
    pub series: Option<Arc<StoreView>>,
    /// The newest `/api/summary` snapshot (alerts, rules, ingest, …).
    pub snapshot: Value,
    /// The web page's URL, if the web runs.
    pub web: Option<String>,
}

impl State {
    /// A state with nothing to show yet.
    pub fn new(web: Option<String>) -> State {
        State {
            sort: Sort::Rate,
            reverse: false,
            selected: 0,
            series: None,
            snapshot: Value::Null,
            web,
        }
    }

    /// Takes in the newest views (the selection stays within the table).
    pub fn refresh(&mut self, series: Option<Arc<StoreView>>, snapshot: Value) {
        self.series = series;
        self.snapshot = snapshot;
        self.selected = self.selected.min(self.rows().len().saturating_sub(1));
    }

    /// Takes in an action; returns `false` when the view should end.
    pub fn apply(&mut self, action: Action) -> bool {
        let n = self.rows().len();
        match action {
            Action::Quit => return false,
            Action::Sort(s) if s == self.sort => self.reverse = !self.reverse,
            Action::Sort(s) => (self.sort, self.reverse) = (s, false),
            Action::NextSort => (self.sort, self.reverse) = (self.sort.next(), false),
            Action::Up => self.selected = self.selected.saturating_sub(1),
            Action::Down => self.selected += 1,
            Action::PageUp => self.selected = self.selected.saturating_sub(10),
            Action::PageDown => self.selected += 10,
            Action::Home => self.selected = 0,
            Action::End => self.selected = n.saturating_sub(1),
        }
        self.selected = self.selected.min(n.saturating_sub(1));
        true
    }

    /// The series in the table's order.
    pub fn rows(&self) -> Vec<&SeriesView> {
        let Some(v) = &self.series else {
            return Vec::new();
        };
        let mut rows: Vec<&SeriesView> = v.series.iter().collect();
        // (total_cmp: NaN, from inf + -inf in a sum, is ordered too.)
        let desc = |a: f64, b: f64| b.total_cmp(&a);
        rows.sort_by(|a, b| match self.sort {
            Sort::Rate => desc(a.second.rate, b.second.rate)
                .then(desc(a.minute.rate, b.minute.rate))
                .then_with(|| (&a.source, &a.series).cmp(&(&b.source, &b.series))),
            Sort::Name => (&a.source, &a.series).cmp(&(&b.source, &b.series)),
            Sort::Count => desc(a.minute.count, b.minute.count),
            Sort::P99 => desc(
                a.minute.p99.unwrap_or(f64::NEG_INFINITY),
                b.minute.p99.unwrap_or(f64::NEG_INFINITY),
            ),
        });
        if self.reverse {
            rows.reverse();
        }
        rows
    }

    /// The selected series, if any.
    pub fn selected(&self) -> Option<&SeriesView> {
        self.rows().get(self.selected).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::sample::{Sample, Value as V};
    use crate::monitor::series::Store;

    #[test]
    fn sorting_and_selection_follow_the_keys() {
        let mut st = Store::new(10);
        let now = 1_000_000_000;
        for (name, n) in [("a.quiet", 1), ("b.busy", 5), ("c.mid", 3)] {
            for _ in 0..n {
                let s = Sample::new(name, V::Counter { value: 1.0 });
                st.record_sample("svc", &s, now - 500, now - 500);
            }
        }
        let mut state = State::new(None);
        state.series = Some(Arc::new(st.view(now)));
        let names =
            |s: &State| -> Vec<String> { s.rows().iter().map(|r| r.name.clone()).collect() };
        assert_eq!(names(&state), ["b.busy", "c.mid", "a.quiet"]);
        assert!(state.apply(Action::Sort(Sort::Name)));
        assert_eq!(names(&state), ["a.quiet", "b.busy", "c.mid"]);
        state.apply(Action::Sort(Sort::Name)); // again: reversed
        assert_eq!(names(&state), ["c.mid", "b.busy", "a.quiet"]);
        state.apply(Action::NextSort);
        assert_eq!((state.sort, state.reverse), (Sort::Count, false));
        state.apply(Action::Down);
        state.apply(Action::Down);
        state.apply(Action::Down); // past the end: stays on the last row
        assert_eq!(state.selected().unwrap().name, "a.quiet");
        state.apply(Action::Home);
        assert_eq!(state.selected().unwrap().name, "b.busy");
        assert!(!state.apply(Action::Quit));
    }
}
