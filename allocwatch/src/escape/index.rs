//! The compiler's heap decisions, indexed by module-relative file and line,
//! and matched to allocation sites.
//!
//! A site ([`SiteKey`]) names a Go function and the file:line recorded in the
//! binary's pclntab: an absolute path on the build machine, or
//! `module/path/rel.go` with `-trimpath`. Both are matched on the
//! module-relative path, and only inside the package the function belongs
//! to, so a standard-library site never picks up a diagnostic of a
//! same-named file in the module: it gets no reason rather than a wrong one.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::parse::{CompilerOutput, HeapDiag, Pos, Subject};
use crate::stats::SiteKey;

/// Why a value is on the heap, in the terms a Go programmer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// Larger than the compiler's limit for stack objects.
    TooLarge,
    /// `make` with a size known only at run time.
    UnknownSizeMake,
    /// Captured by (or is) the closure a `go` statement runs.
    GoroutineCapture,
    /// Captured by (or is) a closure that outlives the call.
    ClosureCapture,
    /// Converted to an interface that outlives the call.
    Interface,
    /// Its address is returned.
    ReturnedPointer,
    /// Anything else; the flow says where it goes.
    Other,
}

impl Cause {
    /// The label used in the CSV column, the dashboard and `explain`.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Cause::TooLarge => "too large for stack",
            Cause::UnknownSizeMake => "unknown size make",
            Cause::GoroutineCapture => "goroutine capture",
            Cause::ClosureCapture => "closure capture",
            Cause::Interface => "assignment to interface",
            Cause::ReturnedPointer => "returned pointer",
            Cause::Other => "other",
        }
    }
}

/// One heap decision of the compiler at a site's line, explained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason {
    pub cause: Cause,
    /// `moved to heap: p`, `b escapes to heap`, …
    pub headline: String,
    /// `main.go:43:2` (module-relative).
    pub at: String,
    /// The `-m=2` flow: `flow: ~r0 ← &p`, then `from &p (address-of) at main.go:44:9`, …
    pub flow: Vec<String>,
    /// What allocwatch adds (e.g. which goroutine captured a variable).
    pub note: Option<String>,
}

/// Everything the compiler said about one site's line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteEscape {
    /// In source order.
    pub reasons: Vec<Reason>,
}

impl SiteEscape {
    /// The most specific cause of all reasons.
    #[must_use]
    pub fn cause(&self) -> Cause {
        self.reasons
            .iter()
            .map(|r| r.cause)
            .min()
            .unwrap_or(Cause::Other)
    }

    /// The distinct causes, most specific first.
    #[must_use]
    pub fn causes(&self) -> Vec<Cause> {
        let mut v: Vec<Cause> = self.reasons.iter().map(|r| r.cause).collect();
        v.sort();
        v.dedup();
        v
    }

    /// One line for the CSV column: `cause: headline; flow …`, reasons
    /// separated by ` | `.
    #[must_use]
    pub fn csv(&self) -> String {
        let parts: Vec<String> = self
            .reasons
            .iter()
            .map(|r| {
                let mut s = format!("{}: {}", r.cause.label(), r.headline);
                if let Some(n) = &r.note {
                    s.push_str(&format!(" ({n})"));
                }
                if !r.flow.is_empty() {
                    s.push_str("; ");
                    s.push_str(&r.flow.join("; "));
                }
                s
            })
            .collect();
        parts.join(" | ")
    }

    /// The reason chain as lines for a terminal: headline with cause, then
    /// the flow indented.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.reasons {
            out.push(format!("{} [{}] at {}", r.headline, r.cause.label(), r.at));
            if let Some(n) = &r.note {
                out.push(format!("  {n}"));
            }
            for f in &r.flow {
                let indent = if f.starts_with("flow:") { "  " } else { "    " };
                out.push(format!("{indent}{f}"));
            }
        }
        out
    }
}

