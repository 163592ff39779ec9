//! Whether this node can do its work: what `/readyz` answers, so a load balancer takes a node
//! whose database is gone, whose schema is behind, or whose worker died out of rotation.

use super::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long the database may take to answer the readiness check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether the delivery worker of this node runs; set by the worker's task.
#[derive(Debug, Default)]
pub struct WorkerRunning(AtomicBool);

impl WorkerRunning {
    /// Marks the worker as running until the returned guard is dropped (when the worker
    /// returns, or panics).
    pub fn enter(self: &Arc<Self>) -> impl Drop + use<> {
        struct Guard(Arc<WorkerRunning>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.0.store(false, Ordering::SeqCst);
            }
        }
        self.0.store(true, Ordering::SeqCst);
        Guard(Arc::clone(self))
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Herald {
    /// This node's worker flag, for the task that runs the worker.
    pub fn worker_running(&self) -> &Arc<WorkerRunning> {
        &self.worker_running
    }

    /// `Ok` when the database answers with a current schema and the worker runs; otherwise
    /// the reason, phrased for an operator (never a secret).
    pub async fn readiness(&self) -> std::result::Result<(), String> {
        if !self.worker_running.get() {
            return Err("the delivery worker is not running".into());
        }
        match tokio::time::timeout(CHECK_TIMEOUT, self.store.check_schema()).await {
            Err(_) => Err(format!(
                "the database did not answer within {} s",
                CHECK_TIMEOUT.as_secs()
            )),
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(match e.outage() {
                Some(outage) => outage.to_string(),
                None => match e {
                    crate::storage::StorageError::Schema(schema) => schema.to_string(),
                    _ => "the database answered with an error".into(),
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_worker_flag_falls_when_the_worker_returns_or_panics() {
        let flag = Arc::new(WorkerRunning::default());
        assert!(!flag.get());
        let running = flag.enter();
        assert!(flag.get());
        drop(running);
        assert!(!flag.get());
        let panicking = tokio::spawn({
            let flag = Arc::clone(&flag);
            async move {
                let _running = flag.enter();
                panic!("the worker failed");
            }
        });
        assert!(panicking.await.is_err());
        assert!(!flag.get(), "a panicked worker is not running");
    }
}
