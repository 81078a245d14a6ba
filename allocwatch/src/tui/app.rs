//! Dashboard state and its updates: the model and update of model/update/view.
//!
//! [`App`] is plain data. [`App::on_feed`] ingests the session's cumulative
//! snapshots, keeping a short history for windowed rates and a minute of
//! samples for the sparklines; [`App::handle`] applies an [`Action`] from the
//! keymap. Everything the view shows — totals since the last reset, rates, the
//! sorted and filtered row order, the detail of the open site — is computed
//! here once per update, never per frame.

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use super::feed::{Feed, TargetInfo};
use super::keymap::{Action, Context, KEYMAP};
use crate::export::AtomicFile;
use crate::export::csv::{PoolsCsv, SitesCsv};
use crate::stats::{
    Frame, PoolKey, PoolRate, PoolSnapshot, SIZE_BUCKETS, SiteKey, SiteRate, SiteStats, Snapshot,
};

/// How the dashboard runs.
#[derive(Clone, Debug)]
pub struct TuiOptions {
    /// How often the screen is redrawn with new data.
    pub refresh: Duration,
    /// Where `e` writes CSV files.
    pub export_dir: PathBuf,
    /// Rates are computed over about this much of the most recent history.
    pub rate_window: Duration,
}

impl Default for TuiOptions {
    fn default() -> Self {
        TuiOptions {
            refresh: Duration::from_secs(1),
            export_dir: PathBuf::from("."),
            rate_window: Duration::from_secs(5),
        }
    }
}

/// The two list views.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Sites,
    Pools,
}

/// A sortable column.
pub trait Column: Copy + PartialEq + 'static {
    const ALL: &'static [Self];
    fn title(self) -> &'static str;
    /// Numbers sort largest first, names alphabetically.
    fn descending_by_default(self) -> bool;
}

/// Columns of the call sites view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteColumn {
    Function,
    Location,
    Type,
    AllocsRate,
    BytesRate,
    Allocs,
    Bytes,
    AvgSize,
    Share,
}

impl Column for SiteColumn {
    const ALL: &'static [Self] = &[
        SiteColumn::Function,
        SiteColumn::Location,
        SiteColumn::Type,
        SiteColumn::AllocsRate,
        SiteColumn::BytesRate,
        SiteColumn::Allocs,
        SiteColumn::Bytes,
        SiteColumn::AvgSize,
        SiteColumn::Share,
    ];

    fn title(self) -> &'static str {
        match self {
            SiteColumn::Function => "Function",
            SiteColumn::Location => "File:Line",
            SiteColumn::Type => "Type",
            SiteColumn::AllocsRate => "Allocs/s",
            SiteColumn::BytesRate => "Bytes/s",
            SiteColumn::Allocs => "Allocs",
            SiteColumn::Bytes => "Bytes",
            SiteColumn::AvgSize => "Avg",
            SiteColumn::Share => "Share",
        }
    }

    fn descending_by_default(self) -> bool {
        !matches!(
            self,
            SiteColumn::Function | SiteColumn::Location | SiteColumn::Type
        )
    }
}

/// Columns of the pools view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolColumn {
    Pool,
    NewFunc,
    GetsRate,
    HitRatio,
    MissesRate,
    PutsRate,
    NotPut,
    MissAllocs,
    MissBytes,
    Callers,
}

impl Column for PoolColumn {
    const ALL: &'static [Self] = &[
        PoolColumn::Pool,
        PoolColumn::NewFunc,
        PoolColumn::GetsRate,
        PoolColumn::HitRatio,
        PoolColumn::MissesRate,
        PoolColumn::PutsRate,
        PoolColumn::NotPut,
        PoolColumn::MissAllocs,
        PoolColumn::MissBytes,
        PoolColumn::Callers,
    ];

    fn title(self) -> &'static str {
        match self {
            PoolColumn::Pool => "Pool",
            PoolColumn::NewFunc => "New",
            PoolColumn::GetsRate => "Gets/s",
            PoolColumn::HitRatio => "Hit",
            PoolColumn::MissesRate => "Miss/s",
            PoolColumn::PutsRate => "Puts/s",
            PoolColumn::NotPut => "Not put",
            PoolColumn::MissAllocs => "Miss allocs",
            PoolColumn::MissBytes => "Miss bytes",
            PoolColumn::Callers => "Callers",
        }
    }

    fn descending_by_default(self) -> bool {
        !matches!(self, PoolColumn::Pool | PoolColumn::NewFunc)
    }
}

/// A sort column and direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sort<C> {
    pub column: C,
    pub descending: bool,
}

impl<C: Column> Sort<C> {
    fn by(column: C) -> Self {
        Sort {
            column,
            descending: column.descending_by_default(),
        }
    }

