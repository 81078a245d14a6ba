//! Dashboard tests without a terminal: snapshots of `TestBackend` buffers,
//! key handling through the keymap, export, tiny terminals, the event loop.

use std::path::Path;
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;

use super::*;
use crate::export::csv::{POOLS_HEADER, SITES_HEADER};
use crate::format;

fn new_app(export_dir: &Path) -> App {
    let opts = TuiOptions {
        export_dir: export_dir.to_path_buf(),
        ..TuiOptions::default()
    };
    App::new(synth::info(), opts)
}

/// An app that has seen the synthetic data at 10 s and 11 s: rates are the
/// synthetic per-second numbers exactly.
fn fed() -> App {
    let mut app = new_app(Path::new("/nonexistent"));
    app.on_feed(Feed::Snapshot(Box::new(synth::at(10))));
    app.on_feed(Feed::Snapshot(Box::new(synth::at(11))));
    app
}

fn terminal(w: u16, h: u16) -> Terminal<TestBackend> {
    let Ok(t) = Terminal::new(TestBackend::new(w, h));
    t
}

fn screen(app: &mut App, w: u16, h: u16) -> String {
    let mut t = terminal(w, h);
    let Ok(()) = draw(&mut t, app);
    t.backend().to_string()
}

/// Presses a key through the keymap, like the event loop does.
fn press(app: &mut App, code: KeyCode) {
    press_mod(app, code, KeyModifiers::NONE);
}

fn press_mod(app: &mut App, code: KeyCode, m: KeyModifiers) {
    if let Some(a) = keymap::action_for(app.context(), &KeyEvent::new(code, m)) {
        app.handle(a);
    }
}

fn type_text(app: &mut App, s: &str) {
    for c in s.chars() {
        press(app, KeyCode::Char(c));
    }
}

/// Function names of the rows in display order.
fn rows(app: &App) -> Vec<String> {
    let t = &app.shown().totals;
    app.site_order
        .iter()
        .map(|&i| format!("{} {}", t.sites[i].key.function, t.sites[i].key.type_name))
        .collect()
}

fn snap_both(name: &str, app: &mut App) {
    for (w, h) in [(80, 24), (120, 40)] {
        let out = screen(app, w, h);
        insta::with_settings!({
            filters => vec![(r"allocwatch-(sites|pools)-\d+", "allocwatch-$1-[UNIX]")],
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("{name}_{w}x{h}"), out);
        });
    }
}

#[test]
fn snapshot_empty() {
    let mut app = new_app(Path::new("/nonexistent"));
    snap_both("empty", &mut app);
}

#[test]
fn snapshot_sites() {
    snap_both("sites", &mut fed());
}

#[test]
fn snapshot_pools() {
    let mut app = fed();
    press(&mut app, KeyCode::Tab);
    snap_both("pools", &mut app);
}

/// What the kernel sent one by one or lost shows in the status line, the
/// counters that are not zero only.
#[test]
fn snapshot_kernel_counters() {
    let mut app = new_app(Path::new("/nonexistent"));
    for t in [10, 11] {
        let mut snap = synth::at(t);
        snap.counters.lost = 2 * t;
        snap.counters.lost_stacks = t;
        snap.counters.agg_full = 3 * t;
        snap.counters.key_truncated = 1200 * t;
        app.on_feed(Feed::Snapshot(Box::new(snap)));
    }
    let out = screen(&mut app, 120, 40);
    assert!(
        out.contains("map full 33 · deep keys 13.2k · stacks lost 11\""),
        "{out}"
    );
    assert!(!out.contains("other pids"), "{out}");
    snap_both("kernel_counters", &mut app);
    // A status message keeps its room: the counters give way.
    let text = "a status message that fills most of an eighty-column line ....";
    app.status = Some(Status {
        text: text.to_owned(),
        error: false,
    });
    let out = screen(&mut app, 80, 24);
    assert!(out.contains(text) && !out.contains("map full"), "{out}");
    assert!(screen(&mut app, 120, 40).contains("map full 33"));
}

#[test]
fn snapshot_help() {
    let mut app = fed();
    press(&mut app, KeyCode::Char('?'));
    snap_both("help", &mut app);
}

#[test]
fn snapshot_site_detail() {
    let mut app = fed();
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.context(), Context::SiteDetail);
    snap_both("site_detail", &mut app);
}

