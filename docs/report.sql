-- The daily backup-age report: users by whole hours since their last complete backup.
--
-- `backup-server report` runs this very text (include_str!), binding :now and
-- :max_age_hours. It runs unchanged in the sqlite3 shell against the state db; parameters
-- left unset there are NULL, so the clock is SQLite's and the limit 24 h:
--
--   sqlite3 -readonly /var/lib/mailbackup/state.sqlite3 '.read docs/report.sql'
--   sqlite3 -readonly STATE_DB '.parameter set :now 1795406400' \
--       '.parameter set :max_age_hours 36' '.read docs/report.sql'
--
-- One row per distinct age: age_hours (NULL: never backed up complete), users, over (1
-- when age_hours >= :max_age_hours, i.e. the last complete backup started at least that
-- many hours ago; always 1 for never backed up). Vanished users (vanished_at set) are left
-- out: they are no longer backed up, though their stores stay restorable. A last_success
-- later than :now (a clock step) counts as 0 hours. Rows: youngest first, "never" last.
WITH params AS (
    SELECT CAST(coalesce(:now, strftime('%s', 'now')) AS INTEGER) AS now,
           CAST(coalesce(:max_age_hours, 24) AS INTEGER) AS max_age_hours
),
ages AS (
    SELECT CASE
               WHEN u.last_success IS NULL THEN NULL
               WHEN u.last_success >= p.now THEN 0
               ELSE (p.now - u.last_success) / 3600
           END AS age_hours
      FROM users AS u, params AS p
     WHERE u.vanished_at IS NULL
)
SELECT a.age_hours,
       count(*) AS users,
       CASE WHEN a.age_hours IS NULL OR a.age_hours >= p.max_age_hours THEN 1 ELSE 0 END AS over
  FROM ages AS a, params AS p
 GROUP BY a.age_hours
 ORDER BY a.age_hours IS NULL, a.age_hours;
