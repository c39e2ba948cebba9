-- The demo report's queries, run by demo/report.py against demo/confluence.duckdb.
-- Each query starts at a "-- name:" line. target-duckdb lower-cases column names
-- (accountid for the tap's accountId) and puts every table in schema tap_confluence.

-- name: seats
-- Latest licence snapshot per site; free seats fall back to bought minus used.
SELECT cloudid, snapshotdate, purchasedseats, licensedusers,
       coalesce(remainingseats, purchasedseats - licensedusers) AS free, seatsource
FROM tap_confluence.license_subscriptions
QUALIFY row_number() OVER (PARTITION BY cloudid ORDER BY snapshotdate DESC) = 1
ORDER BY cloudid;

-- name: users_by_status
SELECT coalesce(sitepermission, '?') AS kind, coalesce(accountstatus, '?') AS status,
       count(*) AS n
FROM tap_confluence.users
GROUP BY ALL ORDER BY kind, status;

-- name: idle_from_audit
-- Until user_activity is loaded, the last thing a user did is the newest audit record
-- they authored. A seat is held by a licensed, active, human (not app) account.
WITH last_seen AS (
  SELECT cloudid, json_extract_string(author, '$.accountId') AS accountid,
         max(createdat) AS last_at
  FROM tap_confluence.audit_records GROUP BY ALL
)
SELECT u.cloudid, count(*) AS seated,
       count(*) FILTER (WHERE l.last_at IS NULL
                        OR l.last_at < now()::timestamp - INTERVAL 90 DAY) AS idle
FROM tap_confluence.users u LEFT JOIN last_seen l USING (cloudid, accountid)
WHERE u.sitepermission = 'licensed' AND u.accountstatus = 'active'
  AND u.accounttype = 'atlassian'
GROUP BY ALL ORDER BY u.cloudid;

-- name: idle_from_activity
WITH last_seen AS (
  SELECT cloudid, accountid, max(lastactivityat) AS last_at
  FROM tap_confluence.user_activity GROUP BY ALL
)
SELECT u.cloudid, count(*) AS seated,
       count(*) FILTER (WHERE l.last_at IS NULL
                        OR l.last_at < now()::timestamp - INTERVAL 90 DAY) AS idle
FROM tap_confluence.users u LEFT JOIN last_seen l USING (cloudid, accountid)
WHERE u.sitepermission = 'licensed' AND u.accountstatus = 'active'
  AND u.accounttype = 'atlassian'
GROUP BY ALL ORDER BY u.cloudid;

-- name: audit_by_category
SELECT coalesce(category, '?') AS category, count(*) AS n
FROM tap_confluence.audit_records
GROUP BY ALL ORDER BY n DESC, category;