/// What is known about a site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteLookup {
    /// Not in a package of the module (standard library, dependencies,
    /// runtime wrappers): no reason.
    Outside,
    /// In the module, but the compiler reported no heap decision on its
    /// line (e.g. `append` growth, map inserts).
    Unknown,
    /// An object of the Go runtime's own (a goroutine, a thread, a profiling
    /// stack) allocated while this line ran: not an escape.
    Runtime,
    /// In the module, but the binary's line does not fit the source: no
    /// reason (it could be a wrong one). The text says why.
    Mismatch(String),
    Found(Arc<SiteEscape>),
}

/// A package of the analysed module (from `go list`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub import_path: String,
    /// The package clause name (`main` for commands).
    pub name: String,
    /// Directory relative to the module root (`""` for the root).
    pub dir: String,
    /// Go file names in the directory that are part of the build.
    pub files: Vec<String>,
}

/// The analysed module.
#[derive(Clone, Debug)]
pub struct ModuleInfo {
    pub root: PathBuf,
    /// From go.mod, e.g. `allocwatch.test`.
    pub path: String,
    /// Import path of the target's main package, when known.
    pub main_package: Option<String>,
}

/// Source files as text, by module-relative path.
pub trait Sources {
    fn read(&self, rel: &str) -> Option<String>;
}

/// Reads source files from the module directory.
pub struct DirSources(pub PathBuf);

impl Sources for DirSources {
    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.0.join(rel)).ok()
    }
}

#[derive(Clone, Debug)]
struct FileInfo {
    lines: usize,
    /// (line, col, is the function of a `go` statement), sorted.
    literals: Vec<(u32, u32, bool)>,
    /// (line, stripped function name), sorted.
    decls: Vec<(u32, String)>,
}

/// The index built from one compiler run; see the module documentation.
#[derive(Clone, Debug)]
pub struct EscapeIndex {
    module: ModuleInfo,
    packages: Vec<Package>,
    heap: Vec<HeapDiag>,
    /// (rel file, line) → indices into `heap`.
    heap_at: HashMap<(String, u32), Vec<usize>>,
    /// (rel file, line) → expressions that do not escape.
    no_escape_at: HashMap<(String, u32), Vec<String>>,
    /// (import path, stripped name) → (rel file, line).
    decl_of: HashMap<(String, String), (String, u32)>,
    files: HashMap<String, FileInfo>,
}

/// Lexically normalizes `root/printed` and returns it relative to `root`,
/// or `None` when it is outside.
#[must_use]
pub fn rel_path(root: &Path, printed: &str) -> Option<String> {
    let p = Path::new(printed);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    };
    let mut parts: Vec<String> = Vec::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    let root_parts: Vec<String> = root
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    if parts.len() <= root_parts.len() || parts[..root_parts.len()] != root_parts[..] {
        return None;
    }
    Some(parts[root_parts.len()..].join("/"))
}

