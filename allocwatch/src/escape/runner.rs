//! Running the Go toolchain: finding one of the target's version, listing
//! the module's packages and compiling the target's main package with
//! `-gcflags=<module>/...=-m=2`, the way the target was built (GOOS,
//! GOARCH, GOAMD64, CGO_ENABLED, GOEXPERIMENT, -tags, -pgo, -gcflags from
//! its build info).
//!
//! Nothing is written into the module: the executable goes to `/dev/null`
//! (or a temporary directory), `-mod=readonly` (or `vendor`) keeps go.mod
//! and go.sum as they are, `-buildvcs=false` keeps git out of it, and the
//! build cache is the user's (`GOCACHE`; a temporary one when there is no
//! home directory). `GOTOOLCHAIN=local` keeps the go command from
//! downloading another toolchain.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::envcheck::{executable, on_path};
use crate::gobin::{BuildInfo, parse_go_version};

/// Why the escape analysis cannot run (or `--source`/`--go` are wrong).
#[derive(Debug, thiserror::Error)]
pub enum EscapeError {
    #[error("{}: {source}", path.display())]
    BadPath {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    ReadGoMod {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} has no module line", .0.display())]
    NoModuleLine(PathBuf),
    #[error("{} is not in a Go module (no go.mod in it or above it)", .0.display())]
    NotInModule(PathBuf),
    #[error("cannot run {}: {source}", go.display())]
    CannotRun { go: PathBuf, source: std::io::Error },
    #[error("{} does not work: {why}", go.display())]
    GoBroken { go: PathBuf, why: String },
    /// No toolchain at all; `for_analysis` says so when checking `--source`.
    #[error(
        "no Go toolchain found{} (looked on PATH, in ~/sdk, $GOROOT, /usr/local/go)",
        if *for_analysis { " for the escape analysis" } else { "" }
    )]
    NoToolchain { for_analysis: bool },
    #[error("no working Go toolchain found: {}", join(.0))]
    NoWorkingToolchain(Vec<EscapeError>),
    #[error("go list failed in {}: {stderr}", root.display())]
    ListFailed { root: PathBuf, stderr: String },
    #[error("cannot read go list output: {0}")]
    ListOutput(serde_json::Error),
    #[error("cannot create {}: {source}", path.display())]
    TempDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("go build failed in {}: {tail}", root.display())]
    BuildFailed { root: PathBuf, tail: String },
    #[error("the escape analysis panicked")]
    Panicked,
    #[error(
        "{} belongs to uid {owner}: allocwatch does not run the Go toolchain as root on another user's tree",
        root.display()
    )]
    RootOnForeignTree { root: PathBuf, owner: u32 },
}

fn join(errors: &[EscapeError]) -> String {
    let v: Vec<String> = errors.iter().map(ToString::to_string).collect();
    v.join("; ")
}

impl EscapeError {
    /// True when no usable go command was found or given (rather than a
    /// problem with the module or the build).
    #[must_use]
    pub fn is_toolchain(&self) -> bool {
        matches!(
            self,
            EscapeError::CannotRun { .. }
                | EscapeError::GoBroken { .. }
                | EscapeError::NoToolchain { .. }
                | EscapeError::NoWorkingToolchain(_)
        )
    }
}

/// A Go toolchain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toolchain {
    /// The `go` command.
    pub go: PathBuf,
    /// `go1.27.3`
    pub version: String,
    /// Where it was found (`--go`, `PATH`, `~/sdk`, …).
    pub origin: String,
}

