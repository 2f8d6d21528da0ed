//! The answer to each request, one function per request: the names are checked, the spool is
//! asked on the blocking pool, and the reply goes out frame by frame through the connection.
//! A spool error becomes the protocol's error code (docs/protocol.md, "Error codes"): for the
//! whole request, or for one item of a multi-item request.

use super::connection::{Conn, End};
use super::SpoolAccess;
use crate::spool::SpoolError;
use formats::protocol::{self as wire, encode_data_header, ErrorCode, ErrorReply, Reply, Request};
use std::fs::File;
use std::io::{self, Read};
use std::sync::Arc;

/// Answers one request: its whole reply, ending with End or Error. An `Err` means the
/// connection is over; a failed request is an `Ok` whose reply says why.
pub(super) async fn answer<S: SpoolAccess>(
    conn: &mut Conn<S>,
    id: u32,
    req: Request,
) -> Result<(), End> {
    match req {
        Request::Ping => ping(conn, id).await,
        Request::ListUsers => list_users(conn, id).await,
        Request::ListFolders { user } => {
            if let Err(e) = check_names(&user, None) {
                return conn.reply_error(id, e).await;
            }
            list_folders(conn, id, user).await
        }
        Request::CopyMeta { user, uniqueid } => {
            if let Err(e) = check_names(&user, Some(&uniqueid)) {
                return conn.reply_error(id, e).await;
            }
            copy_meta(conn, id, user, uniqueid).await
        }
        Request::FetchMessages {
            user,
            uniqueid,
            uids,
        } => {
            if let Err(e) = check_names(&user, Some(&uniqueid)) {
                return conn.reply_error(id, e).await;
            }
            fetch_messages(conn, id, Arc::from(user), Arc::from(uniqueid), uids).await
        }
        Request::FetchUserFiles { user, ids } => {
            let checked = check_names(&user, None).and_then(|()| {
                ids.iter().try_for_each(|i| match i {
                    wire::UserFileId::SieveScript(name) => crate::spool::check_script_name(name)
                        .map_err(|e| spool_error(&e, "checking names")),
                    _ => Ok(()),
                })
            });
            if let Err(e) = checked {
                return conn.reply_error(id, e).await;
            }
            fetch_user_files(conn, id, Arc::from(user), ids).await
        }
    }
}

/// PING: an empty reply.
async fn ping<S: SpoolAccess>(conn: &mut Conn<S>, id: u32) -> Result<(), End> {
    conn.reply(id, Reply::End { items: 0 }).await
}

/// LIST_USERS: USERS frames of at most 8,192 users each, then END.
async fn list_users<S: SpoolAccess>(conn: &mut Conn<S>, id: u32) -> Result<(), End> {
    let users = match conn.blocking(|s| s.users()).await {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => return conn.reply_error(id, spool_error(&e, "listing users")).await,
        Err(e) => return conn.reply_error(id, e).await,
    };
    let total = users.len() as u64;
    // Encoded and written a slice at a time: the encoded list is never whole in memory, and
    // the shared list is turned into protocol entries only a slice at a time.
    let mut start = 0;
    loop {
        let end = (start + 8192).min(users.len());
        let batch = users.entries(start..end);
        start = end;
        if batch.is_empty() && total > 0 {
            break;
        }
        conn.out.clear();
        if let Err(e) = wire::encode_users(id, &batch, &mut conn.out) {
            conn.out.clear();
            return conn
                .reply_error(id, ErrorReply::new(ErrorCode::Internal, e.to_string()))
                .await;
        }
        conn.write_out().await?;
        if batch.is_empty() {
            break;
        }
    }
    conn.reply(id, Reply::End { items: total }).await
}

/// LIST_FOLDERS: FOLDERS frames, the USER_FILES frame, then END.
async fn list_folders<S: SpoolAccess>(
    conn: &mut Conn<S>,
    id: u32,
    user: String,
) -> Result<(), End> {
    let what = format!("listing the folders of user {user:?}");
    let listing = match conn.blocking(move |s| s.folders(&user)).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return conn.reply_error(id, spool_error(&e, &what)).await,
        Err(e) => return conn.reply_error(id, e).await,
    };
    let count = listing.folders.len() as u64;
    conn.out.clear();
    if let Err(e) = wire::encode_folders(id, &listing.folders, &mut conn.out) {
        conn.out.clear();
        return conn
            .reply_error(id, ErrorReply::new(ErrorCode::Internal, e.to_string()))
            .await;
    }
    conn.write_out().await?;
    conn.reply(id, Reply::UserFiles(listing.user_files)).await?;
    conn.reply(id, Reply::End { items: count }).await
}

