//! Drawing: a pure function of [`App`] onto a ratatui [`Frame`].
//!
//! No I/O, no locks, no sorting: the app has already ordered the rows, and
//! only the rows that fit on screen are formatted. [`page_rows`] tells the app
//! how many list rows the current layout has, so paging keys match the screen.

use std::borrow::Cow;

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Cell, Paragraph, Row, Sparkline, Table};

use super::app::{App, Column, Detail, PoolColumn, SiteColumn, SiteDetail, Sort, Tab};
use super::keymap::{self, Context, KEYMAP};
use crate::format;
use crate::stats::{Counters, PoolRate, PoolSnapshot, share};

/// Below this size only a short message is drawn.
const MIN_WIDTH: u16 = 30;
const MIN_HEIGHT: u16 = 8;
/// Terminals at least this wide get every column and longer file names.
const WIDE: u16 = 100;

const BOLD: Style = Style::new().add_modifier(Modifier::BOLD);
const DIM: Style = Style::new().add_modifier(Modifier::DIM);
const SELECTED: Style = Style::new().add_modifier(Modifier::REVERSED);
const SORTED: Style = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);

/// The screen's rows: header, tabs, the banner of an exited target, body,
/// status line, footer.
fn areas(area: Rect, app: &App) -> [Rect; 6] {
    let banner = u16::from(app.exited.is_some());
    let body = Constraint::Min(0);
    let [header, tabs, banner, status, footer] = [3, 1, banner, 1, 1].map(Constraint::Length);
    Layout::vertical([header, tabs, banner, body, status, footer]).areas(area)
}

fn too_small(area: Rect) -> bool {
    area.width < MIN_WIDTH || area.height < MIN_HEIGHT
}

/// Rows of the list or scrollable pane of the current screen, for paging.
#[must_use]
pub fn page_rows(area: Rect, app: &App) -> usize {
    if too_small(area) {
        return 1;
    }
    let [_, _, _, body, _, _] = areas(area, app);
    let rows = if app.help {
        help_areas(body).1.height.saturating_sub(1)
    } else {
        match &app.detail {
            Some(Detail::Site(_)) => site_detail_areas(body, app).stack.height.saturating_sub(1),
            Some(Detail::Pool(_)) => pool_detail_areas(body).1.height.saturating_sub(1),
            None if app.tab == Tab::Pools => body.height.saturating_sub(1) / pool_row_height(body),
            None => body.height.saturating_sub(1),
        }
    };
    usize::from(rows.max(1))
}

/// Draws the whole dashboard.
pub fn render(f: &mut Frame, app: &App) {
    let area = f.area();
    if too_small(area) {
        let msg = Paragraph::new(format!(
            "allocwatch: terminal too small ({}x{}); q quits",
            area.width, area.height
        ))
        .wrap(ratatui::widgets::Wrap { trim: true });
        f.render_widget(msg, area);
        return;
    }
    let [
        header_area,
        tabs_area,
        banner,
        body,
        status_area,
        footer_area,
    ] = areas(area, app);
    header(f, header_area, app);
    tabs(f, tabs_area, app);
    if let Some(why) = &app.exited {
        let text = format!(" target exited: {why} — press q to quit");
        let style = Style::new()
            .fg(Color::White)
            .bg(Color::Red)
            .add_modifier(Modifier::BOLD);
        f.render_widget(Paragraph::new(text).style(style), banner);
    }
    if app.help {
        help(f, body, app);
    } else {
        match &app.detail {
            Some(Detail::Site(_)) => site_detail(f, body, app),
            Some(Detail::Pool(key)) => pool_detail(f, body, app, *key),
            None => match app.tab {
                Tab::Sites => sites(f, body, app),
                Tab::Pools => pools(f, body, app),
            },
        }
    }
    status(f, status_area, app);
    footer(f, footer_area, app);
}

fn header(f: &mut Frame, area: Rect, app: &App) {
    let [top, rates, totals] = Layout::vertical([Constraint::Length(1); 3]).areas(area);
    header_title(f, top, app);
    header_rates(f, rates, &app.shown);
    header_totals(f, totals, app);
}

/// A per-second number, or `-` while rates are not known yet.
fn known_rate(known: bool, r: f64, fmt: fn(f64) -> String) -> String {
    if known { fmt(r) } else { "-".to_owned() }
}

