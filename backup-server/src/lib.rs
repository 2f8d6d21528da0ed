//! The backup host's library: store, planner, scheduler, state db, restore, compaction and
//! report. Not built yet: see the backup-server issues.
