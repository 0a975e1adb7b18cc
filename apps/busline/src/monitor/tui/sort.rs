//! [`Sort`]: the orders the series table can be in.

/// The series table's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Busiest first: the last second's rate, then the minute's.
    Rate,
    /// By source, then series name.
    Name,
    /// Most samples in the last minute first.
    Count,
    /// Highest 99th percentile (last minute) first.
    P99,
}

impl Sort {
    /// The next order (`s` cycles through them).
    pub fn next(self) -> Sort {
        match self {
            Sort::Rate => Sort::Name,
            Sort::Name => Sort::Count,
            Sort::Count => Sort::P99,
            Sort::P99 => Sort::Rate,
        }
    }

    /// Its name in the header.
    pub fn label(self) -> &'static str {
        match self {
            Sort::Rate => "rate",
            Sort::Name => "name",
            Sort::Count => "count",
            Sort::P99 => "p99",
        }
    }
}
