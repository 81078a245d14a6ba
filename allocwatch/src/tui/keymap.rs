//! The one table of key bindings.
//!
//! [`KEYMAP`] is the single source of truth: [`action_for`] maps a key press
//! to an [`Action`] through it, the footer shows the hints of the bindings that
//! apply to the current [`Context`], and the help screen lists all of them.
//! Adding a binding here is all it takes for it to work and be documented.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// What a key does; interpreted by `App::handle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    /// Close help or details, else clear the filter, else quit.
    Back,
    ToggleHelp,
    SwitchView,
    SortNext,
    SortReverse,
    StartFilter,
    OpenDetail,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    TogglePause,
    Reset,
    Export,
    FilterApply,
    FilterClear,
    FilterBackspace,
    /// A character typed into the filter prompt (not in the table: any
    /// printable key while the prompt is open).
    FilterInput(char),
}

/// Where the user is; decides which bindings apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    Sites,
    Pools,
    SiteDetail,
    PoolDetail,
    Help,
    /// The filter prompt is open.
    Filter,
}

impl Context {
    /// Name used in the help screen.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Context::Sites => "sites",
            Context::Pools => "pools",
            Context::SiteDetail => "site detail",
            Context::PoolDetail => "pool detail",
            Context::Help => "help",
            Context::Filter => "filter prompt",
        }
    }
}

/// A key, as written in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// A printable character, with or without Shift.
    Char(char),
    /// Ctrl + a character.
    Ctrl(char),
    /// A named key (Esc, Enter, arrows, …) without Ctrl or Alt.
    Code(KeyCode),
}

impl Key {
    fn matches(self, ev: &KeyEvent) -> bool {
        let ctrl_alt = ev
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT);
        match self {
            Key::Char(c) => !ctrl_alt && ev.code == KeyCode::Char(c),
            Key::Ctrl(c) => {
                ev.modifiers.contains(KeyModifiers::CONTROL)
                    && matches!(ev.code, KeyCode::Char(k) if k.eq_ignore_ascii_case(&c))
            }
            Key::Code(code) => !ctrl_alt && ev.code == code,
        }
    }
}

/// One row of the keymap.
#[derive(Debug)]
pub struct Binding {
    pub keys: &'static [Key],
    /// How the keys are written in the footer and the help screen.
    pub label: &'static str,
    /// Shown in the help screen.
    pub description: &'static str,
    /// Shown in the footer; `None` keeps the binding out of the footer.
    pub hint: Option<&'static str>,
    pub contexts: &'static [Context],
    pub action: Action,
}

const LISTS: &[Context] = &[Context::Sites, Context::Pools];
const BROWSE: &[Context] = &[
    Context::Sites,
    Context::Pools,
    Context::SiteDetail,
    Context::PoolDetail,
];
const OVERLAYS: &[Context] = &[Context::SiteDetail, Context::PoolDetail, Context::Help];
const SCROLL: &[Context] = &[
    Context::Sites,
    Context::Pools,
    Context::SiteDetail,
    Context::PoolDetail,
    Context::Help,
];
const NOT_TYPING: &[Context] = SCROLL;
const EVERYWHERE: &[Context] = &[
    Context::Sites,
    Context::Pools,
    Context::SiteDetail,
    Context::PoolDetail,
    Context::Help,
    Context::Filter,
];
const FILTER: &[Context] = &[Context::Filter];