#[test]
fn snapshot_site_detail_escape() {
    let mut app = fed();
    app.on_feed(Feed::Escape(std::sync::Arc::new(
        crate::escape::sample_analysis(),
    )));
    press(&mut app, KeyCode::Enter);
    let d = app.site_detail.as_ref().unwrap();
    assert_eq!(d.escape[0], "Why on the heap: unknown size make");
    assert!(
        d.suggestions[0].starts_with("suggestion: pool candidate"),
        "{:?}",
        d.suggestions
    );
    snap_both("site_detail_escape", &mut app);
    // A site outside the module says so; the CSV export gets the column.
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "json");
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Enter);
    let d = app.site_detail.as_ref().unwrap();
    assert!(d.escape[0].contains("outside the module"), "{:?}", d.escape);
    assert!(d.suggestions.is_empty());
}

#[test]
fn snapshot_site_detail_pool_miss() {
    let mut app = fed();
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "newbuffer");
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Enter);
    let out = screen(&mut app, 80, 24);
    assert!(
        out.contains("allocated by the New of pool main.bufPool (pool misses)"),
        "{out}"
    );
    insta::with_settings!({ omit_expression => true }, {
        insta::assert_snapshot!("site_detail_pool_miss_80x24", out);
    });
}

#[test]
fn snapshot_pool_detail() {
    let mut app = fed();
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.context(), Context::PoolDetail);
    snap_both("pool_detail", &mut app);
}

#[test]
fn snapshot_exited() {
    let mut app = fed();
    app.on_feed(Feed::TargetExited(
        "pid 4242 exited with status 0".to_owned(),
    ));
    snap_both("exited", &mut app);
    // Frozen: later snapshots are ignored, the numbers stay browsable.
    app.on_feed(Feed::Snapshot(Box::new(synth::at(30))));
    assert_eq!(app.shown().now, Duration::from_secs(11));
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.context(), Context::SiteDetail);
    assert!(
        screen(&mut app, 80, 24)
            .contains("target exited: pid 4242 exited with status 0 — press q to quit")
    );
}

#[test]
fn sort_cycles_columns_and_flips_direction() {
    let mut app = fed();
    assert_eq!(
        app.site_sort,
        Sort {
            column: SiteColumn::BytesRate,
            descending: true
        }
    );
    // handleOrder []uint8: 1200/s × 896 B on average is the most bytes/s.
    assert_eq!(rows(&app)[0], "main.(*Server).handleOrder []uint8");

    let mut seen = vec![app.site_sort.column];
    for _ in 0..SiteColumn::ALL.len() {
        press(&mut app, KeyCode::Char('s'));
        seen.push(app.site_sort.column);
        // Names sort A→Z, numbers largest first.
        assert_eq!(
            app.site_sort.descending,
            app.site_sort.column.descending_by_default()
        );
    }
    assert_eq!(
        seen.first(),
        seen.last(),
        "s cycles back to the first column"
    );
    assert_eq!(seen.len() - 1, SiteColumn::ALL.len());

    while app.site_sort.column != SiteColumn::Function {
        press(&mut app, KeyCode::Char('s'));
    }
    assert!(!app.site_sort.descending);
    assert_eq!(
        rows(&app)[0],
        "encoding/json.(*decodeState).object map[string]interface {}"
    );
    assert!(screen(&mut app, 120, 40).contains("Function↑"));

    press_mod(&mut app, KeyCode::Char('S'), KeyModifiers::SHIFT);
    assert!(app.site_sort.descending);
    assert_eq!(rows(&app)[0], "strings.(*Builder).grow []uint8");
    assert!(screen(&mut app, 120, 40).contains("Function↓"));

    // Allocs/s: strings.Builder (2500/s) first.
    while app.site_sort.column != SiteColumn::AllocsRate {
        press(&mut app, KeyCode::Char('s'));
    }
    assert_eq!(rows(&app)[0], "strings.(*Builder).grow []uint8");
    press(&mut app, KeyCode::Char('S'));
    assert_eq!(rows(&app)[0], "main.newBuffer *bytes.Buffer");
}

