//! What users and administrators do that a restore must undo, on a private Cyrus instance:
//! create a user, delete a folder or a whole user, expunge messages, let another user read a
//! folder and set its own `\Seen` there, activate a sieve script
//! (`tests/cyrus/admin_actions.py`); and make Cyrus forget for good what delayed expunge and
//! delayed delete keep (`cyr_expire`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, Context, Result};

use crate::cyrus::{run, scripts_dir, CyrusInstance, ScriptSummary, CYRUS_BIN, HOST};

/// Whether this process runs as root (then Cyrus tools run as cyrus through runuser; else
/// through `sudo -n -u cyrus`, as start.sh does).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// A command that runs `program` as the cyrus user: Cyrus's tools must not leave files owned
/// by anyone else in its directories.
fn as_cyrus(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "cyrus", "--"]).arg(program);
        cmd
    } else {
        let mut cmd = Command::new("sudo");
        cmd.args(["-n", "-u", "cyrus", "--"]).arg(program);
        cmd
    }
}

/// The UIDs of `uids=1,2,3` in an admin_actions.py summary line.
fn uids_of(summary: &ScriptSummary) -> Result<Vec<u32>> {
    let list = summary
        .get("uids")
        .ok_or_else(|| anyhow!("no uids= in {:?}", summary.line))?;
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .with_context(|| format!("UID {s:?} in {:?}", summary.line))
        })
        .collect()
}

impl CyrusInstance {
    fn admin_action(&self, args: &[&str]) -> Result<ScriptSummary> {
        let mut cmd = Command::new("python3");
        cmd.arg(scripts_dir().join("admin_actions.py"))
            .arg(HOST)
            .arg(self.imap_port().to_string())
            .args(args);
        self.summary(cmd, "admin_actions.py", "admin_actions:")
    }

    /// Deletes `folder` of `user` (name as the user sees it): as the user, as a mail client
    /// does, or, with `as_admin`, as `admin` (which first gives itself the `x` right on it).
    pub fn delete_folder(&self, user: &str, folder: &str, as_admin: bool) -> Result<()> {
        let mut args = vec!["delete-folder", "--user", user, "--folder", folder];
        if as_admin {
            args.push("--as-admin");
        }
        self.admin_action(&args).map(|_| ())
    }

    /// As `user`, appends `message` (its bytes as they are) to `folder` (named in UTF-8;
    /// created first when missing). Returns the UID it got.
    pub fn append(&self, user: &str, folder: &str, message: &[u8]) -> Result<u32> {
        let file = tempfile::NamedTempFile::new().context("a file for the message")?;
        std::fs::write(file.path(), message).context("writing the message")?;
        let path = file.path().to_str().context("temp path")?.to_owned();
        let summary = self.admin_action(&[
            "append", "--user", user, "--folder", folder, "--file", &path,
        ])?;
        uids_of(&summary)?
            .first()
            .copied()
            .ok_or_else(|| anyhow!("append gave no UID: {:?}", summary.line))
    }

    /// Creates a user with an empty INBOX, as `admin`: `CREATE user/<user>`.
    pub fn create_user(&self, user: &str) -> Result<()> {
        self.admin_action(&["create-user", "--user", user])
            .map(|_| ())
    }

    /// Deletes the whole user as `admin`: `SETACL user/<user> admin x`, `DELETE user/<user>`.
    pub fn delete_user(&self, user: &str) -> Result<()> {
        self.admin_action(&["delete-user", "--user", user])
            .map(|_| ())
    }

    /// Renames the whole user `user` to `to` as `admin`: `RENAME user/<user> user/<to>`
    /// (start.sh sets allowusermoves: yes).
    pub fn rename_user(&self, user: &str, to: &str) -> Result<()> {
        self.admin_action(&["rename-user", "--user", user, "--to", to])
            .map(|_| ())
    }

    /// Moves the user to another partition as `admin`: `RENAME user/<user> user/<user>
    /// <partition>`.
    pub fn move_user(&self, user: &str, partition: &str) -> Result<()> {
        self.admin_action(&["rename-user", "--user", user, "--partition", partition])
            .map(|_| ())
    }

    /// As `user`, flags the messages of `uids` (a UID set like `1:3,7` or `1:*`) in `folder`
    /// `\Deleted` and expunges exactly those (UID EXPUNGE). Returns the UIDs expunged.
    pub fn expunge(&self, user: &str, folder: &str, uids: &str) -> Result<Vec<u32>> {
        let summary = self.admin_action(&[
            "expunge", "--user", user, "--folder", folder, "--uids", uids,
        ])?;
        uids_of(&summary)
    }

    /// Gives `reader` the rights `lrs` on `owner`'s `folder`, then, as `reader`, sets `\Seen`
    /// on the messages of `uids` there (the reader's own seen state, in its seen.db).
    /// Returns the UIDs marked.
    pub fn share_seen(
        &self,
        owner: &str,
        folder: &str,
        reader: &str,
        uids: &str,
    ) -> Result<Vec<u32>> {
        let summary = self.admin_action(&[
            "share-seen",
            "--owner",
            owner,
            "--folder",
            folder,
            "--reader",
            reader,
            "--uids",
            uids,
        ])?;
        uids_of(&summary)
    }

    /// Makes `script` (which must exist) the active sieve script of `user`, over ManageSieve.
    pub fn activate_sieve(&self, user: &str, script: &str) -> Result<()> {
        let port = self.sieve_port().to_string();
        self.admin_action(&[
            "sieve-activate",
            "--user",
            user,
            "--script",
            script,
            "--sieve-port",
            &port,
        ])
        .map(|_| ())
    }

    /// `cyr_expire -X 0 -D 0 -E 0` as the cyrus user: expunged messages (index records and
    /// files) and folders waiting under `DELETED.*` are really gone afterwards, as they are
    /// on a server whose nightly cyr_expire ran. Returns what cyr_expire printed (-v).
    pub fn expire_now(&self) -> Result<String> {
        let mut cmd = as_cyrus(&Path::new(CYRUS_BIN).join("cyr_expire"));
        cmd.arg("-C")
            .arg(self.imapd_conf())
            .args(["-X", "0", "-D", "0", "-E", "0", "-v"]);
        let out = run(&mut cmd, "cyr_expire").map_err(|e| self.with_log(e))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr))
    }

    /// Folders waiting under `DELETED.` (delete_mode: delayed) that belonged to `user`:
    /// internal name (e.g. `DELETED.user.u000.Work.6B119267`) -> unique id. A deleted folder
    /// keeps its unique id there until cyr_expire -D removes it.
    pub fn deleted_copies(&self, user: &str) -> Result<BTreeMap<String, String>> {
        let list = self.mboxlist()?;
        let obj = list
            .as_object()
            .ok_or_else(|| anyhow!("ctl_mboxlist -d printed no JSON object"))?;
        // Internal names spell a dot in a user name as `^`.
        let prefix = format!("DELETED.user.{}.", user.replace('.', "^"));
        Ok(obj
            .iter()
            .filter(|(name, entry)| {
                name.starts_with(&prefix) && !entry["mbtype"].as_str().unwrap_or("").contains('d')
            })
            .map(|(name, entry)| {
                (
                    name.clone(),
                    entry["uniqueid"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect())
    }
}