/// A base environment for every go command: its own GOROOT, no toolchain
/// switching, no user GOFLAGS. Under sudo it runs as the invoking user,
/// with their home (so their build and module caches), never as root on
/// their tree. Without a usable cache location (no `GOCACHE`, no
/// `XDG_CACHE_HOME`, no home directory), a private one in the temporary
/// directory: `allocwatch-gocache-UID`, mode 0700, used only when it is
/// that user's own directory.
fn go_command(go: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(go);
    c.env_remove("GOROOT")
        .env_remove("GOFLAGS")
        .env("GOTOOLCHAIN", "local");
    let user = crate::user::invoker();
    let mut home = std::env::var_os("HOME").map(PathBuf::from);
    if user.via_sudo {
        c.uid(user.uid).gid(user.gid);
        home.clone_from(&user.home);
        match &user.home {
            Some(h) => c.env("HOME", h),
            None => c.env_remove("HOME"),
        };
        if let Some(name) = &user.name {
            c.env("USER", name).env("LOGNAME", name);
        }
    }
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let has_cache = set("GOCACHE")
        || set("XDG_CACHE_HOME")
        || home.is_some_and(|h| h.is_absolute() && h.is_dir());
    if !has_cache {
        let dir = user.as_fs_user(|| {
            crate::user::private_dir_in(&std::env::temp_dir(), "allocwatch-gocache", user.uid)
        });
        match dir {
            Ok(d) => {
                c.env("GOCACHE", d);
            }
            Err(e) => log::warn!("no Go build cache for --source: {e}"),
        }
    }
    c
}

/// The version of a `go` command (`go1.27.3`), or why it cannot be run.
pub fn go_version(go: &Path) -> Result<String, EscapeError> {
    let out = go_command(go)
        .args(["env", "GOVERSION"])
        .output()
        .map_err(|source| cannot_run(go, source))?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && v.starts_with("go") {
        return Ok(v);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(EscapeError::GoBroken {
        go: go.to_path_buf(),
        why: err.lines().next().unwrap_or("no version").to_string(),
    })
}

fn cannot_run(go: &Path, source: std::io::Error) -> EscapeError {
    EscapeError::CannotRun {
        go: go.to_path_buf(),
        source,
    }
}

/// Where to look for a toolchain of version `want` (`go1.27.3`), best first.
fn candidates(want: &str) -> Vec<(PathBuf, String)> {
    let mut v = Vec::new();
    if let Some(p) = on_path(want) {
        v.push((p, format!("{want} on PATH")));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = Path::new(&home).join("sdk").join(want).join("bin/go");
        v.push((p, format!("~/sdk/{want}")));
    }
    if let Some(root) = std::env::var_os("GOROOT") {
        v.push((Path::new(&root).join("bin/go"), "$GOROOT".into()));
    }
    if let Some(p) = on_path("go") {
        v.push((p, "PATH".into()));
    }
    for p in ["/usr/local/go/bin/go", "/usr/lib/go/bin/go"] {
        v.push((PathBuf::from(p), p.into()));
    }
    v.retain(|(p, _)| executable(p));
    v
}

/// Finds a toolchain: `explicit` (`--go`) when given, else the first of
/// the usual places with version `want`, else the first that works.
pub fn find_toolchain(explicit: Option<&Path>, want: &str) -> Result<Toolchain, EscapeError> {
    if let Some(go) = explicit {
        let version = go_version(go)?;
        return Ok(Toolchain {
            go: go.to_path_buf(),
            version,
            origin: "--go".into(),
        });
    }
    let mut first: Option<Toolchain> = None;
    let mut errors = Vec::new();
    for (go, origin) in candidates(want) {
        match go_version(&go) {
            Ok(version) if version == want => {
                return Ok(Toolchain {
                    go,
                    version,
                    origin,
                });
            }
            Ok(version) => {
                if first.is_none() {
                    first = Some(Toolchain {
                        go,
                        version,
                        origin,
                    });
                }
            }
            Err(e) => errors.push(e),
        }
    }
    match first {
        Some(t) => Ok(t),
        None if errors.is_empty() => Err(EscapeError::NoToolchain {
            for_analysis: false,
        }),
        None => Err(EscapeError::NoWorkingToolchain(errors)),
    }
}

/// The warning when the toolchain is not the target's, if any.
#[must_use]
pub fn version_warning(target: &str, used: &Toolchain) -> Option<String> {
    if target == used.version || target.is_empty() {
        return None;
    }
    let same_minor = match (parse_go_version(target), parse_go_version(&used.version)) {
        (Some(a), Some(b)) => (a.0, a.1) == (b.0, b.1),
        _ => false,
    };
    Some(format!(
        "the target was built with {target} but the escape analysis ran {} ({}, {}): {}; pass --go with a {target} toolchain",
        used.version,
        used.origin,
        used.go.display(),
        if same_minor {
            "patch releases rarely change the compiler's decisions, but can"
        } else {
            "the compiler's decisions differ between releases, so reasons may be wrong or missing"
        }
    ))
}

/// The module containing `dir`: (root, module path from go.mod).
pub fn find_module(dir: &Path) -> Result<(PathBuf, String), EscapeError> {
    let dir = std::path::absolute(dir).map_err(|source| EscapeError::BadPath {
        path: dir.to_path_buf(),
        source,
    })?;
    if !dir.is_dir() {
        return Err(EscapeError::NotADirectory(dir));
    }
    let mut d = Some(dir.as_path());
    while let Some(cur) = d {
        let gomod = cur.join("go.mod");
        if gomod.is_file() {
            let text =
                std::fs::read_to_string(&gomod).map_err(|source| EscapeError::ReadGoMod {
                    path: gomod.clone(),
                    source,
                })?;
            let path = module_path(&text).ok_or(EscapeError::NoModuleLine(gomod))?;
            return Ok((cur.to_path_buf(), path));
        }
        d = cur.parent();
    }
    Err(EscapeError::NotInModule(dir))
}

/// The `module` line of a go.mod file.
#[must_use]
pub fn module_path(gomod: &str) -> Option<String> {
    gomod.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("module")?;
        if !rest.starts_with([' ', '\t', '"']) {
            return None;
        }
        let m = rest.split("//").next()?.trim().trim_matches(['"', '`']);
        (!m.is_empty()).then(|| m.to_string())
    })
}