    fn next(&mut self) {
        let i = C::ALL.iter().position(|c| *c == self.column).unwrap_or(0);
        *self = Sort::by(C::ALL[(i + 1) % C::ALL.len()]);
    }

    /// `ascending` in this sort's direction.
    fn direct(&self, ascending: Ordering) -> Ordering {
        if self.descending {
            ascending.reverse()
        } else {
            ascending
        }
    }

    /// `↓` or `↑`.
    #[must_use]
    pub fn glyph(&self) -> &'static str {
        if self.descending { "↓" } else { "↑" }
    }
}

/// What is on screen: rebuilt on each update unless paused.
#[derive(Clone, Debug, Default)]
pub struct Shown {
    /// Totals since the last reset (or since tracing started).
    pub totals: Arc<Snapshot>,
    /// When the totals start, since tracing started.
    pub start: Duration,
    /// Time since tracing started, at the newest snapshot.
    pub now: Duration,
    /// Whether two snapshots were seen, so rates mean something.
    pub rates_known: bool,
    /// Aligned with `totals.sites`.
    pub site_rates: Vec<SiteRate>,
    /// Aligned with `totals.pools`.
    pub pool_rates: Vec<PoolRate>,
    pub allocs_rate: f64,
    pub bytes_rate: f64,
    /// Probe hits per second in the target.
    pub hits_rate: f64,
    /// The last minute of total allocations/s and bytes/s.
    pub spark_allocs: Vec<u64>,
    pub spark_bytes: Vec<u64>,
    /// Whether any snapshot arrived.
    pub has_data: bool,
}

/// Selection and scroll position of a list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListPos {
    pub selected: usize,
    pub offset: usize,
}

impl ListPos {
    /// The first row to show in `rows` lines so that the selection is visible.
    #[must_use]
    pub fn visible_offset(&self, len: usize, rows: usize) -> usize {
        let sel = self.selected.min(len.saturating_sub(1));
        let rows = rows.max(1);
        let mut off = self.offset.min(sel);
        if sel >= off + rows {
            off = sel + 1 - rows;
        }
        off
    }

    fn set(&mut self, selected: usize, len: usize, page: usize) {
        self.selected = selected.min(len.saturating_sub(1));
        self.offset = self.visible_offset(len, page);
    }

    fn nav(&mut self, action: Action, len: usize, page: usize) {
        let page = page.max(1);
        let s = self.selected;
        let to = match action {
            Action::Up => s.saturating_sub(1),
            Action::Down => s + 1,
            Action::PageUp => s.saturating_sub(page),
            Action::PageDown => s + page,
            Action::Top => 0,
            Action::Bottom => usize::MAX,
            _ => s,
        };
        self.set(to, len, page);
    }
}

/// The open detail view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detail {
    Site(SiteKey),
    Pool(PoolKey),
}

/// One type allocated at a function:line.
#[derive(Clone, Debug)]
pub struct TypeRow {
    pub type_name: Arc<str>,
    pub allocs: u64,
    pub bytes: u64,
    pub rate: SiteRate,
}

/// Everything the site detail view shows, computed on update.
#[derive(Clone, Debug)]
pub struct SiteDetail {
    pub key: SiteKey,
    pub stack: Arc<[Frame]>,
    pub allocs: u64,
    pub bytes: u64,
    pub rate: SiteRate,
    /// Share of all bytes.
    pub share: f64,
    pub pool_new_func: Option<Arc<str>>,
    /// The pool whose `New` is `pool_new_func`, when known.
    pub pool_name: Option<Arc<str>>,
    /// All types allocated at the same function:line, most bytes first.
    pub types: Vec<TypeRow>,
    /// Why it is on the heap (`--source`): the compiler's reason chain, or
    /// why there is none; empty without an escape analysis.
    pub escape: Vec<String>,
    /// allocwatch's suggestions (each starts with `suggestion:`).
    pub suggestions: Vec<String>,
    /// Size distribution over all those types.
    pub size_hist: [u64; SIZE_BUCKETS],
    /// Allocations per second of this site, oldest first.
    pub series: Vec<u64>,
}

/// A line for the status bar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    pub error: bool,
}

#[derive(Clone, Debug, Default)]
struct SiteSeries {
    last: u64,
    seen: u64,
    samples: VecDeque<u64>,
}

fn push_capped<T>(q: &mut VecDeque<T>, v: T, cap: usize) {
    while q.len() >= cap {
        q.pop_front();
    }
    q.push_back(v);
}

/// A sparkline sample: `n` per second over `dt`, rounded.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "non-negative rate, rounded"
)]
fn sample(n: u64, dt: Duration) -> u64 {
    crate::stats::per_s(n, dt).unwrap_or(0.0).round() as u64
}