/// Removes generic instantiations: `Map[go.shape.int].func1` → `Map.func1`.
#[must_use]
pub fn strip_brackets(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut depth = 0u32;
    for c in name.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The symbol-name prefix of a package: `main` for commands, otherwise
/// the import path with dots in its last element escaped (`%2e`), as the
/// linker writes it.
#[must_use]
pub fn symbol_package(import_path: &str, name: &str) -> String {
    if name == "main" {
        return "main".to_string();
    }
    match import_path.rfind('/') {
        Some(i) => format!(
            "{}{}",
            &import_path[..=i],
            import_path[i + 1..].replace('.', "%2e")
        ),
        None => import_path.replace('.', "%2e"),
    }
}

/// Splits a function symbol into (package symbol prefix, local name without
/// instantiations): `main.(*T).M` → (`main`, `(*T).M`),
/// `example.com/x/y.F[...]` → (`example.com/x/y`, `F`).
#[must_use]
pub fn split_function(symbol: &str) -> Option<(String, String)> {
    let s = strip_brackets(symbol);
    let after_slash = s.rfind('/').map_or(0, |i| i + 1);
    let dot = after_slash + s[after_slash..].find('.')?;
    Some((s[..dot].to_string(), s[dot + 1..].to_string()))
}

/// True when `a` is `b` or one is a closure (or wrapper) nested in the other.
fn related(a: &str, b: &str) -> bool {
    a == b
        || a.strip_prefix(b).is_some_and(|r| r.starts_with('.'))
        || b.strip_prefix(a).is_some_and(|r| r.starts_with('.'))
}

/// Whether the function literal at byte column `col` (1-based) of `text` is
/// the function of a `go` statement: `go func() {…}()`, or the wrapper the
/// compiler makes for `go f(x)` (positioned at `go` itself).
fn is_go_statement(text: &str, col: u32) -> bool {
    let i = (col as usize).saturating_sub(1).min(text.len());
    let (before, at) = text.split_at(i);
    let word = |s: &str| s.starts_with("go ") || s.starts_with("go\t");
    if word(at) {
        return before
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
    }
    let b = before.trim_end();
    b.strip_suffix("go").is_some_and(|p| {
        b.len() < before.len()
            && p.chars()
                .last()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
    })
}

/// The module's files the compiler spoke of, read once each.
struct FileTable<'a> {
    sources: &'a dyn Sources,
    infos: HashMap<String, FileInfo>,
    /// The lines of the files with function literals.
    texts: HashMap<String, Vec<String>>,
}

impl<'a> FileTable<'a> {
    fn new(sources: &'a dyn Sources) -> Self {
        FileTable {
            sources,
            infos: HashMap::new(),
            texts: HashMap::new(),
        }
    }

    /// The entry of `rel`, made (with its line count) on first use.
    fn info(&mut self, rel: &str) -> &mut FileInfo {
        let sources = self.sources;
        self.infos
            .entry(rel.to_string())
            .or_insert_with(|| FileInfo {
                lines: sources.read(rel).unwrap_or_default().lines().count(),
                literals: Vec::new(),
                decls: Vec::new(),
            })
    }

    /// Records the function literal at `p` (in `rel`), and whether it is
    /// the function of a `go` statement.
    fn literal(&mut self, rel: &str, p: &Pos) {
        let sources = self.sources;
        let lines = self.texts.entry(rel.to_string()).or_insert_with(|| {
            sources
                .read(rel)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect()
        });
        let text = lines
            .get((p.line as usize).saturating_sub(1))
            .map_or("", String::as_str);
        let go = is_go_statement(text, p.col);
        self.info(rel).literals.push((p.line, p.col, go));
    }

    fn finish(mut self) -> HashMap<String, FileInfo> {
        for fi in self.infos.values_mut() {
            fi.literals.sort_unstable();
            fi.literals.dedup();
            fi.decls.sort();
            fi.decls.dedup();
        }
        self.infos
    }
}

impl EscapeIndex {
    /// Builds the index. `sources` gives the module's files (for line
    /// counts and for telling `go` statements from other closures).
    #[must_use]
    pub fn build(
        module: ModuleInfo,
        packages: Vec<Package>,
        out: CompilerOutput,
        sources: &dyn Sources,
    ) -> Self {
        let root = module.root.clone();
        let mut files = FileTable::new(sources);
        let mut heap = Vec::new();
        let mut heap_at: HashMap<(String, u32), Vec<usize>> = HashMap::new();
        for d in out.heap {
            let Some(rel) = rel_path(&root, &d.pos.file) else {
                continue;
            };
            files.info(&rel);
            heap_at
                .entry((rel, d.pos.line))
                .or_default()
                .push(heap.len());
            heap.push(d);
        }
        let mut no_escape_at: HashMap<(String, u32), Vec<String>> = HashMap::new();
        for (_, pos, expr) in out.no_escape {
            if let Some(rel) = rel_path(&root, &pos.file) {
                no_escape_at.entry((rel, pos.line)).or_default().push(expr);
            }
        }
        let mut decl_of = HashMap::new();
        for f in out.funcs {
            let Some(rel) = rel_path(&root, &f.pos.file) else {
                continue;
            };
            let name = strip_brackets(&f.name);
            files.info(&rel).decls.push((f.pos.line, name.clone()));
            decl_of
                .entry((f.package.clone(), name))
                .or_insert((rel, f.pos.line));
        }
        for p in out.func_literals {
            if let Some(rel) = rel_path(&root, &p.file) {
                files.literal(&rel, &p);
            }
        }
        EscapeIndex {
            module,
            packages,
            heap,
            heap_at,
            no_escape_at,
            decl_of,
            files: files.finish(),
        }
    }

