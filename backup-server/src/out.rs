//! Standard output for the library's last printing commands, until they return reports.

/// Writes one line to standard output. When the reader has gone (`backup-server compact
/// --dry-run | head`), the process ends quietly with the status a shell gives a SIGPIPE
/// death (141), where `println!` would panic; every store change is already committed at a
/// line boundary.
pub(crate) fn out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|()| o.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("backup-server: writing to standard output: {e}");
        std::process::exit(1);
    }
}