/// One rate per row (0 where there is none).
fn aligned<T, R: Default>(rows: &[T], rate: impl Fn(&T) -> Option<R>) -> Vec<R> {
    rows.iter().map(|x| rate(x).unwrap_or_default()).collect()
}

/// A case-insensitive substring test.
struct Needle {
    lower: String,
}

impl Needle {
    fn new(s: &str) -> Self {
        Needle {
            lower: s.trim().to_lowercase(),
        }
    }

    fn is_empty(&self) -> bool {
        self.lower.is_empty()
    }

    fn found_in(&self, hay: &str) -> bool {
        let n = self.lower.as_bytes();
        if n.is_empty() {
            return true;
        }
        if self.lower.is_ascii() {
            hay.as_bytes()
                .windows(n.len())
                .any(|w| w.eq_ignore_ascii_case(n))
        } else {
            hay.to_lowercase().contains(&self.lower)
        }
    }

    fn matches_site(&self, s: &SiteStats) -> bool {
        let k = &s.key;
        if self.found_in(&k.function) || self.found_in(&k.file) || self.found_in(&k.type_name) {
            return true;
        }
        // "orders.go:88" matches the displayed file:line.
        self.lower.contains(':') && self.found_in(&format!("{}:{}", k.file, k.line))
    }

    fn matches_pool(&self, p: &PoolSnapshot) -> bool {
        self.found_in(&p.name)
            || p.new_func.as_deref().is_some_and(|f| self.found_in(f))
            || p.callers.iter().any(|c| self.found_in(&c.caller.function))
    }
}

fn cmp_sites(
    sort: Sort<SiteColumn>,
    (sa, ra): (&SiteStats, SiteRate),
    (sb, rb): (&SiteStats, SiteRate),
) -> Ordering {
    let primary = match sort.column {
        SiteColumn::Function => sa.key.function.cmp(&sb.key.function),
        SiteColumn::Location => sa
            .key
            .file
            .cmp(&sb.key.file)
            .then(sa.key.line.cmp(&sb.key.line)),
        SiteColumn::Type => sa.key.type_name.cmp(&sb.key.type_name),
        SiteColumn::AllocsRate => ra.allocs.total_cmp(&rb.allocs),
        SiteColumn::BytesRate => ra.bytes.total_cmp(&rb.bytes),
        SiteColumn::Allocs => sa.allocs.cmp(&sb.allocs),
        SiteColumn::Bytes | SiteColumn::Share => sa.bytes.cmp(&sb.bytes),
        SiteColumn::AvgSize => sa.avg_size().total_cmp(&sb.avg_size()),
    };
    let primary = sort.direct(primary);
    primary
        .then_with(|| sb.bytes.cmp(&sa.bytes))
        .then_with(|| sa.key.cmp(&sb.key))
}

fn cmp_pools(
    sort: Sort<PoolColumn>,
    (pa, ra): (&PoolSnapshot, PoolRate),
    (pb, rb): (&PoolSnapshot, PoolRate),
) -> Ordering {
    // An unknown miss cost (sampled mode) sorts below every known one.
    let (ma, mb) = (pa.stats.miss_cost(), pb.stats.miss_cost());
    let primary = match sort.column {
        PoolColumn::Pool => pa.name.cmp(&pb.name),
        PoolColumn::NewFunc => pa.new_func.cmp(&pb.new_func),
        PoolColumn::GetsRate => ra.gets.total_cmp(&rb.gets),
        PoolColumn::HitRatio => {
            let (x, y) = (
                pa.stats.hit_ratio().unwrap_or(-1.0),
                pb.stats.hit_ratio().unwrap_or(-1.0),
            );
            x.total_cmp(&y)
        }
        PoolColumn::MissesRate => ra.misses.total_cmp(&rb.misses),
        PoolColumn::PutsRate => ra.puts.total_cmp(&rb.puts),
        PoolColumn::NotPut => pa
            .stats
            .gets_without_puts()
            .cmp(&pb.stats.gets_without_puts()),
        PoolColumn::MissAllocs => ma.map(|m| m.0).cmp(&mb.map(|m| m.0)),
        PoolColumn::MissBytes => ma.map(|m| m.1).cmp(&mb.map(|m| m.1)),
        PoolColumn::Callers => pa.callers.len().cmp(&pb.callers.len()),
    };
    let primary = sort.direct(primary);
    primary
        .then_with(|| pb.stats.gets.cmp(&pa.stats.gets))
        .then_with(|| pa.name.cmp(&pb.name))
        .then_with(|| pa.pool.cmp(&pb.pool))
}