    /// The module root.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.module.root
    }

    /// Number of heap decisions inside the module.
    #[must_use]
    pub fn heap_decisions(&self) -> usize {
        self.heap.len()
    }

    /// The packages of the module `symbol_pkg` may denote.
    fn packages_for(&self, symbol_pkg: &str) -> Vec<&Package> {
        let all: Vec<&Package> = self
            .packages
            .iter()
            .filter(|p| symbol_package(&p.import_path, &p.name) == symbol_pkg)
            .collect();
        if symbol_pkg == "main"
            && let Some(m) = &self.module.main_package
        {
            let exact: Vec<&Package> = all
                .iter()
                .copied()
                .filter(|p| &p.import_path == m)
                .collect();
            if !exact.is_empty() {
                return exact;
            }
        }
        all
    }

    /// The module-relative path of `file` (as recorded in the binary) in
    /// package `p`, if it is one of the package's files.
    fn rel_file(&self, p: &Package, file: &str) -> Option<String> {
        let trimmed = file
            .strip_prefix(self.module.path.as_str())
            .and_then(|r| r.strip_prefix('/'));
        p.files.iter().find_map(|f| {
            let rel = if p.dir.is_empty() {
                f.clone()
            } else {
                format!("{}/{f}", p.dir)
            };
            let hit = trimmed == Some(rel.as_str())
                || file == rel
                || file
                    .strip_suffix(rel.as_str())
                    .is_some_and(|pre| pre.ends_with('/'));
            hit.then_some(rel)
        })
    }

    /// Does `line` of `rel` plausibly belong to function `local` of `pkg`?
    /// `Some(why)` when it does not.
    fn position_mismatch(
        &self,
        pkg: &Package,
        local: &str,
        rel: &str,
        line: u32,
    ) -> Option<String> {
        let fi = self.files.get(rel);
        let lines = fi.map_or(0, |f| f.lines);
        if lines > 0 && line as usize > lines {
            return Some(format!(
                "line {line} is past the end of {rel} ({lines} lines)"
            ));
        }
        let (decl_file, decl_line) = self
            .decl_of
            .get(&(pkg.import_path.clone(), local.to_string()))?;
        if decl_file != rel {
            return Some(format!("{local} is declared in {decl_file}, not in {rel}"));
        }
        if *decl_line > line {
            return Some(format!(
                "{local} is declared at {rel}:{decl_line}, after line {line}"
            ));
        }
        let nearest = fi?.decls.iter().rev().find(|(l, _)| *l <= line)?;
        (!related(&nearest.1, local)).then(|| {
            format!(
                "{rel}:{line} is in {} (declared at line {}), not in {local}",
                nearest.1, nearest.0
            )
        })
    }

    /// What is known about `key`.
    #[must_use]
    pub fn lookup(&self, key: &SiteKey) -> SiteLookup {
        let Some((sym_pkg, local)) = split_function(&key.function) else {
            return SiteLookup::Outside;
        };
        let mut found = None;
        for p in self.packages_for(&sym_pkg) {
            if let Some(rel) = self.rel_file(p, &key.file) {
                found = Some((p, rel));
                break;
            }
        }
        let Some((pkg, rel)) = found else {
            return SiteLookup::Outside;
        };
        if let Some(why) = self.position_mismatch(pkg, &local, &rel, key.line) {
            return SiteLookup::Mismatch(why);
        }
        if runtime_type(&key.type_name) {
            return SiteLookup::Runtime;
        }
        let mut reasons = match self.heap_reasons(key, &rel) {
            Ok(r) => r,
            Err(l) => return l,
        };
        if reasons.is_empty()
            && let Some(exprs) = self.no_escape_at.get(&(rel.clone(), key.line))
        {
            for e in exprs {
                if let Some(r) = inferred(e, &rel, key.line) {
                    reasons.push((0, r));
                }
            }
        }
        if reasons.is_empty() {
            return SiteLookup::Unknown;
        }
        reasons.sort_by_key(|(col, _)| *col);
        SiteLookup::Found(Arc::new(SiteEscape {
            reasons: reasons.into_iter().map(|(_, r)| r).collect(),
        }))
    }

    /// The compiler's heap decisions at `key`'s line (in `rel`) that can
    /// have made its object, explained, with their columns; `Err` when the
    /// object is the runtime's own.
    fn heap_reasons(&self, key: &SiteKey, rel: &str) -> Result<Vec<(u32, Reason)>, SiteLookup> {
        let Some(ix) = self.heap_at.get(&(rel.to_string(), key.line)) else {
            return Ok(Vec::new());
        };
        let closure_type = is_closure_type(&key.type_name);
        let diags: Vec<&HeapDiag> = ix
            .iter()
            .map(|&i| &self.heap[i])
            .filter(|d| !is_constant(&d.subject))
            .collect();
        if key.type_name.as_ref() == "[]uintptr"
            && !diags.iter().any(|d| match &d.subject {
                Subject::Expr(e) => e.contains("uintptr"),
                Subject::Moved(_) => false,
            })
        {
            // The runtime's profiling and traceback buffers, made
            // when a thread starts during this line.
            return Err(SiteLookup::Runtime);
        }
        let literal = |d: &&HeapDiag| d.subject == Subject::Expr("func literal".into());
        // A closure object comes from a function literal (or a method
        // value), anything else not from one.
        let chosen: Vec<&HeapDiag> = if closure_type {
            let lits: Vec<&HeapDiag> = diags.iter().copied().filter(literal).collect();
            if lits.is_empty() { diags } else { lits }
        } else {
            diags.into_iter().filter(|d| !literal(d)).collect()
        };
        // Several decisions on one line: keep those that can have
        // made this type.
        let shaped: Vec<&HeapDiag> = chosen
            .iter()
            .copied()
            .filter(|d| shape_matches(d, &key.type_name))
            .collect();
        let chosen = if shaped.is_empty() { chosen } else { shaped };
        Ok(chosen
            .into_iter()
            .map(|d| (d.pos.col, self.reason(d, rel, closure_type)))
            .collect())
    }

    fn show(&self, p: &Pos) -> String {
        let file = rel_path(&self.module.root, &p.file).unwrap_or_else(|| p.file.clone());
        if p.col > 0 {
            format!("{file}:{}:{}", p.line, p.col)
        } else {
            format!("{file}:{}", p.line)
        }
    }

    /// The function literal a captured variable's reference at `at` is in:
    /// the last literal starting after `decl` and at or before `at`.
    fn enclosing_literal(&self, rel: &str, decl: &Pos, at: &Pos) -> Option<(u32, u32, bool)> {
        let fi = self.files.get(rel)?;
        fi.literals
            .iter()
            .rev()
            .find(|(l, c, _)| (*l, *c) <= (at.line, at.col) && (*l, *c) > (decl.line, decl.col))
            .copied()
    }

    fn reason(&self, d: &HeapDiag, rel: &str, closure_type: bool) -> Reason {
        let (headline, expr) = match &d.subject {
            Subject::Moved(n) => (format!("moved to heap: {n}"), None),
            Subject::Expr(e) => (format!("{e} escapes to heap"), Some(e.as_str())),
        };
        let (cause, note) = self.cause(d, expr, rel, closure_type);
        let mut flow = Vec::new();
        for f in &d.flows {
            flow.push(format!("flow: {}", f.edge));
            for s in &f.steps {
                match &s.at {
                    Some(at) => {
                        flow.push(format!("from {} ({}) at {}", s.expr, s.why, self.show(at)))
                    }
                    None => flow.push(format!("from {} ({})", s.expr, s.why)),
                }
            }
        }
        Reason {
            cause,
            headline,
            at: self.show(&d.pos),
            flow,
            note,
        }
    }

    /// The cause of heap decision `d` (about expression `expr`, or a moved
    /// variable), with what allocwatch adds to it.
    fn cause(
        &self,
        d: &HeapDiag,
        expr: Option<&str>,
        rel: &str,
        closure_type: bool,
    ) -> (Cause, Option<String>) {
        let steps = || d.flows.iter().flat_map(|f| f.steps.iter());
        let has = |why: &str| steps().any(|s| s.why == why);
        if has("too large for stack") {
            (Cause::TooLarge, None)
        } else if has("non-constant size") {
            (Cause::UnknownSizeMake, None)
        } else if expr == Some("func literal") {
            let go = self
                .files
                .get(rel)
                .and_then(|f| {
                    f.literals
                        .iter()
                        .find(|(l, c, _)| *l == d.pos.line && *c == d.pos.col)
                })
                .is_some_and(|x| x.2);
            if go {
                let note = "the closure of a go statement".to_string();
                (Cause::GoroutineCapture, Some(note))
            } else {
                (Cause::ClosureCapture, None)
            }
        } else if let Some(step) = steps().find(|s| s.why == "captured by a closure") {
            let lit = step
                .at
                .as_ref()
                .and_then(|at| self.enclosing_literal(rel, &d.pos, at));
            match lit {
                Some((l, c, true)) => (
                    Cause::GoroutineCapture,
                    Some(format!(
                        "captured by the goroutine started at {rel}:{l}:{c}"
                    )),
                ),
                Some((l, c, false)) => (
                    Cause::ClosureCapture,
                    Some(format!("captured by the closure at {rel}:{l}:{c}")),
                ),
                None => (Cause::ClosureCapture, None),
            }
        } else if closure_type {
            // A method value (`x.M`) is a closure too.
            (Cause::ClosureCapture, None)
        } else if has("interface-converted") || expr.is_some_and(boxes_value) {
            (Cause::Interface, None)
        } else if has("return") {
            (Cause::ReturnedPointer, None)
        } else {
            (Cause::Other, where_it_goes(d, expr))
        }
    }
}