#[test]
fn pools_sort_too() {
    let mut app = fed();
    press(&mut app, KeyCode::Tab);
    let first = |app: &App| app.shown().totals.pools[app.pool_order[0]].name.to_string();
    assert_eq!(first(&app), "main.bufPool");
    while app.pool_sort.column != PoolColumn::HitRatio {
        press(&mut app, KeyCode::Char('s'));
    }
    assert_eq!(first(&app), "net/http.bufioReaderPool");
    press(&mut app, KeyCode::Char('S'));
    assert_eq!(first(&app), "main.scratchPool");
}

#[test]
fn filter_narrows_rows() {
    let mut app = fed();
    assert_eq!(app.site_order.len(), 6);
    press(&mut app, KeyCode::Char('/'));
    assert_eq!(app.context(), Context::Filter);
    // Typing in the prompt does not trigger bindings (q does not quit).
    type_text(&mut app, "Qjson");
    assert!(!app.should_quit());
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Home); // unbound in the prompt: ignored
    press(&mut app, KeyCode::Char('n'));
    assert_eq!(app.site_order.len(), 6, "Enter applies, not typing");
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Backspace);
    type_text(&mut app, "JSON");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.context(), Context::Sites);
    assert_eq!(
        rows(&app),
        vec!["encoding/json.(*decodeState).object map[string]interface {}"]
    );
    let out = screen(&mut app, 80, 24);
    assert!(
        out.contains("Sites 1/6") && out.contains("filter \"JSON\""),
        "{out}"
    );

    // Types and file:line match too.
    press(&mut app, KeyCode::Char('/'));
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.site_order.len(), 6, "Esc in the prompt clears");
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "[]uint8");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.site_order.len(), 2);
    press(&mut app, KeyCode::Char('/'));
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Backspace);
    type_text(&mut app, "orders.go:88");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.site_order.len(), 2);

    // The filter survives updates; Esc outside the prompt clears it first.
    app.on_feed(Feed::Snapshot(Box::new(synth::at(12))));
    assert_eq!(app.site_order.len(), 2);
    press(&mut app, KeyCode::Esc);
    assert!(!app.should_quit());
    assert_eq!(app.site_order.len(), 6);
    press(&mut app, KeyCode::Esc);
    assert!(app.should_quit());
}

#[test]
fn filter_applies_to_pools() {
    let mut app = fed();
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "render");
    press(&mut app, KeyCode::Enter);
    let names: Vec<_> = app
        .pool_order
        .iter()
        .map(|&i| app.shown().totals.pools[i].name.to_string())
        .collect();
    assert_eq!(names, vec!["main.scratchPool"], "callers match");
}

#[test]
fn pause_freezes_display_while_feed_continues() {
    let mut app = fed();
    let before = screen(&mut app, 120, 40);
    press(&mut app, KeyCode::Char(' '));
    assert!(screen(&mut app, 120, 40).contains("PAUSED"));
    let paused = screen(&mut app, 120, 40);
    app.on_feed(Feed::Snapshot(Box::new(synth::at(12))));
    app.on_feed(Feed::Snapshot(Box::new(synth::at(13))));
    assert_eq!(app.shown().now, Duration::from_secs(11));
    assert_eq!(screen(&mut app, 120, 40), paused, "nothing on screen moved");
    assert_ne!(before, paused);
    // Sorting still works on the frozen numbers.
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.shown().now, Duration::from_secs(11));
    press(&mut app, KeyCode::Char(' '));
    assert_eq!(app.shown().now, Duration::from_secs(13));
    assert_eq!(app.shown().totals.total_allocs, synth::at(13).total_allocs);
    assert!(!screen(&mut app, 120, 40).contains("PAUSED"));
}

#[test]
fn switch_views() {
    let mut app = fed();
    assert_eq!(app.context(), Context::Sites);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.context(), Context::Pools);
    assert!(screen(&mut app, 80, 24).contains("main.bufPool"));
    press(&mut app, KeyCode::BackTab);
    assert_eq!(app.context(), Context::Sites);
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Char('?'));
    assert_eq!(app.context(), Context::Help);
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.context(), Context::SiteDetail);
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.context(), Context::Sites);
    assert!(!app.should_quit());
}

