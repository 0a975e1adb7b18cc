//! Drawing the terminal view: one function per panel, each reading only
//! the [`State`].
//!
//! ```text
//!  busline monitor · web http://127.0.0.1:7878/ · up 42s · 12 series · sort: rate ↓ · q quit  s sort …
//! ┌Series──────────────────────────────────────────────────────────────────────────────┐
//! │source  series                          kind         rate/s  rate/min …              │
//! └────────────────────────────────────────────────────────────────────────────────────┘
//! ┌web/request.latency_ms{…} mean/s─────┐┌Alerts──────────────┐┌Ingest──────────────────┐
//! │▁▂▃▅▇█▇▅▃▂▁                          ││ok  errors 3/min …   ││statsd recv 0 ok 0 …    │
//! └─────────────────────────────────────┘└────────────────────┘└────────────────────────┘
//! ```

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;
use serde_json::Value;

use super::state::State;
use crate::monitor::metric::Ms;
use crate::monitor::series::SeriesView;

/// Draws the whole view.
pub fn draw(f: &mut Frame<'_>, state: &State) {
    let [header, table, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(6),
        Constraint::Length(12),
    ])
    .areas(f.area());
    draw_header(f, header, state);
    draw_table(f, table, state);
    let [spark, alerts, ingest] = Layout::horizontal([
        Constraint::Percentage(40),
        Constraint::Percentage(28),
        Constraint::Percentage(32),
    ])
    .areas(bottom);
    draw_sparkline(f, spark, state);
    draw_alerts(f, alerts, state);
    draw_ingest(f, ingest, state);
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| Ms(v).to_string())
}

fn draw_header(f: &mut Frame<'_>, area: Rect, state: &State) {
    let up = state.snapshot["uptime_s"].as_f64().unwrap_or(0.0);
    let n = state.series.as_ref().map_or(0, |v| v.series.len());
    let mut text = String::from(" busline monitor");
    if let Some(w) = &state.web {
        text.push_str(&format!(" · web {w}"));
    }
    text.push_str(&format!(
        " · up {}s · {n} series · sort: {} {} · q quit  s/r/n/c/p sort  ↑↓ select",
        up as u64,
        state.sort.label(),
        if state.reverse { "↑" } else { "↓" }
    ));
    let style = Style::default().add_modifier(Modifier::BOLD);
    f.render_widget(Paragraph::new(text).style(style), area);
}

fn row(s: &SeriesView) -> Row<'static> {
    let value = match s.kind {
        "gauge" => num(s.value),
        "set" => num(s.minute.distinct.map(|d| d as f64)),
        "error" => s.last_message.clone().unwrap_or_default(),
        _ => num(s.minute.mean),
    };
    Row::new(vec![
        Cell::from(s.source.clone()),
        Cell::from(s.series.clone()),
        Cell::from(s.kind),
        Cell::from(num(Some(s.second.rate))),
        Cell::from(num(Some(s.minute.rate))),
        Cell::from(num(Some(s.minute.count))),
        Cell::from(value),
        Cell::from(num(s.minute.p50)),
        Cell::from(num(s.minute.p99)),
        Cell::from(num(s.minute.max)),
    ])
}