/// The target, the mode, the command and the time traced.
fn header_title(f: &mut Frame, top: Rect, app: &App) {
    let (s, info) = (&app.shown, &app.info);
    let elapsed = format!(" {}", format::elapsed(s.now));
    let [title, clock] = Layout::horizontal([
        Constraint::Min(0),
        Constraint::Length(u16::try_from(elapsed.len()).unwrap_or(9)),
    ])
    .areas(top);
    let mut spans = vec![
        Span::styled("allocwatch ", BOLD),
        Span::raw(format!("pid {}", info.pid)),
    ];
    if !info.go_version.is_empty() {
        spans.push(Span::raw(format!(" · {}", info.go_version)));
    }
    spans.push(Span::raw(format!(
        " · {}, {}",
        if info.pie { "PIE" } else { "non-PIE" },
        if info.stripped {
            "stripped"
        } else {
            "not stripped"
        }
    )));
    if let Some(mode) = info.mode {
        spans.push(Span::raw(format!(" · {}{}", mode.name(), info.mode_note)));
    }
    // The rest of the line is the command; a long path must not push the
    // program's name out of sight.
    let used = Line::from(spans.clone()).width() + Span::raw(" · ").width();
    let room = usize::from(title.width).saturating_sub(used);
    spans.push(Span::styled(
        format!(" · {}", format::command(&info.command, room)),
        DIM,
    ));
    f.render_widget(Paragraph::new(Line::from(spans)), title);
    f.render_widget(Paragraph::new(elapsed).style(BOLD), clock);
}

/// Allocations and bytes per second, with their sparklines.
fn header_rates(f: &mut Frame, rates: Rect, s: &super::Shown) {
    let [l1, s1, _, l2, s2] = Layout::horizontal([
        Constraint::Length(19),
        Constraint::Fill(1),
        Constraint::Length(1),
        Constraint::Length(20),
        Constraint::Fill(1),
    ])
    .areas(rates);
    let ar = known_rate(s.rates_known, s.allocs_rate, format::rate);
    let br = known_rate(s.rates_known, s.bytes_rate, format::bytes_rate);
    f.render_widget(Paragraph::new(format!("allocs/s {ar:>9} ")), l1);
    f.render_widget(Paragraph::new(format!("bytes/s {br:>11} ")), l2);
    sparkline(f, s1, &s.spark_allocs, Color::Cyan);
    sparkline(f, s2, &s.spark_bytes, Color::Magenta);
}

/// Totals, lost events, stack errors and what tracing costs.
fn header_totals(f: &mut Frame, totals: Rect, app: &App) {
    let (s, info) = (&app.shown, &app.info);
    let t = &s.totals;
    let since = if s.start.is_zero() {
        "total"
    } else {
        "since reset"
    };
    let mut spans = vec![Span::raw(format!(
        "{since} {} allocs, {}",
        format::count(t.total_allocs),
        format::bytes(t.total_bytes)
    ))];
    let lost = t.counters.lost;
    spans.push(Span::raw(" · "));
    spans.push(if lost > 0 {
        Span::styled(
            format!("lost {}", format::count(lost)),
            Style::new().fg(Color::White).bg(Color::Red).bold(),
        )
    } else {
        Span::raw("lost 0")
    });
    if t.counters.stack_errors > 0 {
        spans.push(Span::raw(" · "));
        spans.push(Span::styled(
            format!("stack errors {}", format::count(t.counters.stack_errors)),
            Style::new().fg(Color::Yellow),
        ));
    }
    spans.push(Span::raw(" · "));
    if info.cost_per_hit_ns > 0.0 && s.rates_known {
        let cpu = crate::stats::cost_share(s.hits_rate, info.cost_per_hit_ns);
        spans.push(Span::raw(format!(
            "cost ≈{} CPU ({} hits/s × {:.0}ns)",
            format::percent(cpu),
            format::rate(s.hits_rate),
            info.cost_per_hit_ns
        )));
    } else {
        spans.push(Span::styled("cost -", DIM));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), totals);
}

fn sparkline(f: &mut Frame, area: Rect, data: &[u64], color: Color) {
    let n = usize::from(area.width);
    let data = &data[data.len().saturating_sub(n)..];
    f.render_widget(
        Sparkline::default()
            .data(data)
            .style(Style::new().fg(color)),
        area,
    );
}