/// COPY_META: the meta files, copied whole under Cyrus's locks before anything is sent, each
/// as META_FILE and DATA frames; then END.
async fn copy_meta<S: SpoolAccess>(
    conn: &mut Conn<S>,
    id: u32,
    user: String,
    uniqueid: String,
) -> Result<(), End> {
    let what = format!("copying the meta files of folder {uniqueid} of user {user:?}");
    let copy = match conn.blocking(move |s| s.copy_meta(&user, &uniqueid)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return conn.reply_error(id, spool_error(&e, &what)).await,
        Err(e) => return conn.reply_error(id, e).await,
    };
    let n = copy.files().count() as u64;
    for (kind, (bytes, stat)) in copy.files() {
        conn.reply(
            id,
            Reply::MetaFile {
                kind,
                stat: *stat,
                size: bytes.len() as u64,
            },
        )
        .await?;
        conn.send_data(id, bytes).await?;
    }
    conn.reply(id, Reply::End { items: n }).await
}

/// FETCH_MESSAGES: per UID, MESSAGE and DATA frames (the file read a chunk at a time), GONE or
/// ITEM_ERROR; then END. An unknown user or folder ends the reply with one ERROR.
async fn fetch_messages<S: SpoolAccess>(
    conn: &mut Conn<S>,
    id: u32,
    user: Arc<str>,
    uniqueid: Arc<str>,
    uids: Vec<u32>,
) -> Result<(), End> {
    let chunk = conn.shared.settings.data_chunk;
    let mut buf: Vec<u8> = Vec::new();
    let mut done = 0u64;
    for uid in uids {
        // Open and read the first chunk in one trip to the pool: most messages are
        // smaller than a chunk, and then this is the only one.
        let (u, f) = (user.clone(), uniqueid.clone());
        let mut b = std::mem::take(&mut buf);
        let opened = conn
            .blocking(move |s| -> Result<Option<(File, u64, Vec<u8>)>, Step> {
                let Some((mut file, size)) = s.open_message(&u, &f, uid).map_err(Step::Spool)?
                else {
                    return Ok(None);
                };
                fill(&mut file, &mut b, chunk, size).map_err(Step::Read)?;
                Ok(Some((file, size, b)))
            })
            .await;
        let what = || format!("message UID {uid} of folder {uniqueid} of user {user:?}");
        let (mut file, size, b) = match opened {
            Err(e) => return conn.reply_error(id, e).await,
            Ok(Ok(None)) => {
                conn.reply(id, Reply::Gone { uid }).await?;
                done += 1;
                continue;
            }
            Ok(Ok(Some(x))) => x,
            Ok(Err(Step::Spool(e))) => {
                let reply = spool_error(&e, &what());
                if is_request_error(&e) {
                    // The user or folder is not there (any more): no UID can succeed.
                    return conn.reply_error(id, reply).await;
                }
                conn.reply(id, Reply::ItemError(reply)).await?;
                done += 1;
                continue;
            }
            Ok(Err(Step::Read(e))) => {
                let reply = ErrorReply::new(ErrorCode::Io, format!("reading {}: {e}", what()));
                conn.reply(id, Reply::ItemError(reply)).await?;
                done += 1;
                continue;
            }
        };
        buf = b;
        conn.reply(id, Reply::Message { uid, size }).await?;
        let mut sent = 0u64;
        loop {
            // `buf` holds what the last read gave for offset `sent`.
            let expected = (size - sent).min(chunk as u64) as usize;
            let got = buf.len();
            if got > 0 {
                conn.out.clear();
                let _ = encode_data_header(id, got, &mut conn.out);
                conn.write_out().await?;
                let data = std::mem::take(&mut buf);
                let res = conn.write_bytes(&data).await;
                buf = data;
                res?;
                sent += got as u64;
            }
            if sent >= size {
                break;
            }
            if got < expected {
                // The file ended before `size`: it shrank under us.
                let reply = ErrorReply::new(
                    ErrorCode::Io,
                    format!("{}: file ended after {sent} of {size} bytes", what()),
                );
                conn.reply(id, Reply::ItemError(reply)).await?;
                break;
            }
            let mut b = std::mem::take(&mut buf);
            let next = conn
                .blocking(move |_| {
                    let r = fill(&mut file, &mut b, chunk, size - sent);
                    (file, b, r)
                })
                .await;
            match next {
                Err(e) => return conn.reply_error(id, e).await,
                Ok((f, b, Ok(()))) => {
                    file = f;
                    buf = b;
                }
                Ok((_, b, Err(e))) => {
                    buf = b;
                    let reply = ErrorReply::new(ErrorCode::Io, format!("reading {}: {e}", what()));
                    conn.reply(id, Reply::ItemError(reply)).await?;
                    break;
                }
            }
        }
        done += 1;
        // A huge message must not keep its buffer; a chunk-sized one is reused.
        buf.clear();
        buf.shrink_to(chunk);
    }
    conn.reply(id, Reply::End { items: done }).await
}