/// What `go build` needs to repeat the target's compilation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildPlan {
    pub env: Vec<(String, Option<String>)>,
    pub args: Vec<String>,
    /// Things that may make the analysis differ from the target's build.
    pub warnings: Vec<String>,
}

/// Splits a recorded `-gcflags` value into (pattern, flags).
fn split_gcflags(v: &str) -> (Option<&str>, &str) {
    match v.find('=') {
        Some(i) if !v[..i].starts_with('-') && !v[..i].contains(' ') => {
            (Some(&v[..i]), &v[i + 1..])
        }
        _ => (None, v),
    }
}

/// The go build flags and environment for the target's build settings.
/// `toolchain` is the version that will run (for flags older releases lack).
#[must_use]
pub fn build_plan(info: &BuildInfo, module_path: &str, root: &Path, toolchain: &str) -> BuildPlan {
    let mut p = BuildPlan::default();
    let tc = parse_go_version(toolchain).unwrap_or((1, 0, 0));
    for key in ["GOOS", "GOARCH", "GOAMD64", "CGO_ENABLED", "GOEXPERIMENT"] {
        p.env
            .push((key.to_string(), info.setting(key).map(str::to_string)));
    }
    let mode = if root.join("vendor/modules.txt").is_file() {
        "vendor"
    } else {
        "readonly"
    };
    p.args.push(format!("-mod={mode}"));
    if tc >= (1, 18, 0) {
        p.args.push("-buildvcs=false".into());
    }
    if let Some(tags) = info.setting("-tags").filter(|t| !t.is_empty()) {
        p.args.push(format!("-tags={tags}"));
    }
    for flag in ["-race", "-msan", "-asan"] {
        if info.setting(flag) == Some("true") {
            p.args.push(flag.to_string());
        }
    }
    match info.setting("-pgo").filter(|v| !v.is_empty() && *v != "off") {
        Some(profile) if Path::new(profile).is_file() => p.args.push(format!("-pgo={profile}")),
        Some(profile) => p.warnings.push(format!(
            "the target was built with the PGO profile {profile}, which is not here: inlining, and so escape decisions, may differ"
        )),
        None if tc >= (1, 21, 0) => p.args.push("-pgo=off".into()),
        None => {}
    }
    let user = info.setting("-gcflags").unwrap_or("");
    let (pattern, flags) = split_gcflags(user);
    if !user.is_empty() {
        p.args
            .push(format!("-gcflags={}={flags}", pattern.unwrap_or("all")));
    }
    let ours = format!("{flags} -m=2");
    p.args
        .push(format!("-gcflags={module_path}/...={}", ours.trim()));
    if info.setting("-compiler").is_some_and(|c| c != "gc") {
        p.warnings.push(
            "the target was not built by the gc compiler: escape decisions may differ".into(),
        );
    }
    p
}