fn tabs(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.shown.totals;
    let tab = |which: Tab| {
        let (name, shown, total) = match which {
            Tab::Sites => ("Sites", app.site_order.len(), t.sites.len()),
            Tab::Pools => ("Pools", app.pool_order.len(), t.pools.len()),
        };
        let active = app.tab == which;
        let text = if shown == total {
            format!(" {name} {total} ")
        } else {
            format!(" {name} {shown}/{total} ")
        };
        Span::styled(
            text,
            if active {
                SELECTED.bold()
            } else {
                Style::new()
            },
        )
    };
    let mut spans = vec![
        tab(Tab::Sites),
        Span::raw("│"),
        tab(Tab::Pools),
        Span::raw("  sort "),
    ];
    let (title, glyph) = match app.tab {
        Tab::Sites => (app.site_sort.column.title(), app.site_sort.glyph()),
        Tab::Pools => (app.pool_sort.column.title(), app.pool_sort.glyph()),
    };
    spans.push(Span::styled(format!("{title}{glyph}"), SORTED));
    if !app.filter.is_empty() {
        spans.push(Span::raw("  filter "));
        spans.push(Span::styled(format!("\"{}\"", app.filter), BOLD));
    }
    if app.paused {
        spans.push(Span::raw("  "));
        spans.push(Span::styled(
            " PAUSED ",
            Style::new().fg(Color::Black).bg(Color::Yellow).bold(),
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The status message on the left, what the kernel could not do the cheap
/// way (when anything) on the right, where the message leaves room for it.
fn status(f: &mut Frame, area: Rect, app: &App) {
    let kernel = kernel_counters(&app.shown.totals.counters);
    let message = app
        .status
        .as_ref()
        .map_or(0, |s| s.text.chars().count() + 2);
    let room = message + kernel.width() <= usize::from(area.width);
    let width = if room { kernel.width() } else { 0 };
    let [text, counters] = Layout::horizontal([
        Constraint::Min(0),
        Constraint::Length(u16::try_from(width).unwrap_or(0)),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(kernel).alignment(Alignment::Right), counters);
    if let Some(s) = &app.status {
        let style = if s.error {
            Style::new().fg(Color::Red).bold()
        } else {
            Style::new().fg(Color::Green)
        };
        f.render_widget(Paragraph::new(s.text.as_str()).style(style), text);
    }
}

/// The kernel's counters of what it sent one by one or lost, those that
/// are not zero: `map full 3 · deep keys 12 · stacks lost 1 · other pids 4`.
fn kernel_counters(c: &Counters) -> Line<'static> {
    let warn = Style::new().fg(Color::Yellow);
    let items = [
        ("map full", c.agg_full, warn),
        ("deep keys", c.key_truncated, DIM),
        ("stacks lost", c.lost_stacks, warn),
        ("other pids", c.other_process, DIM),
    ];
    let mut spans = Vec::new();
    for (label, n, style) in items.into_iter().filter(|i| i.1 > 0) {
        if !spans.is_empty() {
            spans.push(Span::styled(" · ", DIM));
        }
        spans.push(Span::styled(format!("{label} {}", format::count(n)), style));
    }
    Line::from(spans)
}

fn footer(f: &mut Frame, area: Rect, app: &App) {
    let ctx = app.context();
    let mut spans = Vec::new();
    let mut used = 0usize;
    if let Some(input) = &app.filter_input {
        let prompt = format!("/{input}");
        used += prompt.chars().count() + 3;
        spans.push(Span::styled(prompt, BOLD));
        spans.push(Span::styled(" ", SELECTED));
        spans.push(Span::raw("  "));
    }
    for (key, hint) in keymap::hints(ctx) {
        // "key hint " — the key is drawn reversed, so one space separates items.
        let w = key.chars().count() + 1 + hint.chars().count();
        if used + w > usize::from(area.width) {
            break;
        }
        used += w + 1;
        spans.push(Span::styled(key, SELECTED));
        spans.push(Span::raw(format!(" {hint} ")));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn right(s: String) -> Cell<'static> {
    Cell::from(Line::from(s).alignment(Alignment::Right))
}

fn header_cell<C: Column>(c: C, sort: Sort<C>, numeric: bool) -> Cell<'static> {
    let sorted = c == sort.column;
    let text = if sorted {
        format!("{}{}", c.title(), sort.glyph())
    } else {
        c.title().to_owned()
    };
    let line = Line::from(text).style(if sorted { SORTED } else { BOLD });
    Cell::from(if numeric {
        line.alignment(Alignment::Right)
    } else {
        line
    })
}

fn placeholder(f: &mut Frame, area: Rect, text: &str) {
    if area.height > 1 {
        let area = Rect {
            y: area.y + 1,
            height: area.height - 1,
            ..area
        };
        f.render_widget(
            Paragraph::new(text).style(DIM).alignment(Alignment::Center),
            area,
        );
    }
}

const SITE_NARROW: &[SiteColumn] = &[
    SiteColumn::Function,
    SiteColumn::Location,
    SiteColumn::Type,
    SiteColumn::AllocsRate,
    SiteColumn::BytesRate,
    SiteColumn::Share,
];

fn site_width(c: SiteColumn, location: u16) -> Constraint {
    match c {
        SiteColumn::Function => Constraint::Fill(3),
        SiteColumn::Location => Constraint::Length(location),
        SiteColumn::Type => Constraint::Fill(2),
        SiteColumn::AllocsRate => Constraint::Length(9),
        SiteColumn::BytesRate | SiteColumn::Bytes => Constraint::Length(8),
        SiteColumn::Allocs | SiteColumn::AvgSize => Constraint::Length(7),
        SiteColumn::Share => Constraint::Length(6),
    }
}

/// Which of `len` rows show from `off` on, `rows_fit` of them (`3-12 of 40`);
/// `None` when they all fit.
fn shown_range(off: usize, rows_fit: usize, len: usize) -> Option<String> {
    (len > rows_fit).then(|| format!("{}-{} of {len}", off + 1, (off + rows_fit).min(len)))
}

/// Width of a column of short strings: the longest, within `min..=max`.
fn fit_width<'a>(items: impl Iterator<Item = &'a str>, min: usize, max: usize) -> u16 {
    let w = items
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(min, max);
    u16::try_from(w).unwrap_or(u16::MAX)
}

fn sites(f: &mut Frame, area: Rect, app: &App) {
    let s = &app.shown;
    let t = &s.totals;
    let wide = area.width >= WIDE;
    let cols = if wide { SiteColumn::ALL } else { SITE_NARROW };
    let file_parts = if area.width >= 140 {
        3
    } else if wide {
        2
    } else {
        1
    };
    let rows_fit = usize::from(area.height.saturating_sub(1));
    let len = app.site_order.len();
    let off = app.sites_pos.visible_offset(len, rows_fit);
    let sel = app.sites_pos.selected.min(len.saturating_sub(1));
    let visible = app.site_order.get(off..).unwrap_or_default();
    let visible = &visible[..visible.len().min(rows_fit)];
    let locations: Vec<String> = visible
        .iter()
        .map(|&i| {
            format!(
                "{}:{}",
                format::short_file(&t.sites[i].key.file, file_parts),
                t.sites[i].key.line
            )
        })
        .collect();
    let location_width = fit_width(
        locations.iter().map(String::as_str),
        10,
        if wide { 40 } else { 18 },
    );

    let rows = visible
        .iter()
        .zip(locations)
        .enumerate()
        .map(|(n, (&i, location))| {
            let mut location = Some(location);
            let cells = cols.iter().map(|&c| site_cell(c, s, i, &mut location));
            let row = Row::new(cells.collect::<Vec<_>>());
            if off + n == sel {
                row.style(SELECTED)
            } else {
                row
            }
        });
    let widths = cols.iter().map(|&c| site_width(c, location_width));
    f.render_widget(list_table(rows, cols, app.site_sort, widths), area);
    if len == 0 {
        let why = nothing_shown(app, "waiting for allocations…", t.sites.len(), "call site");
        let msg = why.unwrap_or_else(|| {
            let since = if s.start.is_zero() {
                "yet"
            } else {
                "since the reset"
            };
            format!("no allocations {since}")
        });
        placeholder(f, area, &msg);
    }
}

/// A list's table, its header naming the columns and the sort.
fn list_table<'a, C: Column>(
    rows: impl IntoIterator<Item = Row<'a>>,
    cols: &[C],
    sort: Sort<C>,
    widths: impl IntoIterator<Item = Constraint>,
) -> Table<'a> {
    let head = Row::new(
        cols.iter()
            .map(|&c| header_cell(c, sort, c.descending_by_default())),
    );
    table(rows, widths, head)
}

/// A table with a header row, its columns one space apart.
fn table<'a>(
    rows: impl IntoIterator<Item = Row<'a>>,
    widths: impl IntoIterator<Item = Constraint>,
    head: Row<'a>,
) -> Table<'a> {
    Table::new(rows, widths).header(head).column_spacing(1)
}