#[test]
fn reset_zeroes_then_counts_from_there() {
    let mut app = fed();
    press(&mut app, KeyCode::Char('r'));
    let s = app.shown();
    assert_eq!(
        (
            s.totals.total_allocs,
            s.totals.total_bytes,
            s.totals.sites.len()
        ),
        (0, 0, 0)
    );
    assert!(
        s.totals
            .pools
            .iter()
            .all(|p| p.stats == crate::stats::PoolStats::default())
    );
    assert!(!s.rates_known);
    let out = screen(&mut app, 80, 24);
    assert!(
        out.contains("since reset 0 allocs, 0B") && out.contains("no allocations since the reset"),
        "{out}"
    );

    app.on_feed(Feed::Snapshot(Box::new(synth::at(13))));
    let s = app.shown();
    let (t11, t13) = (synth::at(11), synth::at(13));
    assert_eq!(s.totals.total_allocs, t13.total_allocs - t11.total_allocs);
    assert_eq!(s.start, Duration::from_secs(11));
    assert!(s.rates_known);
    // Rates over the two seconds since the reset: the synthetic per-second rates.
    assert!((s.allocs_rate - (t13.total_allocs - t11.total_allocs) as f64 / 2.0).abs() < 1e-9);
}

#[test]
fn rates_use_the_window() {
    let mut app = new_app(Path::new("/nonexistent"));
    app.on_feed(Feed::Snapshot(Box::new(synth::at(1))));
    assert!(!app.shown().rates_known);
    for t in 2..=20 {
        app.on_feed(Feed::Snapshot(Box::new(synth::at(t))));
    }
    let s = app.shown();
    let per_s = synth::at(1).total_allocs as f64;
    assert!(
        (s.allocs_rate - per_s).abs() < 1e-6,
        "{} vs {per_s}",
        s.allocs_rate
    );
    assert_eq!(s.spark_allocs.len(), 19);
    assert!(
        s.spark_allocs
            .iter()
            .all(|&x| x == synth::at(1).total_allocs)
    );
    // The pool of misses: main.newBuffer's allocations.
    let i = s
        .totals
        .pools
        .iter()
        .position(|p| &*p.name == "main.bufPool")
        .unwrap();
    assert_eq!(
        s.totals.pools[i].stats.miss_cost().map(|c| c.0),
        Some(40 * 20)
    );
    assert!((s.pool_rates[i].gets - 1000.0).abs() < 1e-6);
}

#[test]
fn export_writes_csv_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = new_app(dir.path());
    app.on_feed(Feed::Snapshot(Box::new(synth::at(10))));
    app.on_feed(Feed::Snapshot(Box::new(synth::at(11))));

    press(&mut app, KeyCode::Char('e'));
    let status = app.status.clone().unwrap();
    assert!(!status.error, "{}", status.text);
    let path = status.text.rsplit(" to ").next().unwrap().to_owned();
    assert!(
        path.starts_with(dir.path().to_str().unwrap()) && path.contains("allocwatch-sites-"),
        "{path}"
    );
    assert!(screen(&mut app, 120, 40).contains(&path));
    let mut r = csv::Reader::from_path(&path).unwrap();
    assert_eq!(
        r.headers().unwrap(),
        &csv::StringRecord::from(SITES_HEADER.to_vec())
    );
    let recs: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(recs.len(), 6);
    assert_eq!(&recs[0][2], "main.(*Server).handleOrder");
    assert_eq!(&recs[0][1], "11.000");

    // A second export in the same second does not overwrite the first.
    press(&mut app, KeyCode::Char('e'));
    let second = app.status.clone().unwrap().text;
    assert!(!second.ends_with(&path), "{second}");

    // The current view, filtered.
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "bufPool");
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Char('e'));
    let text = app.status.clone().unwrap().text;
    assert!(
        text.starts_with("wrote 1 pools to") && text.contains("allocwatch-pools-"),
        "{text}"
    );
    let path = text.rsplit(" to ").next().unwrap();
    let mut r = csv::Reader::from_path(path).unwrap();
    assert_eq!(
        r.headers().unwrap(),
        &csv::StringRecord::from(POOLS_HEADER.to_vec())
    );
    let recs: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(recs.len(), 1);
    assert_eq!(&recs[0][2], "main.bufPool");
    assert_eq!(&recs[0][4], "11000");

    // Only finished files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn export_failure_is_shown() {
    let mut app = fed();
    press(&mut app, KeyCode::Char('e'));
    let status = app.status.clone().unwrap();
    assert!(
        status.error
            && status
                .text
                .starts_with("export failed: failed to create /nonexistent/"),
        "{}",
        status.text
    );
}

