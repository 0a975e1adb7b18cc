//! Every key the terminal view knows, in one place.
//!
//! | key | does |
//! | --- | --- |
//! | `q`, `Esc`, `Ctrl-C` | quit: stops the monitor, as Ctrl-C does in plain mode |
//! | `s` | next sort order (rate → name → count → p99) |
//! | `r`, `n`, `c`, `p` | sort by rate, name, count, p99 (again: reversed) |
//! | `↑`/`k`, `↓`/`j`, `PgUp`, `PgDn`, `Home`, `End` | select a series (its sparkline shows below) |

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::sort::Sort;

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// End the view and stop the monitor.
    Quit,
    /// Sort by this (reversed if it already is).
    Sort(Sort),
    /// The next sort order.
    NextSort,
    /// Select the row above.
    Up,
    /// Select the row below.
    Down,
    /// Ten rows up.
    PageUp,
    /// Ten rows down.
    PageDown,
    /// The first row.
    Home,
    /// The last row.
    End,
}

/// The action of a key press, if it has one.
pub fn action(key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    Some(match key.code {
        KeyCode::Char('c') if ctrl => Action::Quit,
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
        KeyCode::Char('s') => Action::NextSort,
        KeyCode::Char('r') => Action::Sort(Sort::Rate),
        KeyCode::Char('n') => Action::Sort(Sort::Name),
        KeyCode::Char('c') => Action::Sort(Sort::Count),
        KeyCode::Char('p') => Action::Sort(Sort::P99),
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Home | KeyCode::Char('g') => Action::Home,
        KeyCode::End | KeyCode::Char('G') => Action::End,
        _ => return None,
    })
}