/// Why a list shows no row when there is no data yet, or a filter matches
/// none of its `rows`; `None` for other reasons.
fn nothing_shown(app: &App, waiting: &str, rows: usize, what: &str) -> Option<String> {
    if !app.shown.has_data {
        Some(waiting.to_owned())
    } else if !app.filter.is_empty() && rows > 0 {
        Some(format!("no {what} matches \"{}\" (Esc clears)", app.filter))
    } else {
        None
    }
}

/// Column `c` of shown site `i`; `location` is taken by its column.
fn site_cell(
    c: SiteColumn,
    s: &super::Shown,
    i: usize,
    location: &mut Option<String>,
) -> Cell<'static> {
    let site = &s.totals.sites[i];
    let rate = s.site_rates.get(i).copied().unwrap_or_default();
    match c {
        SiteColumn::Function => Cell::from(format::short_name(&site.key.function).into_owned()),
        SiteColumn::Location => Cell::from(location.take().unwrap_or_default()),
        SiteColumn::Type => Cell::from(format::short_name(&site.key.type_name).into_owned()),
        SiteColumn::AllocsRate => right(known_rate(s.rates_known, rate.allocs, format::rate)),
        SiteColumn::BytesRate => right(known_rate(s.rates_known, rate.bytes, format::bytes_rate)),
        SiteColumn::Allocs => right(format::count(site.allocs)),
        SiteColumn::Bytes => right(format::bytes(site.bytes)),
        SiteColumn::AvgSize => right(format::bytes_rate(site.avg_size())),
        SiteColumn::Share => right(format::percent(share(site.bytes, s.totals.total_bytes))),
    }
}