/// Where the flow of `d` ends: a call that keeps it, a global, a channel,
/// a larger object that escapes.
fn where_it_goes(d: &HeapDiag, expr: Option<&str>) -> Option<String> {
    let last = d.flows.last();
    let holder = last
        .and_then(|f| f.edge.split(" ← ").next())
        .and_then(|dst| dst.strip_prefix("{storage for "))
        .and_then(|x| x.strip_suffix('}'));
    match (holder, last.and_then(|f| f.steps.last())) {
        (Some(x), _) => Some(format!("referenced by {x}, which is on the heap")),
        (None, Some(s)) => Some(match s.why.as_str() {
            "call parameter" => format!("passed to {}, which keeps it", s.expr),
            "send" => "sent on a channel".to_string(),
            "assign" => format!("stored by {}", s.expr),
            why => format!("{why}: {}", s.expr),
        }),
        (None, None) if expr.is_some_and(|e| e.starts_with("append")) => {
            Some("a slice that escapes outgrew its capacity".to_string())
        }
        (None, None) => None,
    }
}

/// The type name the symbolizer gives a closure object
/// (`struct { F uintptr; … }`).
const CLOSURE_TYPE: &str = "struct { F uintptr";

/// Whether `t` names a closure object.
#[must_use]
pub fn is_closure_type(t: &str) -> bool {
    t.starts_with(CLOSURE_TYPE)
}

