//! SQL texts of the delivery queue that both backends run, written once: the breaker's holds
//! and releases, probes, pruning, queue figures and the hosts a claim visits. `placeholder`
//! (`?` or `$`) is the backend's parameter style; SQLite, which has no statistics to choose
//! by, is told which index to use.

use super::{BreakerStep, Unfinished, WorkspaceId};

/// `next_attempt_at` of a delivery held back by an open circuit breaker: far in the future, so
/// held rows leave the front of the queue; the first successful probe releases them.
pub const HELD: i64 = 4_000_000_000_000_000;

/// Most deliveries one statement releases when a URL's breaker closes (holds go by
/// [`HOLD_CHUNK`]). A URL with a large backlog is held or released chunk by chunk, each chunk in
/// its own transaction ([`Queue::resume`]), so a breaker that opens or closes never stalls the
/// results of other URLs behind one long update. Measured on PostgreSQL: a 25,000-row hold in the results
/// transaction delayed every other callback's results by a second, and a release of a paused
/// URL's whole backlog in one statement took up to 30 s, long enough for the leases of other
/// attempts to run out (and their deliveries to be sent twice).
pub const BREAKER_CHUNK: i64 = 1000;

/// Most deliveries one transaction holds when a URL's breaker opens: the results transaction
/// that opens it (or records a failure while its pause runs) holds that many itself, so a small
/// backlog is held with the pause, at once, and a task of the worker holds the rest, that many at
/// a time. Each chunk locks the URL's breaker row, which the results of the URL's attempts wait
/// for, with the results of every other URL in their batch. Measured on PostgreSQL at 1,000
/// events/s with a URL that never answers, when its first attempts timed out: results
/// transactions holding 1,000 rows each took 100–170 ms, one after another for over a second, and
/// then chunks of 1,000 in the task still held the breaker row for about 100 ms each; the fast
/// URL's results waited, its attempts in flight reached the per-host cap, and its callbacks
/// arrived up to 300 ms late.
pub const HOLD_CHUNK: i64 = 100;

/// Holds up to `?4`/`$4` pending deliveries of one URL (`?1`/`$1`: its host, `?2`/`$2`:
/// workspace, `?3`/`$3`: URL) that are not held yet. They are found among the host's rows that
/// are not held, in due order, through the per-host index (SQLite is told to use it; PostgreSQL
/// takes it for the order, which only that index gives), so holding again while a pause runs
/// never reads the rows already held (measured on PostgreSQL: through the per-URL index instead,
/// each chunk read the URL's 100,000 held rows again, 60–90 ms a chunk). Rows leased by attempts
/// in flight keep their lease.
pub(super) fn hold_sql(placeholder: char) -> String {
    let indexed = if placeholder == '?' {
        "INDEXED BY deliveries_due_by_host"
    } else {
        ""
    };
    format!(
        "UPDATE deliveries SET next_attempt_at = 4000000000000000
         WHERE id IN (SELECT id FROM deliveries {indexed}
                      WHERE host = {p}1 AND status = 'pending' AND next_attempt_at < 4000000000000000
                        AND workspace_id = {p}2 AND url = {p}3
                      ORDER BY host, next_attempt_at, id
                      LIMIT {p}4)",
        p = placeholder
    )
}

/// Up to `?4`/`$4` deliveries of one URL that its breaker holds, oldest first, made due at
/// `?1`/`$1` (`?2`/`$2`: workspace, `?3`/`$3`: URL). The constant is written out so the partial
/// index on held rows (`deliveries_held`, migration 3: by URL and id) applies; a test checks it
/// equals [`HELD`].
pub(super) fn release_held_sql(placeholder: char) -> String {
    format!(
        "UPDATE deliveries SET next_attempt_at = {p}1
         WHERE id IN (SELECT id FROM deliveries {held}
                      WHERE workspace_id = {p}2 AND url = {p}3 AND status = 'pending'
                        AND next_attempt_at >= 4000000000000000
                      ORDER BY id LIMIT {p}4)",
        p = placeholder,
        held = held_index(placeholder)
    )
}

/// SQLite, which has no statistics to choose by, is told to read held rows through their own
/// index; PostgreSQL picks it by itself.
fn held_index(placeholder: char) -> &'static str {
    if placeholder == '?' {
        "INDEXED BY deliveries_held"
    } else {
        ""
    }
}