#[test]
fn scrolling_keeps_the_selection_visible() {
    let mut app = new_app(Path::new("/nonexistent"));
    app.on_feed(Feed::Snapshot(Box::new(synth::many(500, 1))));
    app.on_feed(Feed::Snapshot(Box::new(synth::many(500, 2))));
    let mut t = terminal(80, 24);
    let Ok(()) = draw(&mut t, &mut app);
    let page = 24 - 3 - 1 - 1 - 1 - 1; // header, tabs, table header, status, footer
    press(&mut app, KeyCode::PageDown);
    assert_eq!(app.sites_pos.selected, page);
    press(&mut app, KeyCode::Char('j'));
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Char('k'));
    assert_eq!(app.sites_pos.selected, page + 1);
    press(&mut app, KeyCode::End);
    assert_eq!(app.sites_pos.selected, 499);
    let Ok(()) = draw(&mut t, &mut app);
    let sel = app.selected_site().unwrap();
    let name = format::short_name(&app.shown().totals.sites[sel].key.function).into_owned();
    let out = t.backend().to_string();
    assert!(out.contains(&name[..12]), "{name} not in\n{out}");
    press(&mut app, KeyCode::PageUp);
    assert_eq!(app.sites_pos.selected, 499 - page);
    press(&mut app, KeyCode::Char('g'));
    assert_eq!(app.sites_pos, ListPos::default());
    press(&mut app, KeyCode::Up);
    assert_eq!(app.sites_pos.selected, 0);
}

#[test]
fn styles_flag_losses_and_hit_ratios() {
    let mut app = new_app(Path::new("/nonexistent"));
    let mut s = synth::at(10);
    s.counters.lost = 7;
    app.on_feed(Feed::Snapshot(Box::new(s)));
    press(&mut app, KeyCode::Tab);
    let mut t = terminal(120, 40);
    let Ok(()) = draw(&mut t, &mut app);
    let buf = t.backend().buffer();
    let find = |text: &str| -> (u16, u16) {
        for y in 0..buf.area.height {
            let line: String = (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol().to_owned())
                .collect();
            if let Some(i) = line.find(text) {
                let x = line[..i].chars().count();
                return (u16::try_from(x).unwrap(), y);
            }
        }
        panic!("{text} not on screen");
    };
    let (x, y) = find("lost 7");
    assert_eq!(buf[(x, y)].bg, Color::Red);
    // bufPool 0.96 green, bufioReaderPool 1.00 green, scratchPool 0.30 red.
    let (x, y) = find("0.96");
    assert_eq!(buf[(x, y)].fg, Color::Green);
    let (x, y) = find("0.30");
    assert_eq!(buf[(x, y)].fg, Color::Red);
    let mut yellow = synth::at(10);
    yellow.pools[0].stats.misses = yellow.pools[0].stats.gets / 3;
    let mut app = new_app(Path::new("/nonexistent"));
    app.on_feed(Feed::Snapshot(Box::new(yellow)));
    press(&mut app, KeyCode::Tab);
    let Ok(()) = draw(&mut t, &mut app);
    let buf = t.backend().buffer();
    let line: String = (0..buf.area.width)
        .map(|x| buf[(x, 5)].symbol().to_owned())
        .collect();
    let x = line[..line.find("0.67").unwrap()].chars().count();
    assert_eq!(buf[(u16::try_from(x).unwrap(), 5)].fg, Color::Yellow);
}

#[test]
fn tiny_terminals_do_not_panic() {
    let mut apps = vec![new_app(Path::new("/nonexistent")), fed()];
    let mut a = fed();
    press(&mut a, KeyCode::Enter);
    apps.push(a);
    let mut a = fed();
    press(&mut a, KeyCode::Tab);
    press(&mut a, KeyCode::Enter);
    apps.push(a);
    let mut a = fed();
    press(&mut a, KeyCode::Char('?'));
    apps.push(a);
    let mut a = fed();
    a.on_feed(Feed::TargetExited("gone".into()));
    press(&mut a, KeyCode::Char('/'));
    type_text(&mut a, "a very long filter text that does not fit anywhere");
    apps.push(a);
    for app in &mut apps {
        for (w, h) in [
            (1, 1),
            (2, 2),
            (10, 5),
            (29, 7),
            (30, 8),
            (31, 9),
            (40, 10),
            (80, 8),
            (8, 80),
            (200, 60),
        ] {
            let _ = screen(app, w, h);
            for code in [
                KeyCode::Down,
                KeyCode::PageDown,
                KeyCode::End,
                KeyCode::PageUp,
            ] {
                press(app, code);
                let _ = screen(app, w, h);
            }
        }
    }
    assert!(screen(&mut fed(), 10, 5).contains("allocwatc"));
}

