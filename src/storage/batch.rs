//! Carrying out one batch of the group commit: the one loop, shared by both backends, that
//! reserves the numbers of the batch's creates, applies its writes in order, tells why a
//! compare-and-set matched nothing, and plans the events and deliveries the batch fires
//! ([`Fanout::plan`]). A backend supplies only the statements ([`BatchStatements`]), run in the
//! transaction it opened; their SQL texts are written once, below, where the engines agree.

use super::fanout::{Fanout, Target};
use super::group::{self, InstanceWrite, WriteOutcome};
use super::shared::INSTANCE_COLUMNS;
use super::{InstanceRecord, Result, WorkspaceId, Written};
use crate::domain::{EventType, InstanceId, Millis, ProcessName};
use std::collections::HashMap;
use std::sync::LazyLock;

/// A value bound to a statement of this module, in the order of its `$N` parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bind<'a> {
    Int(i64),
    Text(&'a str),
}

/// A new instance of the batch: `record`, numbered `number` in the process whose key is
/// `process_key`.
pub(crate) struct NewInstance<'a> {
    pub workspace: WorkspaceId,
    pub process_key: i64,
    pub number: i64,
    pub record: &'a InstanceRecord,
}

/// The statements a batch needs, each run in the backend's transaction. Implemented by each
/// backend over its own connection type.
#[allow(async_fn_in_trait)] // Only used generically, within the crate.
pub(crate) trait BatchStatements {
    /// Runs [`RESERVE_SQL`] (workspace, process name, count): the process's key and the last
    /// number it reserved, or `None` when there is no such process.
    async fn reserve(
        &mut self,
        workspace: WorkspaceId,
        process: &ProcessName,
        count: i64,
    ) -> Result<Option<(i64, i64)>>;
    /// Stores a new instance, at once or with the batch's other rows in [`Self::fire`].
    async fn create(&mut self, new: NewInstance<'_>) -> Result<()>;
    /// Runs one compare-and-set on an instance ([`UPDATE_SQL`], [`DELETE_SQL`],
    /// [`RESTORE_SQL`]): the row as written, or `None` when nothing matched.
    async fn compare_and_set(
        &mut self,
        sql: &str,
        binds: &[Bind<'_>],
    ) -> Result<Option<InstanceRecord>>;
    /// Runs [`STATE_SQL`] (workspace, instance ID): `None` when the instance does not exist,
    /// else when it was deleted, if it is.
    async fn deleted_at(
        &mut self,
        workspace: WorkspaceId,
        id: &InstanceId,
    ) -> Result<Option<Option<i64>>>;
    /// The targets of each pair (see [`super::fanout::targets_sql`]), due at `now`, in the
    /// order of `pairs`.
    async fn targets(
        &mut self,
        pairs: &[(WorkspaceId, EventType)],
        now: Millis,
    ) -> Result<Vec<Vec<Target>>>;
    /// Inserts the events and deliveries of `plan` (and any new instances kept for it), and
    /// announces new deliveries where the backend does.
    async fn fire(&mut self, plan: &Fanout<'_>, now: Millis) -> Result<()>;
}

/// Reserves `$3` numbers of process `$2` of workspace `$1`.
pub(crate) const RESERVE_SQL: &str = "UPDATE processes SET next_number = next_number + $3
     WHERE workspace_id = $1 AND name = $2
     RETURNING id, next_number";

/// Whether instance `$2` of workspace `$1` exists and when it was deleted.
pub(crate) const STATE_SQL: &str =
    "SELECT deleted_at FROM instances WHERE workspace_id = $1 AND instance_id = $2";

/// An update if the version is still `$7` and the instance not deleted.
pub(crate) static UPDATE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE instances SET data = $1, status = $2, version = version + 1, modified_at = $3, modified_by = $4
         WHERE workspace_id = $5 AND instance_id = $6 AND version = $7 AND deleted_at IS NULL
         RETURNING {INSTANCE_COLUMNS}"
    )
});

/// A delete (into the recycle bin) if the instance is not deleted.
pub(crate) static DELETE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE instances SET deleted_at = $1, deleted_by = $2
         WHERE workspace_id = $3 AND instance_id = $4 AND deleted_at IS NULL
         RETURNING {INSTANCE_COLUMNS}"
    )
});