fn draw_table(f: &mut Frame<'_>, area: Rect, state: &State) {
    // Only the rows that fit are made (thousands of series cost nothing
    // more), scrolled so that the selected one is on screen.
    let all = state.rows();
    let height = area.height.saturating_sub(3).max(1) as usize;
    let offset = (state.selected + 1).saturating_sub(height);
    let rows: Vec<Row<'_>> = all.into_iter().skip(offset).take(height).map(row).collect();
    let header = Row::new([
        "source",
        "series",
        "kind",
        "rate/s",
        "rate/s 1m",
        "count 1m",
        "mean|value",
        "p50 1m",
        "p99 1m",
        "max 1m",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let widths = [
        Constraint::Length(12),
        Constraint::Min(30),
        Constraint::Length(11),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(12),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
    ];
    let title = match &state.series {
        Some(v) if v.overflow.samples > 0 => format!(
            "Series ({} samples over --max-series {})",
            v.overflow.samples, v.overflow.max_series
        ),
        Some(_) => "Series".to_owned(),
        None => "Series (waiting for the first second)".to_owned(),
    };
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(title))
        .row_highlight_style(Style::default().bg(Color::Blue).fg(Color::White));
    let mut ts = TableState::default().with_selected(Some(state.selected - offset));
    f.render_stateful_widget(table, area, &mut ts);
}

fn draw_sparkline(f: &mut Frame<'_>, area: Rect, state: &State) {
    let Some(s) = state.selected() else {
        let p = Paragraph::new("no series yet").block(Block::bordered().title("Last minute"));
        f.render_widget(p, area);
        return;
    };
    let what = match s.kind {
        "counter" => "increments/s",
        "gauge" => "value",
        "observation" | "histogram" => "mean",
        "set" => "distinct/s",
        _ => "count/s",
    };
    let max = s.points.iter().cloned().fold(0.0, f64::max);
    let min = s.points.iter().cloned().fold(f64::INFINITY, f64::min);
    let scale = if max > 0.0 { 1000.0 / max } else { 0.0 };
    let width = area.width.saturating_sub(2) as usize;
    let skip = s.points.len().saturating_sub(width);
    let data: Vec<u64> = s.points[skip..]
        .iter()
        .map(|v| (v.max(0.0) * scale).round() as u64)
        .collect();
    let title = format!(
        "{}/{} {what} · last {} min {} max {}",
        s.source,
        s.series,
        num(s.points.last().copied()),
        num(Some(min)),
        num(Some(max))
    );
    let spark = Sparkline::default()
        .block(Block::bordered().title(title))
        .data(&data)
        .max(1000)
        .style(Style::default().fg(Color::Cyan));
    f.render_widget(spark, area);
}

fn draw_alerts(f: &mut Frame<'_>, area: Rect, state: &State) {
    let snap = &state.snapshot;
    let mut lines: Vec<Line<'_>> = Vec::new();
    let state_style = |s: &str| match s {
        "firing" => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        "pending" => Style::default().fg(Color::Yellow),
        _ => Style::default().fg(Color::Green),
    };
    match snap["rules"].as_array() {
        Some(rules) if !rules.is_empty() => {
            for r in rules {
                let st = r["state"].as_str().unwrap_or("?");
                lines.push(Line::from(vec![
                    Span::styled(format!("{st:<8}"), state_style(st)),
                    Span::raw(format!(
                        "{} {} ({})",
                        r["name"].as_str().unwrap_or("?"),
                        show(&r["value"]),
                        r["expr"].as_str().unwrap_or("")
                    )),
                ]));
            }
        }
        _ => {
            let a = &snap["alert"];
            let firing = a["firing"].as_bool().unwrap_or(false);
            let st = if firing { "firing" } else { "ok" };
            lines.push(Line::from(vec![
                Span::styled(format!("{st:<8}"), state_style(st)),
                Span::raw(format!(
                    "errors {}/min (threshold {})",
                    show(&a["rate"]),
                    show(&a["threshold"])
                )),
            ]));
        }
    }
    for a in snap["alerts"].as_array().into_iter().flatten().take(5) {
        lines.push(Line::from(a["text"].as_str().unwrap_or("").to_owned()));
    }
    let p = Paragraph::new(lines).block(Block::bordered().title("Alerts"));
    f.render_widget(p, area);
}

fn show(v: &Value) -> String {
    match v {
        Value::Number(n) => n
            .as_f64()
            .map_or_else(|| n.to_string(), |f| Ms(f).to_string()),
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn draw_ingest(f: &mut Frame<'_>, area: Rect, state: &State) {
    let snap = &state.snapshot;
    let mut lines = Vec::new();
    for p in ["statsd", "otlp", "api", "scrape"] {
        let c = &snap["ingest"][p];
        lines.push(Line::from(format!(
            "{p:<7}recv {} ok {} bad {} kdrop {}",
            show(&c["received"]),
            show(&c["accepted"]),
            show(&c["malformed"]),
            show(&c["kernel_dropped"])
        )));
    }
    let targets = snap["ingest"]["targets"].as_array();
    let up = targets
        .into_iter()
        .flatten()
        .filter(|t| t["up"] == true)
        .count();
    let total = targets.map_or(0, Vec::len);
    lines.push(Line::from(format!("targets {up} up, {} down", total - up)));
    lines.push(Line::from(format!(
        "events via /api/events {} (refused {})",
        show(&snap["ingested"]),
        show(&snap["rejected"])
    )));
    if let Some(v) = &state.series {
        lines.push(Line::from(format!(
            "series {}/{} · over cap {} · too old {}",
            v.series.len(),
            v.overflow.max_series,
            v.overflow.samples,
            v.too_old
        )));
    }
    let bad = snap["ingest"]["statsd"]["malformed_by_reason"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>();
    if !bad.is_empty() {
        lines.push(Line::from(format!("statsd malformed: {}", bad.join(", "))));
    }
    let p = Paragraph::new(lines).block(Block::bordered().title("Ingest"));
    f.render_widget(p, area);
}