/// FETCH_USER_FILES: per id, USER_FILE and DATA frames, ABSENT or ITEM_ERROR; then END.
async fn fetch_user_files<S: SpoolAccess>(
    conn: &mut Conn<S>,
    id: u32,
    user: Arc<str>,
    ids: Vec<wire::UserFileId>,
) -> Result<(), End> {
    let n = ids.len() as u64;
    for file_id in ids {
        let u = user.clone();
        let fid = file_id.clone();
        let read = conn.blocking(move |s| s.read_user_file(&u, &fid)).await;
        let what = || format!("{file_id} of user {user:?}");
        match read {
            Err(e) => return conn.reply_error(id, e).await,
            Ok(Ok(None)) => conn.reply(id, Reply::Absent { id: file_id }).await?,
            Ok(Ok(Some((bytes, stat)))) => {
                conn.reply(
                    id,
                    Reply::UserFile {
                        id: file_id,
                        stat,
                        size: bytes.len() as u64,
                    },
                )
                .await?;
                conn.send_data(id, &bytes).await?;
            }
            Ok(Err(e)) => {
                let reply = spool_error(&e, &what());
                if is_request_error(&e) {
                    return conn.reply_error(id, reply).await;
                }
                conn.reply(id, Reply::ItemError(reply)).await?;
            }
        }
    }
    conn.reply(id, Reply::End { items: n }).await
}

/// A step of a message read that failed.
enum Step {
    Spool(SpoolError),
    Read(io::Error),
}

/// Reads into `buf` (cleared first) until it holds `min(chunk, left)` bytes or the file
/// ends.
fn fill(file: &mut File, buf: &mut Vec<u8>, chunk: usize, left: u64) -> io::Result<()> {
    let want = usize::try_from(left).unwrap_or(usize::MAX).min(chunk);
    buf.clear();
    buf.resize(want, 0);
    let mut got = 0;
    while got < want {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(())
}

/// The spool's own name checks ([`crate::spool::check_name`]), made before a request
/// costs a trip to the blocking pool; the spool checks again and looks the names up in
/// the mailbox list.
fn check_names(user: &str, uniqueid: Option<&str>) -> Result<(), ErrorReply> {
    crate::spool::check_name("user", user)
        .and_then(|()| uniqueid.map_or(Ok(()), crate::spool::check_uniqueid))
        .map_err(|e| spool_error(&e, "checking names"))
}

/// Whether a spool error concerns the request as a whole (who, which folder, the server's
/// configuration), not one item of it.
fn is_request_error(e: &SpoolError) -> bool {
    if let SpoolError::Shared(e) = e {
        return is_request_error(e);
    }
    matches!(
        e,
        SpoolError::UnknownUser { .. }
            | SpoolError::UnknownFolder { .. }
            | SpoolError::BadName { .. }
            | SpoolError::Conf { .. }
            | SpoolError::Config(_)
            | SpoolError::MailboxList { .. }
    )
}

fn spool_code(e: &SpoolError) -> ErrorCode {
    match e {
        SpoolError::UnknownUser { .. } => ErrorCode::UnknownUser,
        SpoolError::UnknownFolder { .. } => ErrorCode::UnknownFolder,
        SpoolError::BadName { .. } => ErrorCode::BadName,
        SpoolError::Io { .. } | SpoolError::Lock { .. } | SpoolError::LockTimeout { .. } => {
            ErrorCode::Io
        }
        SpoolError::Conf { .. }
        | SpoolError::Config(_)
        | SpoolError::MailboxList { .. }
        | SpoolError::BadHeader { .. }
        | SpoolError::BadIndex { .. }
        | SpoolError::SieveSource { .. } => ErrorCode::Spool,
        SpoolError::Shared(e) => spool_code(e),
    }
}

/// The error reply for a spool error met while doing `what`.
fn spool_error(e: &SpoolError, what: &str) -> ErrorReply {
    let code = spool_code(e);
    let text = match code {
        // The spool's own text already says it all ("unknown user \"alice\": ...").
        ErrorCode::UnknownUser | ErrorCode::UnknownFolder | ErrorCode::BadName => e.to_string(),
        _ => format!("{what}: {e}"),
    };
    ErrorReply::new(code, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_lock_timeout_is_an_io_error_naming_the_file() {
        let e = SpoolError::LockTimeout {
            path: "/var/lib/cyrus/lock/*U*alice.lock".into(),
            waited: Duration::from_secs(60),
        };
        assert!(
            !is_request_error(&e),
            "one item of a request, not the request"
        );
        let reply = spool_error(&e, "copying the meta files of folder x of user \"alice\"");
        assert_eq!(reply.code, ErrorCode::Io);
        assert!(
            reply.text.contains(
                "/var/lib/cyrus/lock/*U*alice.lock: gave up waiting for the lock after 60.0 s"
            ),
            "{}",
            reply.text
        );
    }
}