/// A restore if the instance is deleted.
pub(crate) static RESTORE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE instances SET deleted_at = NULL, deleted_by = NULL
         WHERE workspace_id = $1 AND instance_id = $2 AND deleted_at IS NOT NULL
         RETURNING {INSTANCE_COLUMNS}"
    )
});

/// Applies `writes` in order through `s`, at `now`, with the events and deliveries they fire
/// (each delivery keeping its write's `traces` entry): one outcome per write. The caller
/// opened the transaction and commits it.
pub(crate) async fn apply<S: BatchStatements>(
    s: &mut S,
    writes: &[InstanceWrite],
    traces: &[Option<String>],
    now: Millis,
) -> Result<Vec<WriteOutcome>> {
    // The next number of each process the batch creates in, and the process's key.
    let mut numbers = HashMap::new();
    for (workspace, process, count) in group::creates_per_process(writes) {
        if let Some((key, last)) = s.reserve(workspace, process, count).await? {
            numbers.insert((workspace.0, process.as_str()), (key, last - count + 1));
        }
    }
    let mut outcomes = Vec::with_capacity(writes.len());
    for write in writes {
        let outcome = match write {
            InstanceWrite::Create {
                workspace,
                process,
                data,
                status,
                by,
            } => match numbers.get_mut(&(workspace.0, process.as_str())) {
                None => WriteOutcome::Created(None),
                Some((key, next)) => {
                    let record = group::new_record(process, *next, data, status, by, now);
                    s.create(NewInstance {
                        workspace: *workspace,
                        process_key: *key,
                        number: *next,
                        record: &record,
                    })
                    .await?;
                    *next += 1;
                    WriteOutcome::Created(Some(record))
                }
            },
            InstanceWrite::Update {
                workspace,
                id,
                update,
                by,
            } => {
                let data = update.data.to_json();
                let binds = [
                    Bind::Text(&data),
                    Bind::Text(update.status.as_str()),
                    Bind::Int(now.0),
                    Bind::Text(by),
                    Bind::Int(workspace.0),
                    Bind::Text(id.as_str()),
                    Bind::Int(update.expected_version),
                ];
                let row = s.compare_and_set(&UPDATE_SQL, &binds).await?;
                written(s, row, *workspace, id, false).await?
            }
            InstanceWrite::Delete { workspace, id, by } => {
                let binds = [
                    Bind::Int(now.0),
                    Bind::Text(by),
                    Bind::Int(workspace.0),
                    Bind::Text(id.as_str()),
                ];
                let row = s.compare_and_set(&DELETE_SQL, &binds).await?;
                written(s, row, *workspace, id, false).await?
            }
            InstanceWrite::Restore { workspace, id, .. } => {
                let binds = [Bind::Int(workspace.0), Bind::Text(id.as_str())];
                let row = s.compare_and_set(&RESTORE_SQL, &binds).await?;
                written(s, row, *workspace, id, true).await?
            }
        };
        outcomes.push(outcome);
    }
    let fired = group::fired(writes, traces, &outcomes);
    let pairs = Fanout::pairs(&fired);
    let targets = if pairs.is_empty() {
        Vec::new()
    } else {
        s.targets(&pairs, now).await?
    };
    let plan = Fanout::plan(&fired, now, |workspace, event| {
        pairs
            .iter()
            .position(|pair| *pair == (workspace, event))
            .and_then(|i| targets.get(i))
            .map_or(&[], Vec::as_slice)
    });
    s.fire(&plan, now).await?;
    Ok(outcomes)
}

/// The outcome of a compare-and-set on an instance: the row as written, or why nothing matched.
async fn written<S: BatchStatements>(
    s: &mut S,
    row: Option<InstanceRecord>,
    workspace: WorkspaceId,
    id: &InstanceId,
    want_deleted: bool,
) -> Result<WriteOutcome> {
    let written = match row {
        Some(record) => Written::Done(Box::new(record)),
        None => match s.deleted_at(workspace, id).await? {
            None => Written::NotFound,
            Some(at) if at.is_some() != want_deleted => Written::WrongState,
            Some(_) => Written::VersionChanged,
        },
    };
    Ok(WriteOutcome::Written(written))
}