/// The dashboard's state; see the module documentation.
pub struct App {
    pub(super) info: TargetInfo,
    pub(super) opts: TuiOptions,
    /// Cumulative snapshots, oldest first; the first is the start of the rate window.
    history: VecDeque<Arc<Snapshot>>,
    /// The snapshot at the last reset.
    baseline: Option<Arc<Snapshot>>,
    /// (allocs/s, bytes/s) between consecutive snapshots.
    totals_series: VecDeque<(u64, u64)>,
    site_series: HashMap<SiteKey, SiteSeries>,
    generation: u64,
    series_cap: usize,

    pub(super) shown: Shown,
    /// Indices into `shown.totals.sites`, filtered and sorted.
    pub(super) site_order: Vec<usize>,
    /// Indices into `shown.totals.pools`, filtered and sorted.
    pub(super) pool_order: Vec<usize>,
    pub(super) site_sort: Sort<SiteColumn>,
    pub(super) pool_sort: Sort<PoolColumn>,
    pub(super) sites_pos: ListPos,
    pub(super) pools_pos: ListPos,
    /// The applied filter.
    pub(super) filter: String,
    /// The filter being typed, while the prompt is open.
    pub(super) filter_input: Option<String>,

    pub(super) tab: Tab,
    pub(super) help: bool,
    pub(super) detail: Option<Detail>,
    pub(super) site_detail: Option<SiteDetail>,
    /// Scroll offset of the help screen or the detail view's list.
    pub(super) scroll: usize,
    /// Rows of the current list or scrollable pane, as last laid out.
    page_rows: usize,

    pub(super) paused: bool,
    /// The compiler's escape analysis, once it has run.
    pub(super) escape: Option<Arc<crate::escape::Analysis>>,
    pub(super) exited: Option<String>,
    pub(super) status: Option<Status>,
    quit: bool,
}

