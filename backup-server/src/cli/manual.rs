//! `backup-server manpages --out DIR` and `backup-server completions SHELL`: the manual
//! pages (one for the program, one for each subcommand: `backup-server-find.1`, ...) and
//! the shell completions, generated from the very clap definitions the program parses, so
//! they never drift from it. The README's install steps run both; neither reads the
//! configuration.

use super::{Cli, Out, Status};
use anyhow::Context;
use clap::CommandFactory;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `backup-server manpages` arguments.
#[derive(Debug, clap::Args)]
pub struct ManpagesArgs {
    /// The directory to write the pages into (e.g. /usr/local/share/man/man1).
    #[arg(long)]
    out: PathBuf,
}

/// `backup-server completions` arguments.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Writes every page into `a.out` and prints their names.
pub fn manpages(a: &ManpagesArgs, out: &mut Out<impl Write>) -> anyhow::Result<Status> {
    for page in write_pages(&a.out)? {
        out.line(format_args!("{}", page.display()))?;
    }
    Ok(Status::Ok)
}

/// The pages, written into `dir`: their paths, sorted.
fn write_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("backup-server") && n.ends_with(".1"))
        })
        .collect();
    pages.sort();
    Ok(pages)
}

/// Prints the completion script for `a.shell`.
pub fn completions(a: &CompletionsArgs, out: &mut Out<impl Write>) -> anyhow::Result<Status> {
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "backup-server", &mut script);
    out.text(&String::from_utf8_lossy(&script))?;
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand, nested ones too, as its page's name (`backup-server-users-refresh`).
    fn names(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = format!("{prefix}-{}", sub.get_name());
            names(sub, &name, out);
            out.push(name);
        }
    }

    #[test]
    fn every_subcommand_has_a_page_and_completion() {
        let dir = tempfile::tempdir().unwrap();
        let pages = write_pages(dir.path()).unwrap();
        let mut want = vec!["backup-server".to_owned()];
        names(&Cli::command(), "backup-server", &mut want);
        assert!(want.contains(&"backup-server-find".to_owned()), "{want:?}");
        assert!(
            want.contains(&"backup-server-users-refresh".to_owned()),
            "{want:?}"
        );
        for name in &want {
            let p = dir.path().join(format!("{name}.1"));
            assert!(pages.contains(&p), "no page {}: {pages:?}", p.display());
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.starts_with(".ie") || text.contains(".TH"), "{text}");
            assert!(text.contains(".SH NAME"), "{name}: {text}");
        }
        assert_eq!(pages.len(), want.len(), "{pages:?}");
        let find = std::fs::read_to_string(dir.path().join("backup-server-find.1")).unwrap();
        assert!(find.contains("\\-\\-subject"), "{find}");

        let mut out = Out::new(Vec::new());
        completions(
            &CompletionsArgs {
                shell: clap_complete::Shell::Bash,
            },
            &mut out,
        )
        .unwrap();
        let script = String::from_utf8(out.into_inner()).unwrap();
        assert!(script.contains("backup-server") && script.contains("--subject"));
    }
}