/// A type only the runtime allocates (`runtime.g`, `[]*runtime.g`,
/// `runtime.mPadded`): unexported types of package runtime.
fn runtime_type(t: &str) -> bool {
    let mut base = t;
    loop {
        let before = base;
        base = base.trim_start_matches("[]").trim_start_matches('*');
        if let Some(rest) = base.strip_prefix('[')
            && let Some(i) = rest.find(']')
        {
            base = &rest[i + 1..];
        }
        if base == before {
            break;
        }
    }
    // Not the runtime's boxing types (Go 1.27 boxes strings as
    // `runtime.stringInterfacePtr`): those are escapes.
    const OWN: [&str; 10] = [
        "g",
        "m",
        "p",
        "mPadded",
        "sudog",
        "_defer",
        "_panic",
        "timer",
        "gcBgMarkWorkerNode",
        "gcBgMarkWorkerNodePadded",
    ];
    base.strip_prefix("runtime.")
        .is_some_and(|r| OWN.contains(&r))
}

/// Whether heap decision `d` can be what allocated an object of type `t`
/// (as the symbolizer names it: a `make([]T, n)` is `[]T`, a map's storage
/// `[]map.group[K]V` or `maps.Map`, a closure `struct { F uintptr; … }`).
fn shape_matches(d: &HeapDiag, t: &str) -> bool {
    let closure = is_closure_type(t);
    let map = [
        "[]map.",
        "map.",
        "maps.",
        "[]noalg.map.",
        "noalg.map.",
        "runtime.hmap",
    ]
    .iter()
    .any(|p| t.starts_with(p));
    let slice = t.starts_with("[]") && !map;
    let e = match &d.subject {
        Subject::Moved(_) => return !slice && !map && !closure,
        Subject::Expr(e) => e.as_str(),
    };
    if e.starts_with("make(map[") || e.starts_with("map[") {
        map
    } else if map {
        // Boxing a map value copies a pointer: only a map makes map storage.
        false
    } else if e == "func literal" {
        closure
    } else if e.starts_with("make([]") || e.starts_with("append") || e.starts_with("[]") {
        slice || t.starts_with('[')
    } else if e.starts_with('&') || e.starts_with("new(") {
        !slice && !map && !closure
    } else {
        true
    }
}

