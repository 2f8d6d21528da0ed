//! The nightly backup: DESIGN.md, "Per-user backup, step by step" and "Scheduling the
//! nightly run". One concept per file:
//!
//! * [`plan`]: what a user's backup will do, decided from data alone (pure).
//! * [`quiet`]: the [`QuietKey`] that lets a quiet user's backup end after its listing.
//! * [`user`]: one user's backup: lock, list once, check the quiet key, open the store,
//!   carry the plan out over a backupd connection, commit.
//! * [`run`]: `backup-server run` and `users refresh`: the state db, the connections and
//!   the [scheduler](crate::scheduler) put together.
//! * [`summary`]: what a run did, and its [`Verdict`].

pub mod plan;
pub mod quiet;
pub mod run;
pub mod summary;
pub mod user;

pub use plan::{plan_for, FolderAction, Plan};
pub use quiet::QuietKey;
pub(crate) use run::client_options;
pub use run::{
    refresh, run, run_with, unix_now, NetBackend, NoProgress, RefreshError, RefreshReport,
    RequestError, RunError, RunProgress, RunRequest,
};
pub use summary::{RunSummary, UserResult, Verdict};
pub use user::{backup_user, BackupError, Missing, UserJob, UserOutcome};