impl App {
    #[must_use]
    pub fn new(info: TargetInfo, opts: TuiOptions) -> Self {
        let refresh = opts.refresh.as_secs_f64().max(0.01);
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "clamped to 10..=600"
        )]
        let series_cap = (60.0 / refresh).ceil().clamp(10.0, 600.0) as usize;
        let status = (!info.warnings.is_empty()).then(|| Status {
            text: info.warnings.join("; "),
            error: true,
        });
        App {
            info,
            opts,
            history: VecDeque::new(),
            baseline: None,
            totals_series: VecDeque::new(),
            site_series: HashMap::new(),
            generation: 0,
            series_cap,
            shown: Shown::default(),
            site_order: Vec::new(),
            pool_order: Vec::new(),
            site_sort: Sort::by(SiteColumn::BytesRate),
            pool_sort: Sort::by(PoolColumn::GetsRate),
            sites_pos: ListPos::default(),
            pools_pos: ListPos::default(),
            filter: String::new(),
            filter_input: None,
            tab: Tab::Sites,
            help: false,
            detail: None,
            site_detail: None,
            scroll: 0,
            page_rows: 10,
            paused: false,
            escape: None,
            exited: None,
            status,
            quit: false,
        }
    }

    /// Whether the user asked to quit.
    #[must_use]
    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// The redraw interval.
    #[must_use]
    pub fn refresh(&self) -> Duration {
        self.opts.refresh
    }

    /// What is on screen.
    #[must_use]
    pub fn shown(&self) -> &Shown {
        &self.shown
    }

    /// Where keys go.
    #[must_use]
    pub fn context(&self) -> Context {
        if self.filter_input.is_some() {
            Context::Filter
        } else if self.help {
            Context::Help
        } else {
            match (&self.detail, self.tab) {
                (Some(Detail::Site(_)), _) => Context::SiteDetail,
                (Some(Detail::Pool(_)), _) => Context::PoolDetail,
                (None, Tab::Sites) => Context::Sites,
                (None, Tab::Pools) => Context::Pools,
            }
        }
    }

    /// Tells the app how many rows the current list or pane has on screen
    /// (for paging); called before each draw.
    pub fn set_page_rows(&mut self, rows: usize) {
        self.page_rows = rows.max(1);
        let page = self.page_rows;
        let (n_sites, n_pools) = (self.site_order.len(), self.pool_order.len());
        self.sites_pos.set(self.sites_pos.selected, n_sites, page);
        self.pools_pos.set(self.pools_pos.selected, n_pools, page);
    }

    /// Ingests a message from the session.
    pub fn on_feed(&mut self, msg: Feed) {
        match msg {
            Feed::Snapshot(snap) => {
                if self.exited.is_some() {
                    return;
                }
                self.ingest(*snap);
                if !self.paused {
                    self.rebuild();
                }
            }
            Feed::TargetExited(why) => {
                if self.exited.is_none() {
                    self.exited = Some(why);
                    self.paused = false;
                    self.rebuild();
                }
            }
            Feed::Notice(text) => self.status = Some(Status { text, error: false }),
            Feed::ModeSwitch { mode, notice } => {
                self.info.mode = Some(mode);
                self.status = Some(Status {
                    text: notice,
                    error: false,
                });
            }
            Feed::Escape(a) => {
                let mut warnings = a.warnings.clone();
                if let Some(t) = self.history.back() {
                    warnings.extend(crate::escape::report::mismatch_warning(&a, t));
                }
                self.status = Some(if warnings.is_empty() {
                    Status {
                        text: format!(
                            "escape analysis ready ({} heap decision{}): Enter on a site shows why",
                            a.index.heap_decisions(),
                            if a.index.heap_decisions() == 1 {
                                ""
                            } else {
                                "s"
                            }
                        ),
                        error: false,
                    }
                } else {
                    Status {
                        text: warnings.join("; "),
                        error: true,
                    }
                });
                self.escape = Some(a);
                self.refresh_detail();
            }
        }
    }

    /// The session's channel closed without saying why.
    pub fn on_feed_closed(&mut self) {
        if self.exited.is_none() {
            self.on_feed(Feed::TargetExited("tracing stopped".to_owned()));
        }
    }

    /// Applies a user action.
    pub fn handle(&mut self, action: Action) {
        match action {
            Action::Quit => self.quit = true,
            Action::Back => {
                if self.help {
                    self.help = false;
                    self.scroll = 0;
                } else if self.detail.is_some() {
                    self.close_detail();
                } else if !self.filter.is_empty() {
                    self.filter.clear();
                    self.reorder();
                } else {
                    self.quit = true;
                }
            }
            Action::ToggleHelp => {
                self.help = !self.help;
                self.scroll = 0;
            }
            Action::SwitchView => {
                self.close_detail();
                self.tab = match self.tab {
                    Tab::Sites => Tab::Pools,
                    Tab::Pools => Tab::Sites,
                };
            }
            Action::SortNext | Action::SortReverse => {
                let next = action == Action::SortNext;
                match self.tab {
                    Tab::Sites if next => self.site_sort.next(),
                    Tab::Sites => self.site_sort.descending = !self.site_sort.descending,
                    Tab::Pools if next => self.pool_sort.next(),
                    Tab::Pools => self.pool_sort.descending = !self.pool_sort.descending,
                }
                self.reorder();
            }
            Action::StartFilter => self.filter_input = Some(self.filter.clone()),
            Action::FilterInput(c) => {
                if let Some(f) = &mut self.filter_input {
                    f.push(c);
                }
            }
            Action::FilterBackspace => {
                if let Some(f) = &mut self.filter_input {
                    f.pop();
                }
            }
            Action::FilterApply => {
                if let Some(f) = self.filter_input.take() {
                    f.trim().clone_into(&mut self.filter);
                    self.sites_pos = ListPos::default();
                    self.pools_pos = ListPos::default();
                    self.reorder();
                }
            }
            Action::FilterClear => {
                self.filter_input = None;
                self.filter.clear();
                self.reorder();
            }
            Action::OpenDetail => self.open_detail(),
            Action::Up
            | Action::Down
            | Action::PageUp
            | Action::PageDown
            | Action::Top
            | Action::Bottom => {
                self.navigate(action);
            }
            Action::TogglePause => {
                self.paused = !self.paused;
                if !self.paused {
                    self.rebuild();
                }
            }
            Action::Reset => self.reset(),
            Action::Export => self.export(),
        }
    }

    fn navigate(&mut self, action: Action) {
        let page = self.page_rows;
        match self.context() {
            Context::Sites => self.sites_pos.nav(action, self.site_order.len(), page),
            Context::Pools => self.pools_pos.nav(action, self.pool_order.len(), page),
            Context::SiteDetail | Context::PoolDetail | Context::Help => {
                let len = self.scroll_len();
                let mut pos = ListPos {
                    selected: self.scroll,
                    offset: 0,
                };
                pos.nav(action, len, page);
                self.scroll = pos.selected;
            }
            Context::Filter => {}
        }
    }

    /// Number of lines the scrollable pane of the current screen has.
    fn scroll_len(&self) -> usize {
        if self.help {
            return KEYMAP.len();
        }
        match &self.detail {
            Some(Detail::Site(_)) => self.site_detail.as_ref().map_or(0, |d| d.stack.len()),
            Some(Detail::Pool(key)) => self.pool(*key).map_or(0, |(p, _)| p.callers.len()),
            None => 0,
        }
    }

    /// The pool with this key among the shown totals, with its index.
    #[must_use]
    pub fn pool(&self, key: PoolKey) -> Option<(&PoolSnapshot, usize)> {
        self.shown
            .totals
            .pools
            .iter()
            .enumerate()
            .find(|(_, p)| p.pool == key)
            .map(|(i, p)| (p, i))
    }

    /// The site under the cursor, as an index into `shown.totals.sites`.
    #[must_use]
    pub fn selected_site(&self) -> Option<usize> {
        self.site_order.get(self.sites_pos.selected).copied()
    }

    /// The pool under the cursor, as an index into `shown.totals.pools`.
    #[must_use]
    pub fn selected_pool(&self) -> Option<usize> {
        self.pool_order.get(self.pools_pos.selected).copied()
    }

    fn open_detail(&mut self) {
        self.scroll = 0;
        match self.tab {
            Tab::Sites => {
                if let Some(i) = self.selected_site() {
                    self.detail = Some(Detail::Site(self.shown.totals.sites[i].key.clone()));
                    self.site_detail = None;
                    self.refresh_detail();
                }
            }
            Tab::Pools => {
                if let Some(i) = self.selected_pool() {
                    self.detail = Some(Detail::Pool(self.shown.totals.pools[i].pool));
                }
            }
        }
    }

    fn close_detail(&mut self) {
        self.detail = None;
        self.site_detail = None;
        self.scroll = 0;
    }

    fn reset(&mut self) {
        while self.history.len() > 1 {
            self.history.pop_front();
        }
        self.baseline = self.history.back().cloned();
        self.rebuild();
        self.status = Some(Status {
            text: "counters reset".to_owned(),
            error: false,
        });
    }

    fn ingest(&mut self, snap: Snapshot) {
        if self
            .history
            .back()
            .is_some_and(|prev| snap.elapsed < prev.elapsed)
        {
            // A new tracing session: nothing before it compares.
            self.history.clear();
            self.baseline = None;
            self.totals_series.clear();
            self.site_series.clear();
        }
        let dt = self
            .history
            .back()
            .map(|prev| (prev, snap.elapsed.saturating_sub(prev.elapsed)));
        let dt = match dt {
            Some((prev, dt)) if !dt.is_zero() => {
                let allocs = sample(snap.total_allocs.saturating_sub(prev.total_allocs), dt);
                let bytes = sample(snap.total_bytes.saturating_sub(prev.total_bytes), dt);
                push_capped(&mut self.totals_series, (allocs, bytes), self.series_cap);
                Some(dt)
            }
            _ => None,
        };
        self.update_site_series(&snap, dt);
        self.history.push_back(Arc::new(snap));
        let newest = self.history.back().map_or(Duration::ZERO, |s| s.elapsed);
        while self.history.len() > 2
            && newest.saturating_sub(self.history[1].elapsed) >= self.opts.rate_window
        {
            self.history.pop_front();
        }
    }

    fn update_site_series(&mut self, snap: &Snapshot, dt: Option<Duration>) {
        self.generation += 1;
        let (generation, cap) = (self.generation, self.series_cap);
        for s in &snap.sites {
            let since = |last: u64| dt.map(|dt| sample(s.allocs.saturating_sub(last), dt));
            if let Some(e) = self.site_series.get_mut(&s.key) {
                if let Some(x) = since(e.last) {
                    push_capped(&mut e.samples, x, cap);
                }
                e.last = s.allocs;
                e.seen = generation;
            } else {
                let mut e = SiteSeries {
                    last: s.allocs,
                    seen: generation,
                    samples: VecDeque::new(),
                };
                if let Some(x) = since(0) {
                    e.samples.push_back(x);
                }
                self.site_series.insert(s.key.clone(), e);
            }
        }
        for e in self.site_series.values_mut() {
            if e.seen != generation {
                e.seen = generation;
                e.last = 0;
                if dt.is_some() {
                    push_capped(&mut e.samples, 0, cap);
                }
            }
        }
    }

    /// Recomputes what is shown from the newest snapshot.
    fn rebuild(&mut self) {
        let Some(newest) = self.history.back() else {
            self.shown = Shown::default();
            self.reorder();
            return;
        };
        let (totals, start) = match &self.baseline {
            Some(b) => (Arc::new(newest.since(b)), b.elapsed),
            None => (newest.clone(), Duration::ZERO),
        };
        // Rates over the history kept (the rate window), for the shown rows
        // (the newest snapshot's, or fewer since a reset).
        let rates = (self.history.len() >= 2)
            .then(|| newest.since(&self.history[0]).rates())
            .flatten();
        let r = rates.as_ref();
        let shown = Shown {
            start,
            now: newest.elapsed,
            rates_known: rates.is_some(),
            site_rates: aligned(&totals.sites, |s| r?.sites.get(&s.key).copied()),
            pool_rates: aligned(&totals.pools, |p| r?.pools.get(&p.pool).copied()),
            allocs_rate: r.map_or(0.0, |r| r.allocs),
            bytes_rate: r.map_or(0.0, |r| r.bytes),
            hits_rate: r.map_or(0.0, |r| r.hits),
            spark_allocs: self.totals_series.iter().map(|s| s.0).collect(),
            spark_bytes: self.totals_series.iter().map(|s| s.1).collect(),
            has_data: true,
            totals,
        };
        self.shown = shown;
        self.reorder();
        self.refresh_detail();
    }

    /// Re-filters and re-sorts the shown rows.
    fn reorder(&mut self) {
        let needle = Needle::new(&self.filter);
        let t = &self.shown.totals;
        let rates = &self.shown.site_rates;
        let rate = |i: usize| rates.get(i).copied().unwrap_or_default();

        let mut order = std::mem::take(&mut self.site_order);
        order.clear();
        order.extend(
            (0..t.sites.len()).filter(|&i| needle.is_empty() || needle.matches_site(&t.sites[i])),
        );
        let sort = self.site_sort;
        order.sort_by(|&a, &b| cmp_sites(sort, (&t.sites[a], rate(a)), (&t.sites[b], rate(b))));
        self.site_order = order;

        let pool_rates = &self.shown.pool_rates;
        let prow = |i: usize| (&t.pools[i], pool_rates.get(i).copied().unwrap_or_default());
        let mut order = std::mem::take(&mut self.pool_order);
        order.clear();
        order.extend(
            (0..t.pools.len()).filter(|&i| needle.is_empty() || needle.matches_pool(&t.pools[i])),
        );
        let sort = self.pool_sort;
        order.sort_by(|&a, &b| cmp_pools(sort, prow(a), prow(b)));
        self.pool_order = order;

        self.set_page_rows(self.page_rows);
    }

    /// Recomputes the open site detail from the shown totals.
    fn refresh_detail(&mut self) {
        let Some(Detail::Site(key)) = &self.detail else {
            return;
        };
        let t = &self.shown.totals;
        let (types, size_hist, this) = types_at_line(&self.shown, key);
        // A site with nothing since the last reset keeps what was known of it.
        let known = this.map(|(_, s)| s).or_else(|| {
            self.history
                .back()
                .and_then(|n| n.sites.iter().find(|s| s.key == *key))
        });
        let stack = match (known, &self.site_detail) {
            (Some(s), _) => s.stack.clone(),
            (None, Some(d)) if d.key == *key => d.stack.clone(),
            (None, _) => Arc::from(Vec::<Frame>::new()),
        };
        let pool_new_func = known.and_then(|s| s.pool_new_func.clone());
        let pool_name = pool_new_func
            .as_deref()
            .and_then(|f| crate::stats::pool_with_new(&t.pools, f))
            .map(|i| t.pools[i].name.clone());
        let (allocs, bytes, rate) = match this {
            Some((i, s)) => (
                s.allocs,
                s.bytes,
                self.shown.site_rates.get(i).copied().unwrap_or_default(),
            ),
            None => (0, 0, SiteRate::default()),
        };
        let series = self
            .site_series
            .get(key)
            .map(|s| s.samples.iter().copied().collect())
            .unwrap_or_default();
        let (escape, suggestions) = match &self.escape {
            Some(a) => {
                let facts = crate::escape::suggest::SiteFacts {
                    type_name: &key.type_name,
                    allocs,
                    bytes,
                    allocs_per_s: self.shown.rates_known.then_some(rate.allocs),
                    from_pool: pool_new_func.is_some(),
                };
                escape_lines(a, key, &facts)
            }
            None => (Vec::new(), Vec::new()),
        };
        self.site_detail = Some(SiteDetail {
            key: key.clone(),
            stack,
            allocs,
            bytes,
            rate,
            share: crate::stats::share(bytes, t.total_bytes),
            pool_new_func,
            pool_name,
            types,
            escape,
            suggestions,
            size_hist,
            series,
        });
    }

    fn export(&mut self) {
        let what = match self.tab {
            Tab::Sites => "sites",
            Tab::Pools => "pools",
        };
        self.status = Some(match self.write_csv(what) {
            Ok((path, rows)) => Status {
                text: format!("wrote {rows} {what} to {}", path.display()),
                error: false,
            },
            Err(e) => Status {
                text: format!("export failed: {e:#}"),
                error: true,
            },
        });
    }

    /// Writes the rows of the current view (filter applied) with the schema
    /// of `record`; returns the path and the number of rows.
    fn write_csv(&self, what: &str) -> anyhow::Result<(PathBuf, usize)> {
        let t = &self.shown.totals;
        let mut snap = Snapshot {
            elapsed: t.elapsed,
            sites: Vec::new(),
            pools: Vec::new(),
            counters: t.counters,
            total_allocs: t.total_allocs,
            total_bytes: t.total_bytes,
        };
        let rows = match self.tab {
            Tab::Sites => {
                snap.sites = pick_rows(&self.site_order, &t.sites);
                snap.sites.len()
            }
            Tab::Pools => {
                snap.pools = pick_rows(&self.pool_order, &t.pools);
                snap.pools.len()
            }
        };
        let dir = std::path::absolute(&self.opts.export_dir)
            .with_context(|| format!("failed to resolve {}", self.opts.export_dir.display()))?;
        let path = export_path(&dir, what, unix_now());
        let mut file = AtomicFile::create(&path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        match self.tab {
            Tab::Sites => {
                let escape = self
                    .escape
                    .as_ref()
                    .map(|a| crate::escape::cmd::column(Some(a.clone())));
                let mut w = SitesCsv::with_columns(file.writer(), escape, self.info.mode_column)?;
                w.write_window(self.shown.start, &snap)?;
                w.flush()?;
            }
            Tab::Pools => {
                let mut w = PoolsCsv::new(file.writer())?;
                w.write_window(self.shown.start, &snap)?;
                w.flush()?;
            }
        }
        let path = file
            .commit()
            .with_context(|| format!("failed to write {}", path.display()))?;
        Ok((path, rows))
    }
}

