//! `backup-server repair --user U`: a line per range of bytes lost, per damaged message
//! left out and per message lost (folder, UID, GUID), then a summary. Exit 0 when the data
//! file was whole, 2 when something was lost (the next run fetches again what the mail
//! server still has), 1 on failure.

use super::{Out, Status};
use anyhow::Context;
use backup_server::config::Config;
use backup_server::repair::{repair_user, RepairReport};
use backup_server::store::StoreOptions;
use std::io::Write;

/// `backup-server repair` arguments.
#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    /// The user.
    #[arg(long)]
    user: String,
}

/// Repairs the user's store and prints what was lost.
pub fn run(config: &Config, a: &RepairArgs, out: &mut Out<impl Write>) -> anyhow::Result<Status> {
    let opts = StoreOptions {
        chunk_cap: config.chunk_size_cap,
        gzip_level: config.gzip_level,
        ..StoreOptions::default()
    };
    let rep = repair_user(&config.store_root, &a.user, opts)
        .with_context(|| format!("repair {}", a.user))?;
    print(&rep, out)?;
    Ok(if rep.is_clean() {
        Status::Ok
    } else {
        Status::Incomplete
    })
}

fn print(r: &RepairReport, out: &mut Out<impl Write>) -> anyhow::Result<()> {
    let u = &r.user;
    let old = r.old_data_file.as_deref().unwrap_or("(none)");
    for l in &r.lost_ranges {
        out.line(format_args!(
            "user {u}: {old}: bytes {} to {} lost ({} bytes): {}",
            l.offset,
            l.offset + l.len,
            l.len,
            l.why
        ))?;
    }
    for d in &r.damaged_entries {
        out.line(format_args!(
            "user {u}: {old}: message {} in the chunk at {} hashes to {}: left out",
            d.guid.to_hex(),
            d.chunk,
            d.sha1.to_hex()
        ))?;
    }
    for m in &r.lost_messages {
        out.line(format_args!(
            "user {u}: lost: folder {:?} UID {} message {} (the next run fetches it again if the mail server still has it)",
            m.folder,
            m.uid,
            m.guid.to_hex()
        ))?;
    }
    out.line(format_args!(
        "repair {u}: {old} ({} bytes) -> {} ({} bytes): {} chunks kept, {} rewritten, {} entries; {} byte ranges lost, {} damaged messages left out, {} messages lost{}",
        r.old_len,
        r.new_data_file,
        r.new_len,
        r.chunks_copied,
        r.chunks_rewritten,
        r.entries,
        r.lost_ranges.len(),
        r.damaged_entries.len(),
        r.lost_messages.len(),
        if r.old_index_read { "" } else { " (the old index could not be read: messages lost with their folder's snapshot are not named)" }
    ))?;
    Ok(())
}