/// Every key binding; the first matching row for the context wins.
pub static KEYMAP: &[Binding] = &[
    Binding {
        keys: &[Key::Char('q')],
        label: "q",
        description: "quit",
        hint: Some("quit"),
        contexts: NOT_TYPING,
        action: Action::Quit,
    },
    Binding {
        keys: &[Key::Ctrl('c')],
        label: "Ctrl-C",
        description: "quit",
        hint: None,
        contexts: EVERYWHERE,
        action: Action::Quit,
    },
    Binding {
        keys: &[Key::Code(KeyCode::Esc)],
        label: "Esc",
        description: "clear the filter; without one, quit",
        hint: None,
        contexts: LISTS,
        action: Action::Back,
    },
    Binding {
        keys: &[Key::Code(KeyCode::Esc)],
        label: "Esc",
        description: "back to the list",
        hint: Some("back"),
        contexts: OVERLAYS,
        action: Action::Back,
    },
    Binding {
        keys: &[Key::Char('?')],
        label: "?",
        description: "show or hide this help",
        hint: Some("help"),
        contexts: NOT_TYPING,
        action: Action::ToggleHelp,
    },
    Binding {
        keys: &[Key::Code(KeyCode::Tab), Key::Code(KeyCode::BackTab)],
        label: "Tab",
        description: "switch between call sites and pools",
        hint: Some("view"),
        contexts: LISTS,
        action: Action::SwitchView,
    },
    Binding {
        keys: &[Key::Char('s')],
        label: "s",
        description: "sort by the next column",
        hint: Some("sort"),
        contexts: LISTS,
        action: Action::SortNext,
    },
    Binding {
        keys: &[Key::Char('S')],
        label: "S",
        description: "reverse the sort direction",
        hint: None,
        contexts: LISTS,
        action: Action::SortReverse,
    },
    Binding {
        keys: &[Key::Char('/')],
        label: "/",
        description: "filter rows by text (names, files, types, callers)",
        hint: Some("filter"),
        contexts: LISTS,
        action: Action::StartFilter,
    },
    Binding {
        keys: &[Key::Code(KeyCode::Enter)],
        label: "Enter",
        description: "details of the selected row",
        hint: Some("open"),
        contexts: LISTS,
        action: Action::OpenDetail,
    },
    Binding {
        keys: &[Key::Code(KeyCode::Up), Key::Char('k')],
        label: "↑ k",
        description: "move up",
        hint: None,
        contexts: SCROLL,
        action: Action::Up,
    },
    Binding {
        keys: &[Key::Code(KeyCode::Down), Key::Char('j')],
        label: "↓ j",
        description: "move down",
        hint: None,
        contexts: SCROLL,
        action: Action::Down,
    },
    Binding {
        keys: &[Key::Code(KeyCode::PageUp)],
        label: "PgUp",
        description: "one page up",
        hint: None,
        contexts: SCROLL,
        action: Action::PageUp,
    },
    Binding {
        keys: &[Key::Code(KeyCode::PageDown)],
        label: "PgDn",
        description: "one page down",
        hint: None,
        contexts: SCROLL,
        action: Action::PageDown,
    },
    Binding {
        keys: &[Key::Code(KeyCode::Home), Key::Char('g')],
        label: "Home g",
        description: "first row",
        hint: None,
        contexts: SCROLL,
        action: Action::Top,
    },
    Binding {
        keys: &[Key::Code(KeyCode::End), Key::Char('G')],
        label: "End G",
        description: "last row",
        hint: None,
        contexts: SCROLL,
        action: Action::Bottom,
    },
    Binding {
        keys: &[Key::Char(' ')],
        label: "Space",
        description: "pause or resume the display (tracing goes on)",
        hint: Some("pause"),
        contexts: BROWSE,
        action: Action::TogglePause,
    },
    Binding {
        keys: &[Key::Char('r')],
        label: "r",
        description: "reset counters: totals and rates start now",
        hint: Some("reset"),
        contexts: BROWSE,
        action: Action::Reset,
    },
    Binding {
        keys: &[Key::Char('e')],
        label: "e",
        description: "write the current view to a CSV file",
        hint: Some("export"),
        contexts: LISTS,
        action: Action::Export,
    },
    Binding {
        keys: &[Key::Code(KeyCode::Enter)],
        label: "Enter",
        description: "apply the filter",
        hint: Some("apply"),
        contexts: FILTER,
        action: Action::FilterApply,
    },
    Binding {
        keys: &[Key::Code(KeyCode::Esc)],
        label: "Esc",
        description: "clear the filter",
        hint: Some("clear"),
        contexts: FILTER,
        action: Action::FilterClear,
    },
    Binding {
        keys: &[Key::Code(KeyCode::Backspace)],
        label: "Backspace",
        description: "delete the last character",
        hint: None,
        contexts: FILTER,
        action: Action::FilterBackspace,
    },
];