/// The types allocated at `key`'s function:line (most bytes first), their
/// size distribution, and `key`'s own row among the shown sites.
fn types_at_line<'a>(
    shown: &'a Shown,
    key: &SiteKey,
) -> (
    Vec<TypeRow>,
    [u64; SIZE_BUCKETS],
    Option<(usize, &'a SiteStats)>,
) {
    let mut types = Vec::new();
    let mut size_hist = [0u64; SIZE_BUCKETS];
    let mut this = None;
    for (i, s) in shown.totals.sites.iter().enumerate() {
        let k = &s.key;
        if k.line == key.line && k.function == key.function && k.file == key.file {
            for (b, n) in s.size_hist.iter() {
                size_hist[b] += n;
            }
            types.push(TypeRow {
                type_name: k.type_name.clone(),
                allocs: s.allocs,
                bytes: s.bytes,
                rate: shown.site_rates.get(i).copied().unwrap_or_default(),
            });
            if k.type_name == key.type_name {
                this = Some((i, s));
            }
        }
    }
    types.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then_with(|| a.type_name.cmp(&b.type_name))
    });
    (types, size_hist, this)
}

/// `rows[i]` for each `i` of `order`.
fn pick_rows<T: Clone>(order: &[usize], rows: &[T]) -> Vec<T> {
    order.iter().map(|&i| rows[i].clone()).collect()
}