/// Up to `?2`/`$2` events from before `?1`/`$1` that no delivery refers to (an event is kept
/// only for its deliveries: their payload and their log). Found through `events_by_time` and
/// checked through `deliveries_by_event` (migration 6), so a pass reads the old events and
/// nothing else, however long the log.
pub(super) fn prune_events_sql(placeholder: char) -> String {
    format!(
        "DELETE FROM events WHERE id IN (
            SELECT ev.id FROM events ev WHERE ev.occurred_at < {p}1
              AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = ev.id)
            LIMIT {p}2)",
        p = placeholder
    )
}

/// Paused URLs whose pause is over, the candidates for a probe (`?1`/`$1`: now), each with the
/// host its probe checks.
pub(super) fn pauses_over_sql(placeholder: char) -> String {
    format!(
        "SELECT workspace_id, url FROM destinations WHERE state = 'open' AND paused_until <= {placeholder}1"
    )
}

/// The host of a paused URL, for [`promote_probe_sql`]; none for a URL that does not parse
/// (stored URLs were validated when saved: this only guards against hand-edited rows).
pub(super) fn probe_host(url: &str) -> Option<String> {
    crate::domain::CallbackUrl::parse(url)
        .ok()
        .map(|u| u.host_key())
}

/// Makes one paused URL's probe due (`?1`/`$1`: now, `?2`/`$2`: workspace, `?3`/`$3`: URL,
/// `?4`/`$4`: its host), unless a delivery of that URL is due or in flight already. The probe is
/// the URL's oldest held delivery (one descent of `deliveries_held`), or when none is held its
/// oldest pending one. The two checks read the host's due rows and its leases (bounded by the
/// per-host cap), never the paused backlog; SQLite is told which index to use, having no
/// statistics to choose by.
pub(super) fn promote_probe_sql(placeholder: char) -> String {
    let (due, leased) = if placeholder == '?' {
        (
            "INDEXED BY deliveries_due_by_host",
            "INDEXED BY deliveries_leased",
        )
    } else {
        ("", "")
    };
    format!(
        "UPDATE deliveries SET next_attempt_at = {p}1
         WHERE id = COALESCE(
                 (SELECT h.id FROM deliveries h {held}
                  WHERE h.workspace_id = {p}2 AND h.url = {p}3 AND h.status = 'pending'
                    AND h.next_attempt_at >= 4000000000000000
                  ORDER BY h.id LIMIT 1),
                 (SELECT MIN(a.id) FROM deliveries a
                  WHERE a.workspace_id = {p}2 AND a.url = {p}3 AND a.status = 'pending'))
           AND (SELECT 1 FROM deliveries d {due}
                WHERE d.host = {p}4 AND d.status = 'pending' AND d.next_attempt_at <= {p}1
                  AND d.workspace_id = {p}2 AND d.url = {p}3
                LIMIT 1) IS NULL
           AND (SELECT 1 FROM deliveries l {leased}
                WHERE l.host = {p}4 AND l.lease_until > {p}1
                  AND l.workspace_id = {p}2 AND l.url = {p}3
                LIMIT 1) IS NULL",
        p = placeholder,
        held = held_index(placeholder)
    )
}

/// URLs whose breaker is closed but which still have held deliveries (see
/// [`Queue::stranded_releases`]); the held check is one descent of `deliveries_held`.
pub(super) fn stranded_releases_sql(placeholder: char) -> String {
    format!(
        "SELECT x.workspace_id, x.url FROM destinations x
         WHERE x.state = 'closed'
           AND (SELECT 1 FROM deliveries d {held}
                WHERE d.workspace_id = x.workspace_id AND d.url = x.url AND d.status = 'pending'
                  AND d.next_attempt_at >= 4000000000000000
                LIMIT 1) IS NOT NULL",
        held = held_index(placeholder)
    )
}

/// Rows of [`stranded_releases_sql`] as work for [`Queue::resume`].
pub(super) fn stranded(rows: Vec<(i64, String)>) -> Vec<Unfinished> {
    rows.into_iter()
        .map(|(workspace, url)| Unfinished {
            workspace_id: WorkspaceId(workspace),
            url,
            step: BreakerStep::Release,
        })
        .collect()
}

/// The ordering rule as the queue's statements carry it out (`d`: the delivery): no earlier
/// delivery of the same instance to the same URL is still pending. Both claims and the
/// statistics use this one text (a macro, so `concat!` can build constant statements with it).
macro_rules! not_behind_an_earlier {
    () => {
        "(SELECT 1 FROM deliveries e
          WHERE e.status = 'pending' AND e.workspace_id = d.workspace_id
            AND e.url = d.url AND e.instance_id = d.instance_id AND e.id < d.id
          LIMIT 1) IS NULL"
    };
}
pub(crate) use not_behind_an_earlier;

