//! The gateway's background work as Pingora services: each `app::Task` becomes one, and
//! calls a plain `async fn` of the module that owns the work (so nothing outside `gateway`
//! implements a Pingora service).

use crate::app::Task;
use crate::auth::jwks::RemoteKeys;
use crate::auth::revocation::Revocations;
use crate::reload::Reloader;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::ServiceWithDependents;
use std::sync::Arc;
use std::time::Duration;

/// How often a shared revocation list is read whole again (besides pub/sub).
const REVOCATION_RESYNC: Duration = Duration::from_secs(30);

/// The Pingora service of one task.
pub fn service(task: Task) -> Box<dyn ServiceWithDependents> {
    match task {
        Task::RefreshKeys { provider, keys } => Box::new(background_service(
            &format!("jwks {provider}"),
            JwksRefresher(keys),
        )),
        Task::SyncRevocations(list) => {
            Box::new(background_service("revocation sync", RevocationSync(list)))
        }
        Task::ReloadFiles { files, interval } => Box::new(background_service(
            "file reloader",
            FileReloader(Reloader { files, interval }),
        )),
    }
}

/// Keeps one provider's keys current.
struct JwksRefresher(Arc<RemoteKeys>);

#[async_trait]
impl BackgroundService for JwksRefresher {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.keep_fresh(shutdown).await;
    }
}

/// Keeps a shared revocation list in step with Redis (pub/sub, reload on reconnect).
struct RevocationSync(Arc<Revocations>);

#[async_trait]
impl BackgroundService for RevocationSync {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.sync_loop(REVOCATION_RESYNC, shutdown).await;
    }
}

/// Reloads changed files (API keys, signing keys, CRLs).
struct FileReloader(Reloader);

#[async_trait]
impl BackgroundService for FileReloader {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.run(shutdown).await;
    }
}