/// The columns of the pools view: narrow terminals (two lines a row) show
/// `New` under the pool's name and leave out the miss bytes.
fn pool_columns(row_height: u16) -> Vec<PoolColumn> {
    let narrow_drops = |c: &PoolColumn| matches!(c, PoolColumn::NewFunc | PoolColumn::MissBytes);
    PoolColumn::ALL
        .iter()
        .copied()
        .filter(|c| row_height == 1 || !narrow_drops(c))
        .collect()
}

fn pool_width(c: PoolColumn) -> Constraint {
    match c {
        PoolColumn::Pool => Constraint::Fill(3),
        PoolColumn::NewFunc => Constraint::Fill(2),
        PoolColumn::GetsRate | PoolColumn::MissesRate | PoolColumn::PutsRate => {
            Constraint::Length(7)
        }
        PoolColumn::HitRatio => Constraint::Length(4),
        PoolColumn::NotPut | PoolColumn::Callers => Constraint::Length(8),
        PoolColumn::MissAllocs => Constraint::Length(11),
        PoolColumn::MissBytes => Constraint::Length(10),
    }
}

/// Green from 0.9, yellow from 0.5, red below.
fn hit_style(r: Option<f64>) -> Style {
    match r {
        Some(r) if r >= 0.9 => Style::new().fg(Color::Green),
        Some(r) if r >= 0.5 => Style::new().fg(Color::Yellow),
        Some(_) => Style::new().fg(Color::Red),
        None => Style::new(),
    }
}

fn hit_cell(r: Option<f64>) -> Cell<'static> {
    Cell::from(Line::from(format::ratio(r)).alignment(Alignment::Right)).style(hit_style(r))
}

/// Narrow terminals show a pool's `New` under its name, on a second line.
fn pool_row_height(area: Rect) -> u16 {
    if area.width >= WIDE { 1 } else { 2 }
}

fn pools(f: &mut Frame, area: Rect, app: &App) {
    let s = &app.shown;
    let t = &s.totals;
    let row_height = pool_row_height(area);
    let cols = pool_columns(row_height);
    let rows_fit = usize::from(area.height.saturating_sub(1) / row_height);
    let len = app.pool_order.len();
    let off = app.pools_pos.visible_offset(len, rows_fit);
    let sel = app.pools_pos.selected.min(len.saturating_sub(1));
    let rows = app
        .pool_order
        .iter()
        .enumerate()
        .skip(off)
        .take(rows_fit)
        .map(|(pos, &i)| {
            let cells = cols.iter().map(|&c| pool_cell(c, s, i, row_height));
            let row = Row::new(cells).height(row_height);
            if pos == sel { row.style(SELECTED) } else { row }
        });
    let widths = cols.iter().map(|&c| pool_width(c));
    f.render_widget(list_table(rows, &cols, app.pool_sort, widths), area);
    if len == 0 {
        let why = nothing_shown(app, "waiting for data…", t.pools.len(), "pool");
        placeholder(
            f,
            area,
            &why.unwrap_or_else(|| "no sync.Pool activity seen".into()),
        );
    }
}

/// Column `c` of shown pool `i`, in rows `row_height` lines high.
fn pool_cell(c: PoolColumn, s: &super::Shown, i: usize, row_height: u16) -> Cell<'static> {
    let p = &s.totals.pools[i];
    let rate = s.pool_rates.get(i).copied().unwrap_or_default();
    let known = |r: f64| known_rate(s.rates_known, r, format::rate);
    match c {
        PoolColumn::Pool if row_height == 2 => Cell::from(Text::from(vec![
            Line::raw(format::short_name(&p.name).into_owned()),
            Line::styled(
                format!(
                    " New {}",
                    p.new_func
                        .as_deref()
                        .map_or(Cow::Borrowed("-"), format::short_name)
                ),
                DIM,
            ),
        ])),
        PoolColumn::Pool => Cell::from(format::short_name(&p.name).into_owned()),
        PoolColumn::NewFunc => Cell::from(p.new_func.as_deref().map_or_else(
            || Span::styled("-", DIM),
            |n| Span::raw(format::short_name(n).into_owned()),
        )),
        PoolColumn::GetsRate => right(known(rate.gets)),
        PoolColumn::HitRatio => hit_cell(p.stats.hit_ratio()),
        PoolColumn::MissesRate => right(known(rate.misses)),
        PoolColumn::PutsRate => right(known(rate.puts)),
        PoolColumn::NotPut => right(format::count(p.stats.gets_without_puts())),
        PoolColumn::MissAllocs => right(
            p.stats
                .miss_cost()
                .map_or_else(|| "-".to_owned(), |(n, _)| format::count(n)),
        ),
        PoolColumn::MissBytes => right(
            p.stats
                .miss_cost()
                .map_or_else(|| "-".to_owned(), |(_, b)| format::bytes(b)),
        ),
        PoolColumn::Callers => right(p.callers.len().to_string()),
    }
}

