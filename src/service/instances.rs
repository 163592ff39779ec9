//! Processes, instances and the recycle bin.

use super::*;

impl Herald {
    pub async fn create_process(
        &self,
        caller: &Caller,
        name: &ProcessName,
        title: &ProcessTitle,
    ) -> Result<ProcessRecord> {
        self.store
            .create_process(caller.workspace_id, name, title, &caller.email)
            .await
            .map_err(|e| match Error::from(e) {
                Error::Conflict { code, .. } => Error::Conflict {
                    code,
                    message: format!("a process named `{name}` already exists"),
                },
                other => other,
            })
    }

    pub async fn processes(&self, caller: &Caller) -> Result<Vec<ProcessRecord>> {
        Ok(self.store.processes(caller.workspace_id).await?)
    }

    pub async fn process(&self, caller: &Caller, name: &ProcessName) -> Result<ProcessRecord> {
        self.store
            .process(caller.workspace_id, name)
            .await?
            .ok_or_else(|| process_not_found(name))
    }

    pub async fn create_instance(
        &self,
        caller: &Caller,
        process: &ProcessName,
        data: &InstanceData,
        status: Option<InstanceStatus>,
    ) -> Result<InstanceRecord> {
        let status = status.unwrap_or_else(InstanceStatus::default_status);
        self.outbound.gate.admit().await;
        let started = std::time::Instant::now();
        let created = self
            .store
            .create_instance(caller.workspace_id, process, data, &status, &caller.email)
            .await?
            .ok_or_else(|| process_not_found(process))?;
        self.committed(EventType::Created, started);
        Ok(created)
    }

    /// An instance. One in the recycle bin exists only for administrators, whose bin it is (as
    /// in the original): to anyone else it is not found.
    pub async fn instance(&self, caller: &Caller, id: &InstanceId) -> Result<InstanceRecord> {
        let record = self
            .store
            .instance(caller.workspace_id, id)
            .await?
            .ok_or_else(|| instance_not_found(id))?;
        if record.deleted_at.is_some() && caller.role != Role::Administrator {
            return Err(instance_not_found(id));
        }
        Ok(record)
    }

    pub async fn instances(
        &self,
        caller: &Caller,
        process: &ProcessName,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<Page<InstanceRecord>> {
        self.process(caller, process).await?;
        Ok(self
            .store
            .instances(caller.workspace_id, process, cursor, limit)
            .await?)
    }

    /// Applies a change with optimistic concurrency. Without `If-Match`, a concurrent writer
    /// makes this re-read and re-apply the patch (a merge patch composes); with it, the client
    /// gets 412 instead.
    pub async fn update_instance(
        &self,
        caller: &Caller,
        id: &InstanceId,
        change: &InstanceChange,
    ) -> Result<Updated> {
        for _ in 0..20 {
            let current = self.instance(caller, id).await?;
            if current.deleted_at.is_some() {
                return Err(in_recycle_bin(id));
            }
            if let Some(expected) = change.if_match
                && expected != current.version
            {
                return Err(Error::PreconditionFailed(format!(
                    "instance {id} is at version {}, not {expected}; read it again and retry",
                    current.version
                )));
            }
            let data = match &change.data {
                Some(patch) => current.data.merge_patch(patch)?,
                None => current.data.clone(),
            };
            let status = change.status.clone().unwrap_or_else(|| {
                InstanceStatus::parse(&current.status)
                    .unwrap_or_else(|_| InstanceStatus::default_status())
            });
            if data == current.data && status.as_str() == current.status {
                return Ok(Updated {
                    instance: current,
                    changed: false,
                });
            }
            let update = InstanceUpdate {
                data,
                status,
                expected_version: current.version,
            };
            self.outbound.gate.admit().await;
            let started = std::time::Instant::now();
            match self
                .store
                .update_instance(caller.workspace_id, id, &update, &caller.email)
                .await?
            {
                Written::Done(instance) => {
                    self.committed(EventType::Updated, started);
                    return Ok(Updated {
                        instance: *instance,
                        changed: true,
                    });
                }
                Written::NotFound => return Err(instance_not_found(id)),
                Written::WrongState => return Err(in_recycle_bin(id)),
                Written::VersionChanged => continue,
            }
        }
        Err(Error::Conflict {
            code: "too_much_contention",
            message: format!("instance {id} is being changed by too many writers at once; retry"),
        })
    }

    pub async fn delete_instance(&self, caller: &Caller, id: &InstanceId) -> Result<()> {
        self.outbound.gate.admit().await;
        let started = std::time::Instant::now();
        match self
            .store
            .delete_instance(caller.workspace_id, id, &caller.email)
            .await?
        {
            Written::Done(_) => {
                self.committed(EventType::Deleted, started);
                Ok(())
            }
            Written::NotFound => Err(instance_not_found(id)),
            Written::WrongState | Written::VersionChanged => Err(in_recycle_bin(id)),
        }
    }

    /// Brings an instance back from the recycle bin; administrators only, as in the original.
    pub async fn restore_instance(
        &self,
        caller: &Caller,
        id: &InstanceId,
    ) -> Result<InstanceRecord> {
        if caller.role != Role::Administrator {
            return Err(Error::Forbidden(
                "only administrators may restore instances from the recycle bin".into(),
            ));
        }
        self.outbound.gate.admit().await;
        let started = std::time::Instant::now();
        match self
            .store
            .restore_instance(caller.workspace_id, id, &caller.email)
            .await?
        {
            Written::Done(instance) => {
                self.committed(EventType::Created, started);
                Ok(*instance)
            }
            Written::NotFound => Err(instance_not_found(id)),
            Written::WrongState | Written::VersionChanged => Err(Error::Conflict {
                code: "instance_not_deleted",
                message: format!("instance {id} is not in the recycle bin"),
            }),
        }
    }

    /// Deletes an instance in the recycle bin for good; administrators only.
    pub async fn purge_instance(&self, caller: &Caller, id: &InstanceId) -> Result<()> {
        if caller.role != Role::Administrator {
            return Err(Error::Forbidden(
                "only administrators may empty the recycle bin".into(),
            ));
        }
        if self.store.purge_instance(caller.workspace_id, id).await? {
            tracing::info!(by = %caller.email, instance = %id, "instance purged from the recycle bin");
            return Ok(());
        }
        match self.store.instance(caller.workspace_id, id).await? {
            Some(_) => Err(Error::Conflict {
                code: "instance_not_deleted",
                message: format!("instance {id} is not in the recycle bin"),
            }),
            None => Err(instance_not_found(id)),
        }
    }

    /// Deletes for good what has been in the recycle bin longer than `keep` (every workspace),
    /// a batch at a time; returns how many.
    pub async fn purge_recycle_bin(&self, keep: std::time::Duration) -> Result<u64> {
        let before = Millis(Millis::now().0 - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
        let mut purged = 0;
        loop {
            let n = self.store.purge_recycle_bin(before, 500).await?;
            purged += n;
            if n < 500 {
                return Ok(purged);
            }
        }
    }

    pub async fn recycle_bin(
        &self,
        caller: &Caller,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<Page<InstanceRecord>> {
        if caller.role != Role::Administrator {
            return Err(Error::Forbidden(
                "only administrators may open the recycle bin".into(),
            ));
        }
        Ok(self
            .store
            .recycle_bin(caller.workspace_id, cursor, limit)
            .await?)
    }
}