/// The detail view's "why on the heap" lines and suggestions for a site.
fn escape_lines(
    a: &crate::escape::Analysis,
    key: &SiteKey,
    facts: &crate::escape::suggest::SiteFacts<'_>,
) -> (Vec<String>, Vec<String>) {
    use crate::escape::SiteLookup;
    let found = a.index.lookup(key);
    let lines = match &found {
        SiteLookup::Found(e) => {
            let mut v = vec![format!("Why on the heap: {}", e.cause().label())];
            v.extend(e.lines());
            v
        }
        SiteLookup::Outside => {
            vec!["Why on the heap: unknown (outside the module: no escape analysis)".to_owned()]
        }
        SiteLookup::Unknown => vec![
            "Why on the heap: the compiler reported no heap decision on this line".to_owned(),
        ],
        SiteLookup::Runtime => vec![
            "Why on the heap: not an escape (the runtime's own object, allocated while this line ran)"
                .to_owned(),
        ],
        SiteLookup::Mismatch(why) => vec![format!(
            "Why on the heap: unknown: the binary does not match the source ({why})"
        )],
    };
    let esc = match &found {
        SiteLookup::Found(e) => Some(e.as_ref()),
        _ => None,
    };
    let suggestions = if matches!(found, SiteLookup::Outside | SiteLookup::Runtime) {
        Vec::new()
    } else {
        crate::escape::suggest::site_suggestions(esc, facts)
    };
    (lines, suggestions)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `dir/allocwatch-<what>-<unix time>.csv`, with `-2`, `-3`… when that exists.
fn export_path(dir: &Path, what: &str, time: u64) -> PathBuf {
    let first = dir.join(format!("allocwatch-{what}-{time}.csv"));
    if !first.exists() {
        return first;
    }
    (2..1000)
        .map(|n| dir.join(format!("allocwatch-{what}-{time}-{n}.csv")))
        .find(|p| !p.exists())
        .unwrap_or(first)
}