struct SiteDetailAreas {
    info: Rect,
    spark: Rect,
    why: Rect,
    left: Rect,
    stack: Rect,
}

fn site_detail_areas(body: Rect, app: &App) -> SiteDetailAreas {
    let pool_line = app
        .site_detail
        .as_ref()
        .is_some_and(|d| d.pool_new_func.is_some());
    let why_rows = app
        .site_detail
        .as_ref()
        .map_or(0, |d| why_lines(d, usize::from(body.height / 3)).len());
    let [info, spark, why, _, rest] = Layout::vertical([
        Constraint::Length(3 + u16::from(pool_line)),
        Constraint::Length(1),
        Constraint::Length(u16::try_from(why_rows).unwrap_or(0)),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(body);
    let [left, _, stack] = Layout::horizontal([
        Constraint::Percentage(42),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(rest);
    SiteDetailAreas {
        info,
        spark,
        why,
        left,
        stack,
    }
}

/// The "why on the heap" block (`--source`): the reason chain, cut to
/// leave room for the suggestions, at most `max` lines.
fn why_lines(d: &SiteDetail, max: usize) -> Vec<Line<'static>> {
    if d.escape.is_empty() {
        return Vec::new();
    }
    let sug = d.suggestions.len().min(max.saturating_sub(1));
    let chain = max.saturating_sub(sug).max(1);
    let mut v: Vec<Line<'static>> = d
        .escape
        .iter()
        .take(chain)
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                Line::styled(l.clone(), BOLD)
            } else {
                Line::raw(l.clone())
            }
        })
        .collect();
    v.extend(
        d.suggestions
            .iter()
            .take(sug)
            .map(|l| Line::styled(l.clone(), Style::new().fg(Color::Yellow))),
    );
    v
}

fn site_detail(f: &mut Frame, body: Rect, app: &App) {
    let Some(d) = &app.site_detail else {
        placeholder(f, body, "no site selected");
        return;
    };
    let a = site_detail_areas(body, app);
    f.render_widget(Paragraph::new(site_info(d, app.shown.rates_known)), a.info);
    let [label, spark] =
        Layout::horizontal([Constraint::Length(24), Constraint::Min(0)]).areas(a.spark);
    f.render_widget(Paragraph::new("allocs/s, last minute:").style(DIM), label);
    sparkline(f, spark, &d.series, Color::Cyan);
    f.render_widget(
        Paragraph::new(why_lines(d, usize::from(body.height / 3))),
        a.why,
    );
    // Left: the types at this function:line, then their size distribution.
    let width = usize::from(a.left.width);
    let mut lines = type_lines(d, width);
    lines.push(Line::raw(""));
    lines.extend(size_lines(d, width));
    f.render_widget(Paragraph::new(lines), a.left);
    // Right: the stack, scrollable.
    stack_table(f, a.stack, &d.stack, app.scroll);
}

/// The site, its type, totals and rates, and the pool whose `New` made it.
fn site_info(d: &SiteDetail, rates: bool) -> Vec<Line<'static>> {
    let mut info = vec![
        Line::from(vec![
            Span::styled(d.key.function.to_string(), BOLD),
            Span::raw(format!("  {}:{}", d.key.file, d.key.line)),
        ]),
        Line::from(format!(
            "type {} · avg {} · {} of all bytes",
            d.key.type_name,
            format::bytes(d.bytes.checked_div(d.allocs).unwrap_or(0)),
            format::percent(d.share),
        )),
        Line::from(format!(
            "{} allocs ({}/s) · {} ({}/s)",
            format::count(d.allocs),
            known_rate(rates, d.rate.allocs, format::rate),
            format::bytes(d.bytes),
            known_rate(rates, d.rate.bytes, format::bytes_rate),
        )),
    ];
    if let Some(new) = &d.pool_new_func {
        let pool = d.pool_name.as_deref().unwrap_or("with New");
        info.push(Line::styled(
            format!("allocated by the New of pool {pool} (pool misses): {new}"),
            Style::new().fg(Color::Yellow),
        ));
    }
    info
}

/// The types allocated at the site's function:line, its own in bold.
fn type_lines(d: &SiteDetail, width: usize) -> Vec<Line<'static>> {
    let mut lines = vec![Line::styled("Types at this line", BOLD)];
    for t in &d.types {
        let nums = format!(
            " {:>6} {:>7}",
            format::count(t.allocs),
            format::bytes(t.bytes)
        );
        let name = format::short_name(&t.type_name);
        let name = format::fit(&name, width.saturating_sub(nums.len()));
        let style = if t.type_name == d.key.type_name {
            BOLD
        } else {
            Style::new()
        };
        lines.push(Line::from(vec![
            Span::styled(
                format!("{name:<w$}", w = width.saturating_sub(nums.len())),
                style,
            ),
            Span::raw(nums),
        ]));
    }
    lines
}

