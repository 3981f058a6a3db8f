//! A real faultline daemon (`App`) on port 0 with one token per scope, its
//! printed incident cards captured, stopped when dropped.

use std::sync::Arc;

use faultline::app::App;
use faultline::config::{ApiToken, Scope, Settings};
use faultline::incident::Incident;
use faultline::notify::StdoutNotifier;
use faultline::pipeline::Clock;
use faultline::rules::RuleSet;
use secrecy::SecretString;

use super::http::Captured;

pub const READ: &str = "read-secret-1";
pub const WRITE: &str = "write-secret-1";
pub const INGEST: &str = "ingest-secret-1";

/// The running daemon.
pub struct Server {
    /// Its runtime (tests block on it).
    pub rt: tokio::runtime::Runtime,
    /// The bound port.
    pub port: u16,
    /// Its store.
    pub store: Arc<dyn faultline::store::Store>,
    printed: Captured,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    /// Starts it with a request body limit.
    pub fn start(body_limit: usize) -> Server {
        let mut settings = Settings::default();
        settings.api.body_limit_bytes = body_limit;
        Server::start_with(settings)
    }

    /// Starts it with `settings` (listen and API tokens are the harness's).
    pub fn start_with(mut settings: Settings) -> Server {
        let rt = tokio::runtime::Runtime::new().unwrap();
        settings.listen = "127.0.0.1:0".into();
        let token = |name: &str, secret: &str, scope| ApiToken {
            name: name.into(),
            secret: SecretString::from(secret.to_string()),
            scope,
        };
        settings.api.tokens = vec![
            token("reader", READ, Scope::Read),
            token("writer", WRITE, Scope::Write),
            token("pusher", INGEST, Scope::Ingest),
        ];
        let printed = Captured::default();
        let notifier = Arc::new(StdoutNotifier::with_writer(printed.clone()));
        let app = rt
            .block_on(App::build_with(
                &settings,
                RuleSet::embedded(),
                Clock::EventTime,
                notifier,
            ))
            .unwrap();
        let port = app.port();
        let store = app.store();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(app.run_until(async move {
            let _ = stop_rx.await;
        }));
        Server {
            rt,
            port,
            store,
            printed,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Puts an incident straight into the store.
    pub fn insert(&self, inc: &Incident) {
        self.rt.block_on(self.store.upsert(inc, &[], &[])).unwrap();
    }

    /// What the notifier printed so far.
    pub fn printed(&self) -> String {
        String::from_utf8(self.printed.0.lock().unwrap().clone()).unwrap()
    }
}

impl Server {
    /// Stops it and returns how `run_until` ended.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => self.rt.block_on(task)?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = self.rt.block_on(task);
        }
    }
}