/// One package from `go list -json`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listed {
    import_path: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    dir: String,
    #[serde(default)]
    go_files: Vec<String>,
    #[serde(default)]
    cgo_files: Vec<String>,
}

fn apply_env(c: &mut Command, env: &[(String, Option<String>)]) {
    for (k, v) in env {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
}

/// `go list -json ./...` in `root`: the module's packages for the target's
/// platform and tags.
pub fn list_packages(
    go: &Path,
    root: &Path,
    plan: &BuildPlan,
) -> Result<Vec<super::index::Package>, EscapeError> {
    let mut c = go_command(go);
    c.current_dir(root).args(["list", "-e", "-json"]);
    c.args(
        plan.args
            .iter()
            .filter(|a| a.starts_with("-mod=") || a.starts_with("-tags=")),
    );
    c.arg("./...");
    apply_env(&mut c, &plan.env);
    let out = c.output().map_err(|source| cannot_run(go, source))?;
    if !out.status.success() {
        return Err(EscapeError::ListFailed {
            root: root.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let mut pkgs = Vec::new();
    for item in serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Listed>() {
        let l = item.map_err(EscapeError::ListOutput)?;
        let dir = super::index::rel_path(root, &l.dir).unwrap_or_default();
        let mut files = l.go_files;
        files.extend(l.cgo_files);
        pkgs.push(super::index::Package {
            import_path: l.import_path,
            name: l.name,
            dir,
            files,
        });
    }
    Ok(pkgs)
}

/// Runs `go build` with `-m=2` on `package` (an import path, or `./...`)
/// and returns the compiler's output.
pub fn compile(
    go: &Path,
    root: &Path,
    plan: &BuildPlan,
    package: &str,
) -> Result<String, EscapeError> {
    let mut c = go_command(go);
    c.current_dir(root).arg("build");
    // A single main package is linked; its executable goes nowhere. For
    // `./...`, a directory of its own (random name, mode 0700, the invoking
    // user's under sudo), removed afterwards.
    let tmp = if package == "./..." {
        let user = crate::user::invoker();
        let d = user
            .as_fs_user(|| {
                tempfile::Builder::new()
                    .prefix("allocwatch-escape-")
                    .tempdir()
            })
            .map_err(|source| EscapeError::TempDir {
                path: std::env::temp_dir(),
                source,
            })?;
        let mut o = OsString::from(d.path());
        o.push("/");
        c.arg("-o").arg(o);
        Some(d)
    } else {
        c.args(["-o", "/dev/null"]);
        None
    };
    c.args(&plan.args).arg(package);
    apply_env(&mut c, &plan.env);
    let out = c.output();
    drop(tmp);
    let out = out.map_err(|source| cannot_run(go, source))?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        let tail: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains(": ") || !l.contains(".go:") || l.contains("error"))
            .rev()
            .take(8)
            .collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(EscapeError::BuildFailed {
            root: root.to_path_buf(),
            tail: tail.join("\n  "),
        });
    }
    Ok(text)
}

fn git(root: &Path, args: &[&str]) -> Option<std::process::Output> {
    Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()
}

/// Compares the build info's VCS stamp with the source checkout: warnings
/// when they differ, notes when it cannot tell.
#[must_use]
pub fn vcs_check(info: &BuildInfo, root: &Path) -> (Vec<String>, Vec<String>) {
    let (mut warnings, mut notes) = (Vec::new(), Vec::new());
    if info.setting("vcs") != Some("git") {
        return (warnings, notes);
    }
    let Some(rev) = info.setting("vcs.revision") else {
        return (warnings, notes);
    };
    let short = &rev[..rev.len().min(12)];
    let modified = info.setting("vcs.modified") == Some("true");
    let Some(head) = git(root, &["rev-parse", "HEAD"]).filter(|o| o.status.success()) else {
        notes.push(format!(
            "the target was built from git revision {short}; {} is not a git checkout allocwatch can read, so only lines are compared",
            root.display()
        ));
        return (warnings, notes);
    };
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let known = git(root, &["cat-file", "-e", &format!("{rev}^{{commit}}")])
        .is_some_and(|o| o.status.success());
    if !known {
        warnings.push(format!(
            "the target was built from git revision {short}, which this checkout does not have: the source may not match"
        ));
        return (warnings, notes);
    }
    if modified {
        notes.push(format!(
            "the target was built from revision {short} with uncommitted changes: only lines are compared"
        ));
        return (warnings, notes);
    }
    let differs =
        git(root, &["diff", "--quiet", rev, "--", "."]).is_some_and(|o| o.status.code() == Some(1));
    if differs {
        warnings.push(format!(
            "the source differs from revision {short} the target was built from (git diff {short} -- {}): reasons may be wrong for changed code",
            root.display()
        ));
    } else if head != rev {
        notes.push(format!(
            "the target was built from revision {short}; the module's files are unchanged since"
        ));
    }
    (warnings, notes)
}

/// The result of one analysis.
#[derive(Debug)]
pub struct Analysis {
    pub index: super::index::EscapeIndex,
    pub toolchain: Toolchain,
    /// The target's Go version.
    pub target_version: String,
    /// What was compiled (`allocwatch.test/demo` or `./...`).
    pub package: String,
    /// Things the user must know (version or source mismatch).
    pub warnings: Vec<String>,
    /// Things worth saying in a report.
    pub notes: Vec<String>,
    pub took: Duration,
}

/// What `--source` and `--go` asked for, checked before tracing starts.
#[derive(Clone, Debug)]
pub struct Request {
    pub root: PathBuf,
    pub module_path: String,
    pub go: Option<PathBuf>,
}

/// Refuses to build, as plain root, a module that root does not own
/// (unless `allow_root_build`): the build would run what the tree's owner
/// controls (cgo's compiler and flags, the module's build settings) with
/// root's privileges. Under sudo the build runs as the invoking user
/// instead.
fn check_build_user(root: &Path, allow_root_build: bool) -> Result<(), EscapeError> {
    use std::os::unix::fs::MetadataExt;
    let user = crate::user::invoker();
    if allow_root_build || user.via_sudo || user.uid != 0 {
        return Ok(());
    }
    let owner = std::fs::metadata(root).map_or(0, |m| m.uid());
    if owner == 0 {
        return Ok(());
    }
    Err(EscapeError::RootOnForeignTree {
        root: root.to_path_buf(),
        owner,
    })
}

impl Request {
    /// Checks `--source` (a directory in a Go module) and `--go` (a working
    /// go command), or that some toolchain can be found.
    ///
    /// # Errors
    /// What is wrong with them ([`EscapeError::is_toolchain`] tells which).
    pub fn new(
        source: &Path,
        go: Option<&Path>,
        allow_root_build: bool,
    ) -> Result<Request, EscapeError> {
        let (root, module_path) = find_module(source)?;
        check_build_user(&root, allow_root_build)?;
        match go {
            Some(g) => {
                go_version(g)?;
            }
            None => {
                if candidates("go").is_empty() {
                    return Err(EscapeError::NoToolchain { for_analysis: true });
                }
            }
        }
        Ok(Request {
            root,
            module_path,
            go: go.map(Path::to_path_buf),
        })
    }

    /// Runs the analysis for a target with build info `info`.
    ///
    /// # Errors
    /// Why the go command could not list or compile the module.
    pub fn run(&self, info: &BuildInfo) -> Result<Analysis, EscapeError> {
        let t0 = Instant::now();
        let toolchain = find_toolchain(self.go.as_deref(), &info.go_version)?;
        let mut warnings = Vec::new();
        let mut notes = Vec::new();
        warnings.extend(version_warning(&info.go_version, &toolchain));
        if !info.main_module.is_empty() && info.main_module != self.module_path {
            warnings.push(format!(
                "the target was built from module {}, but {} is module {}: reasons are for the wrong code",
                info.main_module,
                self.root.display(),
                self.module_path
            ));
        }
        let plan = build_plan(info, &self.module_path, &self.root, &toolchain.version);
        warnings.extend(plan.warnings.iter().cloned());
        let packages = list_packages(&toolchain.go, &self.root, &plan)?;
        let main = packages
            .iter()
            .find(|p| p.import_path == info.path && p.name == "main")
            .map(|p| p.import_path.clone());
        let package = match &main {
            Some(m) => m.clone(),
            None => {
                notes.push(format!(
                    "the target's main package {} is not in {}: compiling every package",
                    if info.path.is_empty() {
                        "?"
                    } else {
                        &info.path
                    },
                    self.root.display()
                ));
                "./...".to_string()
            }
        };
        let (w, n) = vcs_check(info, &self.root);
        warnings.extend(w);
        notes.extend(n);
        let text = compile(&toolchain.go, &self.root, &plan, &package)?;
        let out = super::parse::parse(&text);
        let module = super::index::ModuleInfo {
            root: self.root.clone(),
            path: self.module_path.clone(),
            main_package: main,
        };
        let index = super::index::EscapeIndex::build(
            module,
            packages,
            out,
            &super::index::DirSources(self.root.clone()),
        );
        Ok(Analysis {
            index,
            toolchain,
            target_version: info.go_version.clone(),
            package,
            warnings,
            notes,
            took: t0.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(settings: &[(&str, &str)]) -> BuildInfo {
        let mut b = BuildInfo::default();
        b.go_version = "go1.27.3".into();
        b.settings = settings
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        b
    }

    #[test]
    fn module_lines() {
        assert_eq!(
            module_path("module example.com/x\n\ngo 1.21\n").as_deref(),
            Some("example.com/x")
        );
        assert_eq!(
            module_path("// c\nmodule \"example.com/q\" // x\n").as_deref(),
            Some("example.com/q")
        );
        assert_eq!(module_path("modulex y\n"), None);
        assert_eq!(module_path("go 1.21\n"), None);
    }

    #[test]
    fn plans() {
        let p = build_plan(
            &info(&[
                ("-tags", "netgo,prod"),
                ("-gcflags", "all=-N -l"),
                ("CGO_ENABLED", "0"),
                ("GOARCH", "amd64"),
                ("GOOS", "linux"),
            ]),
            "example.com/m",
            Path::new("/nonexistent"),
            "go1.27.3",
        );
        assert_eq!(
            p.args,
            [
                "-mod=readonly",
                "-buildvcs=false",
                "-tags=netgo,prod",
                "-pgo=off",
                "-gcflags=all=-N -l",
                "-gcflags=example.com/m/...=-N -l -m=2",
            ]
        );
        assert!(p.env.contains(&("CGO_ENABLED".into(), Some("0".into()))));
        assert!(p.env.contains(&("GOEXPERIMENT".into(), None)));
        assert!(p.warnings.is_empty());

        let p = build_plan(
            &info(&[("-pgo", "/nonexistent/default.pgo"), ("-gcflags", "-l")]),
            "m",
            Path::new("/nonexistent"),
            "go1.20.1",
        );
        assert_eq!(
            p.args,
            [
                "-mod=readonly",
                "-buildvcs=false",
                "-gcflags=all=-l",
                "-gcflags=m/...=-l -m=2"
            ]
        );
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn version_warnings() {
        let tc = |v: &str| Toolchain {
            go: "/usr/bin/go".into(),
            version: v.into(),
            origin: "PATH".into(),
        };
        assert_eq!(version_warning("go1.27.3", &tc("go1.27.3")), None);
        let w = version_warning("go1.21.13", &tc("go1.27.3")).unwrap();
        assert!(
            w.contains("built with go1.21.13") && w.contains("ran go1.27.3"),
            "{w}"
        );
        assert!(w.contains("differ between releases"), "{w}");
        let w = version_warning("go1.27.1", &tc("go1.27.3")).unwrap();
        assert!(w.contains("patch releases"), "{w}");
    }

    #[test]
    fn modules_are_found_upwards() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("go.mod"), "module example.com/up\n").unwrap();
        std::fs::create_dir_all(d.path().join("cmd/x")).unwrap();
        let (root, path) = find_module(&d.path().join("cmd/x")).unwrap();
        assert_eq!(root, d.path());
        assert_eq!(path, "example.com/up");
        assert!(find_module(&d.path().join("missing")).is_err());
    }
}