/// The size distribution of all types at the line, as bars.
fn size_lines(d: &SiteDetail, width: usize) -> Vec<Line<'static>> {
    let mut lines = vec![Line::styled("Sizes (all types at this line)", BOLD)];
    let max = d.size_hist.iter().copied().max().unwrap_or(0);
    let total: u64 = d.size_hist.iter().sum();
    let bar_w = width.saturating_sub(8 + 7 + 7);
    for (i, &n) in d.size_hist.iter().enumerate().filter(|(_, n)| **n > 0) {
        let bar = usize::try_from(u128::from(n) * bar_w as u128 / u128::from(max.max(1)))
            .unwrap_or(bar_w);
        lines.push(Line::from(vec![
            Span::raw(format!("{:>7} ", format::bucket_label(i))),
            Span::styled(
                format!("{:<bar_w$}", "█".repeat(bar.max(1))),
                Style::new().fg(Color::Cyan),
            ),
            Span::raw(format!(" {:>6}", format::percent(share(n, total)))),
        ]));
    }
    if total == 0 {
        lines.push(Line::styled("no allocations since the reset", DIM));
    }
    lines
}

/// A stack, from `scroll` on, with a title that says which frames show.
fn stack_table(f: &mut Frame, area: Rect, stack: &[crate::stats::Frame], scroll: usize) {
    let rows_fit = usize::from(area.height.saturating_sub(1));
    let off = scroll.min(stack.len().saturating_sub(1));
    let frames: Vec<(String, String)> = stack
        .iter()
        .skip(off)
        .take(rows_fit)
        .map(|fr| {
            (
                format::short_name(&fr.function).into_owned(),
                format!("{}:{}", format::short_file(&fr.file, 1), fr.line),
            )
        })
        .collect();
    let location_width = fit_width(
        frames.iter().map(|f| f.1.as_str()),
        0,
        usize::from(area.width / 2),
    );
    let rows = frames.into_iter().map(|(function, location)| {
        Row::new([Cell::from(function), Cell::from(location).style(DIM)])
    });
    let title = shown_range(off, rows_fit, stack.len())
        .map_or_else(|| "Stack".to_owned(), |r| format!("Stack {r} (↑↓)"));
    let widths = [Constraint::Fill(1), Constraint::Length(location_width)];
    let head = Row::new([Cell::from(title).style(BOLD)]);
    f.render_widget(table(rows, widths, head), area);
}

fn pool_detail_areas(body: Rect) -> (Rect, Rect) {
    let [info, _, callers] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(body);
    (info, callers)
}

fn pool_detail(f: &mut Frame, body: Rect, app: &App, key: crate::stats::PoolKey) {
    let Some((pool, idx)) = app.pool(key) else {
        placeholder(f, body, "this pool is gone");
        return;
    };
    let (info_area, callers_area) = pool_detail_areas(body);
    let shown = &app.shown;
    let rate = shown.pool_rates.get(idx).copied().unwrap_or_default();
    let info = pool_info(pool, rate, shown.rates_known);
    f.render_widget(Paragraph::new(info), info_area);
    pool_callers(f, callers_area, pool, app.scroll);
}

/// A pool's name, address, `New`, counts, rates and miss cost.
fn pool_info(pool: &PoolSnapshot, rate: PoolRate, rates_known: bool) -> Vec<Line<'static>> {
    let known = |r: f64| known_rate(rates_known, r, format::rate);
    let st = &pool.stats;
    let ratio = st.hit_ratio();
    vec![
        Line::from(vec![
            Span::styled(format!("pool {}", pool.name), BOLD),
            Span::raw(format!(
                "  at {:#x}  New {}",
                pool.pool,
                pool.new_func.as_deref().unwrap_or("(not seen yet)")
            )),
        ]),
        Line::from(vec![
            Span::raw(format!(
                "gets {} ({}/s) · hits {} · misses {} ({}/s) · nil {} · hit ratio ",
                format::count(st.gets),
                known(rate.gets),
                format::count(st.hits()),
                format::count(st.misses),
                known(rate.misses),
                format::count(st.nil_returns),
            )),
            Span::styled(format::ratio(ratio), hit_style(ratio)),
        ]),
        Line::from(format!(
            "puts {} ({}/s) · gets without puts {} · misses allocated {}",
            format::count(st.puts),
            known(rate.puts),
            format::count(st.gets_without_puts()),
            st.miss_cost().map_or_else(
                || "? (sampled mode)".to_owned(),
                |(n, b)| format!("{} ({})", format::count(n), format::bytes(b))
            ),
        )),
    ]
}