/// A constant converted to an interface: static data, no allocation.
fn is_constant(s: &Subject) -> bool {
    matches!(s, Subject::Expr(e) if e.starts_with('"') || e.starts_with(|c: char| c.is_ascii_digit()))
}

/// Whether `EXPR escapes to heap` is the storage of a value converted to
/// an interface (`b`, `it.Qty`, `int64(i)`): anything that is not itself an
/// allocating expression.
fn boxes_value(e: &str) -> bool {
    const ALLOCATING: [&str; 9] = [
        "&",
        "new(",
        "make(",
        "func literal",
        "... argument",
        "string(",
        "[]byte(",
        "[]rune(",
        "append(",
    ];
    !(ALLOCATING.iter().any(|p| e.starts_with(p))
        || e == "append"
        || e.contains("{...}")
        || e.contains(" + "))
}

/// A heap allocation at a line where the compiler says the value does not
/// escape: Go ≥ 1.25 keeps a `make` of non-constant size (and Go keeps
/// string conversions and concatenations) in a 32-byte stack buffer only
/// when the result fits.
fn inferred(expr: &str, rel: &str, line: u32) -> Option<Reason> {
    let (cause, note) = if expr.starts_with("make(") {
        (
            Cause::UnknownSizeMake,
            "its size is not a constant: the compiler keeps it on the stack only when it fits in 32 bytes, larger ones are heap-allocated",
        )
    } else if expr.starts_with("string(")
        || expr.starts_with("[]byte(")
        || expr.starts_with("[]rune(")
        || expr.contains(" + ")
    {
        (
            Cause::Other,
            "results up to 32 bytes use a stack buffer, larger ones are heap-allocated",
        )
    } else {
        return None;
    };
    Some(Reason {
        cause,
        headline: format!("{expr} does not escape"),
        at: format!("{rel}:{line}"),
        flow: Vec::new(),
        note: Some(note.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let root = Path::new("/src/mod");
        assert_eq!(rel_path(root, "./main.go").as_deref(), Some("main.go"));
        assert_eq!(
            rel_path(root, "internal/shape/shape.go").as_deref(),
            Some("internal/shape/shape.go")
        );
        assert_eq!(rel_path(root, "/src/mod/a/b.go").as_deref(), Some("a/b.go"));
        assert_eq!(rel_path(root, "../../go/src/sync/atomic/type.go"), None);
        assert_eq!(rel_path(root, "/src/module/x.go"), None);
        assert_eq!(
            rel_path(root, "<autogenerated>").as_deref(),
            Some("<autogenerated>")
        );
    }

    #[test]
    fn function_names() {
        assert_eq!(
            split_function("main.(*store).add"),
            Some(("main".into(), "(*store).add".into()))
        );
        assert_eq!(
            split_function("allocwatch.test/escape/internal/shape.NewRect"),
            Some((
                "allocwatch.test/escape/internal/shape".into(),
                "NewRect".into()
            ))
        );
        assert_eq!(
            split_function("main.Map[go.shape.int,example.com/x.T].func1"),
            Some(("main".into(), "Map.func1".into()))
        );
        assert_eq!(
            split_function("gopkg.in/yaml%2ev3.Marshal"),
            Some(("gopkg.in/yaml%2ev3".into(), "Marshal".into()))
        );
        assert_eq!(
            symbol_package("gopkg.in/yaml.v3", "yaml"),
            "gopkg.in/yaml%2ev3"
        );
        assert_eq!(symbol_package("allocwatch.test/demo", "main"), "main");
        assert_eq!(split_function("runtime"), None);
    }

    #[test]
    fn relations() {
        assert!(related("f", "f"));
        assert!(related("f.func1", "f"));
        assert!(related("f", "f.func1.gowrap2"));
        assert!(!related("fx", "f"));
        assert!(!related("g", "f"));
    }

    #[test]
    fn go_statements() {
        assert!(is_go_statement("\tgo func() {", 5));
        assert!(is_go_statement("\tgo worker(&v, x)", 2));
        assert!(!is_go_statement("\treturn func() int64 {", 9));
        assert!(!is_go_statement(
            "\tcase auditLog <- func() string { return x }:",
            19
        ));
        assert!(!is_go_statement("\tlogo func() {", 7));
        assert!(!is_go_statement("\tf := ergo(func() {", 12));
    }

    #[test]
    fn runtime_types() {
        for t in [
            "runtime.g",
            "[]*runtime.g",
            "runtime.mPadded",
            "*[4]runtime.p",
        ] {
            assert!(runtime_type(t), "{t}");
        }
        for t in [
            "runtime.stringInterfacePtr",
            "runtime.MemStats",
            "[]runtime.Frame",
            "main.g",
            "[]uintptr",
            "string",
        ] {
            assert!(!runtime_type(t), "{t}");
        }
    }

    #[test]
    fn boxing() {
        for e in [
            "b",
            "it.Qty",
            "int64(i)",
            "(interface {})(x)",
            "o.TotalCents / int64(100)",
        ] {
            assert!(boxes_value(e), "{e}");
        }
        for e in [
            "&Rect{...}",
            "new(bytes.Buffer)",
            "make([]byte, n)",
            "func literal",
            "[]int{...}",
            "s + s",
            "string(sc.buf)",
            "append(customers, c)",
            "append",
            "map[string]any{...}",
        ] {
            assert!(!boxes_value(e), "{e}");
        }
    }
}
