-- The daily backup-age report on a PostgreSQL state db (a fleet; docs/fleet.md): the twin
-- of docs/report.sql, row for row the same result. `backup-server report` runs this very
-- text (include_str!) when state_db is postgres://..., binding $1 (now, unix seconds) and
-- $2 (max_age_hours); NULL falls back to the server's clock and 24 h. In psql:
--
--   \set report `cat docs/report-postgres.sql`
--   PREPARE report(bigint, bigint) AS :report;
--   EXECUTE report(NULL, NULL);            -- or EXECUTE report(1795406400, 36);
--
-- It differs from report.sql only where the two databases differ: $1/$2 for :now and
-- :max_age_hours, extract(epoch ...) for strftime('%s', 'now'), and `over` as 1/0 written
-- the same way. The fleet's users are all in it, whatever their backup host.
WITH params AS (
    SELECT CAST(coalesce(CAST($1 AS BIGINT), CAST(extract(epoch FROM now()) AS BIGINT)) AS BIGINT) AS now,
           CAST(coalesce(CAST($2 AS BIGINT), 24) AS BIGINT) AS max_age_hours
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
 GROUP BY a.age_hours, p.max_age_hours
 ORDER BY a.age_hours IS NULL, a.age_hours;