/// A pool's callers, most gets first, from `scroll` on.
fn pool_callers(f: &mut Frame, callers_area: Rect, pool: &PoolSnapshot, scroll: usize) {
    let mut order: Vec<usize> = (0..pool.callers.len()).collect();
    order.sort_by(|&x, &y| {
        pool.callers[y]
            .stats
            .gets
            .cmp(&pool.callers[x].stats.gets)
            .then(x.cmp(&y))
    });
    let rows_fit = usize::from(callers_area.height.saturating_sub(1));
    let off = scroll.min(order.len().saturating_sub(1));
    let rows = order.iter().skip(off).take(rows_fit).map(|&n| {
        let c = &pool.callers[n];
        Row::new([
            Cell::from(format::short_name(&c.caller.function).into_owned()),
            Cell::from(format!(
                "{}:{}",
                format::short_file(&c.caller.file, 1),
                c.caller.line
            )),
            right(format::count(c.stats.gets)),
            right(format::count(c.stats.hits())),
            right(format::count(c.stats.misses)),
            right(format::count(c.stats.puts)),
            hit_cell(c.stats.hit_ratio()),
        ])
    });
    // Callers are counted per function; the line is where one was first seen.
    let head = Row::new(
        [
            format!("Callers ({})", pool.callers.len()),
            "First seen at".into(),
            "Gets".into(),
            "Hits".into(),
            "Misses".into(),
            "Puts".into(),
            "Hit".into(),
        ]
        .into_iter()
        .enumerate()
        .map(|(col, title)| {
            let line = Line::from(title).style(BOLD);
            Cell::from(if col >= 2 {
                line.alignment(Alignment::Right)
            } else {
                line
            })
        }),
    );
    let [gets, hits, misses, puts] = [7; 4].map(Constraint::Length);
    let (names, hit) = (
        [Constraint::Fill(3), Constraint::Fill(2)],
        Constraint::Length(5),
    );
    let widths = names.into_iter().chain([gets, hits, misses, puts, hit]);
    f.render_widget(table(rows, widths, head), callers_area);
}

fn help_areas(body: Rect) -> (Rect, Rect) {
    let [intro, keys] = Layout::vertical([Constraint::Length(4), Constraint::Min(0)]).areas(body);
    (intro, keys)
}

fn contexts_label(ctxs: &[Context]) -> String {
    let has = |c: &Context| ctxs.contains(c);
    let mut parts = Vec::new();
    let all_views = [
        Context::Sites,
        Context::Pools,
        Context::SiteDetail,
        Context::PoolDetail,
        Context::Help,
    ];
    if all_views.iter().all(has) {
        return if has(&Context::Filter) {
            "everywhere"
        } else {
            "all views"
        }
        .to_owned();
    }
    {
        // Both of a pair by the pair's name, else each by its own.
        let mut pair = |both: [Context; 2], name: &'static str| {
            if both.iter().all(has) {
                parts.push(name);
            } else {
                parts.extend(both.iter().filter(|c| has(c)).map(|c| c.name()));
            }
        };
        pair([Context::Sites, Context::Pools], "lists");
        pair([Context::SiteDetail, Context::PoolDetail], "details");
        if has(&Context::Help) {
            parts.push("help");
        }
    }
    if has(&Context::Filter) {
        parts.push(Context::Filter.name());
    }
    parts.join(", ")
}

fn help(f: &mut Frame, body: Rect, app: &App) {
    let (intro, keys) = help_areas(body);
    let rows_fit = usize::from(keys.height.saturating_sub(1));
    let off = app.scroll.min(KEYMAP.len().saturating_sub(1));
    let log = if app.info.log_path.is_empty() {
        "(none)"
    } else {
        app.info.log_path.as_str()
    };
    let range = shown_range(off, rows_fit, KEYMAP.len())
        .map_or_else(String::new, |r| format!(" · keys {r}, ↑↓ scroll"));
    let text = Text::from(vec![
        Line::styled(format!("Help — ? or Esc closes it{range}"), BOLD),
        Line::from(format!("log file: {log}")),
        Line::from(format!(
            "rates over the last {}s · totals since start or the last reset · KiB = 1024 B",
            app.opts.rate_window.as_secs_f64()
        )),
    ]);
    f.render_widget(Paragraph::new(text), intro);

    let rows = KEYMAP.iter().skip(off).take(rows_fit).map(|b| {
        Row::new([
            Cell::from(b.label).style(BOLD),
            Cell::from(b.description),
            Cell::from(contexts_label(b.contexts)).style(DIM),
        ])
    });
    let head = Row::new(["Key", "Action", "Where"]).style(BOLD);
    let widths = [
        Constraint::Length(9),
        Constraint::Fill(1),
        Constraint::Length(14),
    ];
    f.render_widget(table(rows, widths, head), keys);
}