const NOT_BEHIND_AN_EARLIER: &str = not_behind_an_earlier!();

/// What every claim (and a test callback's insert) returns of a delivery, the columns
/// `ClaimedRow` and the SQLite claim read: one text, so a new column reaches every claim.
macro_rules! claimed_columns {
    () => {
        " RETURNING id, workspace_id, test, webhook_id, event_type, instance_id, process_name, url, host,
                     attempts, next_attempt_at, created_at, format, trace_parent,
                     CASE WHEN format = 'standard'
                          THEN (SELECT ev.instance FROM events ev WHERE ev.id = deliveries.event_id) END AS instance"
    };
}
pub(crate) use claimed_columns;

/// Which deliveries may be cancelled: pending, and not in flight (the placeholder given holds
/// now). An attempt under way is on the wire and cannot be called back.
macro_rules! cancellable {
    ($now:literal) => {
        concat!(
            "status = 'pending' AND (lease_until IS NULL OR lease_until <= ",
            $now,
            ")"
        )
    };
}
pub(crate) use cancellable;

/// The delivery log's filter (`DeliveryFilter`), as the listing, bulk redelivery and bulk
/// cancellation all apply it: `$1` the workspace, `$2` status, `$3` event type, `$4` instance,
/// `$5` the exact URLs, `$6` since, `$7` until; a NULL criterion matches everything.
macro_rules! log_filter {
    () => {
        "workspace_id = $1
           AND ($2 IS NULL OR status = $2)
           AND ($3 IS NULL OR event_type = $3)
           AND ($4 IS NULL OR instance_id = $4)
           AND ($5 IS NULL OR replace($5, ' ' || url || ' ', '') <> $5)
           AND ($6 IS NULL OR created_at >= $6)
           AND ($7 IS NULL OR created_at < $7)"
    };
}
pub(crate) use log_filter;

/// The queue-statistics query (`?1`/`$1`: now). Counting reads the pending rows' index: about
/// a tenth of a second with a million pending, once per scrape.
pub(super) fn queue_stats_sql(placeholder: char) -> String {
    // Due rows are counted and the oldest found host by host, through the per-host index (the
    // hosts found by skipping through it, as claims do): the due part of each host's range, and
    // its first claimable entry, never the paused backlogs held at the far end of the range.
    // A due row waiting behind an earlier delivery of its instance (one being retried) is
    // counted apart and does not make the queue look late.
    let due = format!(
        "d.status = 'pending' AND d.next_attempt_at <= {p}1
         AND (d.lease_until IS NULL OR d.lease_until <= {p}1)",
        p = placeholder
    );
    format!(
        "WITH RECURSIVE {hosts}
         SELECT (SELECT COUNT(*) FROM deliveries WHERE status = 'pending'),
                (SELECT COUNT(*) FROM hosts h JOIN deliveries d ON d.host = h.host
                 WHERE {due} AND {free}),
                (SELECT MIN((SELECT d.next_attempt_at FROM deliveries d
                             WHERE d.host = h.host AND {due} AND {free}
                             ORDER BY d.next_attempt_at LIMIT 1))
                 FROM hosts h WHERE h.host IS NOT NULL),
                (SELECT COUNT(*) FROM destinations WHERE state = 'open'),
                (SELECT COUNT(*) FROM hosts h JOIN deliveries d ON d.host = h.host
                 WHERE {due} AND NOT {free}),
                (SELECT COUNT(*) FROM deliveries d {held}
                 WHERE d.status = 'pending' AND d.next_attempt_at >= 4000000000000000)",
        hosts = pending_hosts_cte(placeholder),
        free = NOT_BEHIND_AN_EARLIER,
        held = held_index(placeholder),
    )
}

/// The CTE `hosts(host)`: every destination host with pending deliveries, found by skipping
/// through the per-host index (one descent per host, never a read of the queue), then one NULL
/// row. SQLite is told the index (`INDEXED BY`); the placeholder names the backend.
pub(super) fn pending_hosts_cte(placeholder: char) -> String {
    let index = if placeholder == '?' {
        "INDEXED BY deliveries_due_by_host"
    } else {
        ""
    };
    format!(
        "hosts(host) AS (
            SELECT (SELECT host FROM deliveries {index}
                    WHERE status = 'pending' ORDER BY host LIMIT 1)
            UNION ALL
            SELECT (SELECT d.host FROM deliveries d {index}
                    WHERE d.status = 'pending' AND d.host > h.host ORDER BY d.host LIMIT 1)
            FROM hosts h WHERE h.host IS NOT NULL)"
    )
}