#[tokio::test]
async fn event_loop_runs_until_quit() {
    let mut t = terminal(80, 24);
    let mut app = new_app(Path::new("/nonexistent"));
    let (feed_tx, feed_rx) = tokio::sync::mpsc::channel(8);
    let (key_tx, key_rx) = tokio::sync::mpsc::channel(8);
    feed_tx
        .send(Feed::Snapshot(Box::new(synth::at(10))))
        .await
        .unwrap();
    feed_tx
        .send(Feed::Notice("hello from the session".into()))
        .await
        .unwrap();
    let keys = async move {
        // Let the loop take the feed first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        key_tx
            .send(Ok(Event::Key(KeyEvent::new(
                KeyCode::Tab,
                KeyModifiers::NONE,
            ))))
            .await
            .unwrap();
        key_tx
            .send(Ok(Event::Key(KeyEvent::new(
                KeyCode::Char('q'),
                KeyModifiers::NONE,
            ))))
            .await
            .unwrap();
        key_tx
    };
    let (res, _keep) = tokio::join!(
        drive(&mut t, &mut app, feed_rx, key_rx, std::future::pending()),
        keys
    );
    res.unwrap();
    assert!(app.should_quit());
    assert_eq!(app.context(), Context::Pools);
    assert_eq!(app.shown().now, Duration::from_secs(10));
    let out = t.backend().to_string();
    assert!(
        out.contains("hello from the session") && out.contains("main.bufPool"),
        "{out}"
    );
    drop(feed_tx);
}

#[tokio::test]
async fn event_loop_stops_on_shutdown_and_survives_a_closed_feed() {
    let mut t = terminal(80, 24);
    let mut app = fed();
    let (feed_tx, feed_rx) = tokio::sync::mpsc::channel(8);
    drop(feed_tx);
    let (_key_tx, key_rx) = tokio::sync::mpsc::channel(8);
    let shutdown = tokio::time::sleep(Duration::from_millis(50));
    drive(&mut t, &mut app, feed_rx, key_rx, shutdown)
        .await
        .unwrap();
    assert!(!app.should_quit());
    assert!(
        t.backend()
            .to_string()
            .contains("target exited: tracing stopped")
    );
}

#[tokio::test]
async fn event_loop_reports_a_dead_key_reader() {
    let mut t = terminal(80, 24);
    let mut app = fed();
    let (_feed_tx, feed_rx) = tokio::sync::mpsc::channel(8);
    let (key_tx, key_rx) = tokio::sync::mpsc::channel(8);
    key_tx
        .send(Err(std::io::Error::other("tty gone")))
        .await
        .unwrap();
    let err = drive(&mut t, &mut app, feed_rx, key_rx, std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(format!("{err:#}"), "failed to read the terminal: tty gone");
}

#[test]
fn render_is_fast_with_many_sites() {
    let frame = bench_render(10_000);
    let update = bench_update(10_000);
    eprintln!("10k sites: {frame:?} per frame, {update:?} per update");
    // Release builds must stay within 10 ms; debug builds get slack.
    let limit = if cfg!(debug_assertions) {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(10)
    };
    assert!(frame <= limit, "{frame:?} per frame");
}

#[test]
fn mode_switch_changes_the_header_and_says_why() {
    let mut app = fed();
    app.info.mode_note = " (--max-overhead 5%)".into();
    assert!(screen(&mut app, 160, 30).contains("· exact (--max-overhead 5%)"));
    app.on_feed(Feed::ModeSwitch {
        mode: crate::plan::Mode::Sampled,
        notice: "at 12.0 s: tracing cost ~31.2% of one core, over the 5% budget for 3 s: switching to sampled mode".into(),
    });
    let s = screen(&mut app, 160, 30);
    assert!(s.contains("· sampled (--max-overhead 5%)"), "{s}");
    assert!(s.contains("switching to sampled mode"), "{s}");
}