/// The action of a key event in a context. Only presses count (no repeats
/// or releases, which some terminals report).
#[must_use]
pub fn action_for(ctx: Context, ev: &KeyEvent) -> Option<Action> {
    if ev.kind != KeyEventKind::Press {
        return None;
    }
    let bound = KEYMAP
        .iter()
        .find(|b| b.contexts.contains(&ctx) && b.keys.iter().any(|k| k.matches(ev)))
        .map(|b| b.action);
    if bound.is_some() || ctx != Context::Filter {
        return bound;
    }
    match ev.code {
        KeyCode::Char(c)
            if !ev
                .modifiers
                .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) =>
        {
            Some(Action::FilterInput(c))
        }
        _ => None,
    }
}

/// The footer hints of a context: (keys, hint), in table order.
pub fn hints(ctx: Context) -> impl Iterator<Item = (&'static str, &'static str)> {
    KEYMAP
        .iter()
        .filter(move |b| b.contexts.contains(&ctx))
        .filter_map(|b| b.hint.map(|h| (b.label, h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn quit_keys() {
        for ctx in [
            Context::Sites,
            Context::Pools,
            Context::Help,
            Context::SiteDetail,
        ] {
            assert_eq!(
                action_for(ctx, &key(KeyCode::Char('q'))),
                Some(Action::Quit)
            );
            assert_eq!(action_for(ctx, &key(KeyCode::Esc)), Some(Action::Back));
        }
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(action_for(Context::Filter, &ctrl_c), Some(Action::Quit));
        assert_eq!(action_for(Context::Sites, &ctrl_c), Some(Action::Quit));
    }

    #[test]
    fn filter_prompt_takes_text() {
        assert_eq!(
            action_for(Context::Filter, &key(KeyCode::Char('q'))),
            Some(Action::FilterInput('q'))
        );
        assert_eq!(
            action_for(Context::Filter, &key(KeyCode::Enter)),
            Some(Action::FilterApply)
        );
        assert_eq!(
            action_for(Context::Filter, &key(KeyCode::Esc)),
            Some(Action::FilterClear)
        );
        assert_eq!(action_for(Context::Filter, &key(KeyCode::Up)), None);
    }

    #[test]
    fn only_presses() {
        let mut ev = key(KeyCode::Char('q'));
        ev.kind = KeyEventKind::Release;
        assert_eq!(action_for(Context::Sites, &ev), None);
        ev.kind = KeyEventKind::Repeat;
        assert_eq!(action_for(Context::Sites, &ev), None);
    }

    #[test]
    fn shifted_letters_and_ctrl() {
        let shift_s = KeyEvent::new(KeyCode::Char('S'), KeyModifiers::SHIFT);
        assert_eq!(
            action_for(Context::Sites, &shift_s),
            Some(Action::SortReverse)
        );
        let ctrl_s = KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL);
        assert_eq!(action_for(Context::Sites, &ctrl_s), None);
    }

    #[test]
    fn every_binding_is_reachable_and_described() {
        for b in KEYMAP {
            assert!(
                !b.keys.is_empty() && !b.contexts.is_empty() && !b.description.is_empty(),
                "{b:?}"
            );
            // No earlier row shadows a key of this row in one of its contexts.
            for ctx in b.contexts {
                for k in b.keys {
                    let first = KEYMAP
                        .iter()
                        .find(|o| o.contexts.contains(ctx) && o.keys.contains(k));
                    assert!(
                        first.is_some_and(|o| std::ptr::eq(o, b)),
                        "{k:?} in {ctx:?} is shadowed"
                    );
                }
            }
        }
    }

    #[test]
    fn footer_hints_follow_context() {
        let sites: Vec<_> = hints(Context::Sites).collect();
        assert!(sites.contains(&("s", "sort")) && sites.contains(&("e", "export")));
        let filter: Vec<_> = hints(Context::Filter).collect();
        assert_eq!(filter, vec![("Enter", "apply"), ("Esc", "clear")]);
    }
}
