//! `allocwatch completions` and `allocwatch man`: what a shell and `man`
//! need, generated from the command-line definitions. Neither needs a
//! target, privileges or the eBPF programs.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::error::{AppError, Result};

/// The name the scripts complete and the pages document.
const BIN: &str = "allocwatch";

/// Prints the completion script for `args.shell` on stdout.
///
/// # Errors
/// When stdout cannot be written (a closed pipe is not an error).
pub fn completions(args: &CompletionsArgs) -> Result<()> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, BIN, &mut script);
    print(&script)
}

/// Prints allocwatch(1), or allocwatch-COMMAND(1) for `args.command`, as
/// roff on stdout.
///
/// # Errors
/// When stdout cannot be written (a closed pipe is not an error).
pub fn man(args: &ManArgs) -> Result<()> {
    let page = man_page(args.command.as_deref())?;
    print(&page)
}

/// The roff source of allocwatch(1), or of allocwatch-`command`(1).
///
/// # Errors
/// A usage error for a command allocwatch does not have.
pub fn man_page(command: Option<&str>) -> Result<Vec<u8>> {
    let mut cli = Cli::command();
    cli.build();
    let (cmd, version) = match command {
        None => (cli, true),
        Some(name) => match cli.find_subcommand(name) {
            Some(sub) => (sub.clone(), false),
            None => return Err(AppError::usage(format!("no command `{name}`"))),
        },
    };
    let examples = cmd.get_after_help().map(|h| h.to_string());
    let subcommands = cmd.get_subcommands().any(|c| !c.is_hide_set());
    let title = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
    let man = clap_mangen::Man::new(cmd);
    // clap_mangen leaves an empty date out of .TH, which shifts the
    // source and manual into the wrong fields.
    let mut out = format!(
        ".TH {title} 1 \"\" \"{BIN} {}\" \"User Commands\"\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    render(&man, examples.as_deref(), subcommands, version, &mut out)
        .map_err(|e| AppError::other(format!("cannot render the man page: {e}")))?;
    Ok(out)
}

/// The page's sections: clap_mangen's, with the examples of `--help` as an
/// EXAMPLES section whose lines stay lines.
fn render(
    man: &clap_mangen::Man,
    examples: Option<&str>,
    subcommands: bool,
    version: bool,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    // Each section clap_mangen renders alone starts with the same
    // definition of the apostrophe string; the page needs it once.
    let mut sections = Vec::new();
    man.render_name_section(&mut sections)?;
    man.render_synopsis_section(&mut sections)?;
    man.render_description_section(&mut sections)?;
    man.render_options_section(&mut sections)?;
    if subcommands {
        man.render_subcommands_section(&mut sections)?;
    }
    if version {
        man.render_version_section(&mut sections)?;
    }
    let sections = String::from_utf8_lossy(&sections);
    let mut preamble_seen = false;
    let mut lines = sections.lines().peekable();
    let mut tail = Vec::new();
    while let Some(line) = lines.next() {
        if line.starts_with(".ie \\n(.g .ds Aq")
            && lines.peek().is_some_and(|l| l.starts_with(".el .ds Aq"))
        {
            let el = lines.next().unwrap_or_default();
            if preamble_seen {
                continue;
            }
            preamble_seen = true;
            writeln!(out, "{line}\n{el}")?;
        } else if line == ".SH VERSION" {
            // After the examples, as man pages have it.
            tail.push(line);
            tail.extend(lines.by_ref());
        } else {
            writeln!(out, "{line}")?;
        }
    }
    if let Some(examples) = examples {
        let lines: Vec<&str> = examples
            .lines()
            .filter(|l| !l.trim().is_empty() && l.trim_end() != "Examples:")
            .collect();
        if !lines.is_empty() {
            writeln!(out, ".SH EXAMPLES")?;
            writeln!(out, ".PP")?;
            writeln!(out, ".nf")?;
            for line in lines {
                writeln!(out, "{}", roff_text(line.trim()))?;
            }
            writeln!(out, ".fi")?;
        }
    }
    for line in tail {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `line` as one line of roff text: backslashes and hyphens escaped, and a
/// leading `.` or `'` not taken for a request.
fn roff_text(line: &str) -> String {
    let mut s = String::with_capacity(line.len() + 8);
    if line.starts_with(['.', '\'']) {
        s.push_str("\\&");
    }
    for c in line.chars() {
        match c {
            '\\' => s.push_str("\\e"),
            '-' => s.push_str("\\-"),
            c => s.push(c),
        }
    }
    s
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is fine.
fn print(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(AppError::other(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_escapes() {
        assert_eq!(roff_text("a --pid 1"), "a \\-\\-pid 1");
        assert_eq!(roff_text(".x 'y'"), "\\&.x 'y'");
        assert_eq!(roff_text("'x"), "\\&'x");
        assert_eq!(roff_text("a\\b"), "a\\eb");
    }

    #[test]
    fn pages() {
        let top = String::from_utf8(man_page(None).unwrap()).unwrap();
        assert!(
            top.starts_with(".TH allocwatch 1 \"\" \"allocwatch "),
            "{top}"
        );
        assert_eq!(top.matches(".ds Aq").count(), 2, "{top}");
        for section in ["SYNOPSIS", "OPTIONS", "SUBCOMMANDS", "EXAMPLES", "VERSION"] {
            assert!(top.contains(&format!(".SH {section}")), "{section}: {top}");
        }
        assert!(top.contains("allocwatch\\-record(1)"), "{top}");
        let record = String::from_utf8(man_page(Some("record")).unwrap()).unwrap();
        assert!(record.starts_with(".TH allocwatch-record 1 "), "{record}");
        assert!(record.contains("\\-\\-csv"), "{record}");
        assert!(!record.contains(".SH SUBCOMMANDS"), "{record}");
        assert!(
            record.contains(
                "\nallocwatch record \\-\\-pid 1234 \\-\\-duration 10s \\-\\-json run.json\n"
            ),
            "{record}"
        );
        assert!(man_page(Some("nope")).is_err());
    }
}
