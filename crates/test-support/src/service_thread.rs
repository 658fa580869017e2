//! `ServiceHandle`: a service run inside the test process on a thread and runtime of its own, as if it were a
//! process, that a test can stop gracefully or kill; a panic on any of its threads is recorded and reported, never
//! lost. Which services a stack runs is `test_stack.rs`.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::harness_failure::HarnessFailure;

/// How long a graceful stop may take: the test settings drain streams for 2 s and running jobs for 5 s.
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// How long a kill may take: it only drops the service's tasks.
const KILL_LIMIT: Duration = Duration::from_secs(10);

/// The panics seen on one service's threads, in order.
type RecordedPanics = Arc<Mutex<Vec<String>>>;

thread_local! {
    /// Set on every thread a service runs on, so the panic hook knows whose crash it saw.
    static SERVICE_PANICS: RefCell<Option<RecordedPanics>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that records panics on service threads, then prints as before.
/// tokio catches a panicking task and carries on, so without this a crashed worker task leaves no trace but a
/// line on stderr.
fn install_service_panic_recorder() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |panic| {
            let _ = SERVICE_PANICS.try_with(|slot| {
                if let Some(panics) = slot.borrow().as_ref() {
                    lock_panics(panics).push(describe_panic(panic));
                }
            });
            previous_hook(panic);
        }));
    });
}

fn describe_panic(panic: &std::panic::PanicHookInfo<'_>) -> String {
    let payload = panic.payload();
    let message = payload
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    match panic.location() {
        Some(location) => format!("{message} (at {location})"),
        None => message,
    }
}

/// The recorded panics, even if a panic poisoned the lock (the list itself stays whole).
fn lock_panics(panics: &RecordedPanics) -> std::sync::MutexGuard<'_, Vec<String>> {
    panics.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A service running inside the test process on its own thread and tokio runtime, like a process of its own:
/// stopping it runs its graceful shutdown, killing it drops every task it spawned at once, as a crash would.
///
/// A crash is never silent: a panic on the service's threads (in its own future or in any task it spawned)
/// makes [`Self::stop`] and [`Self::kill`] panic, and so does a stop that does not finish in time. A handle
/// dropped without either panics too if its service crashed.
#[derive(Debug)]
pub struct ServiceHandle {
    /// The bound address, for HTTP services.
    pub address: Option<SocketAddr>,
    name: String,
    shutdown: Option<oneshot::Sender<()>>,
    kill: Option<oneshot::Sender<()>>,
    finished: Option<oneshot::Receiver<()>>,
    panics: RecordedPanics,
    /// Set once a stop or kill has reported its outcome, so the drop does not report it again.
    outcome_reported: bool,
}

impl ServiceHandle {
    pub fn url(&self) -> String {
        format!("http://{}", self.address.expect("this service listens on HTTP"))
    }

    /// Asks the service to shut down gracefully and waits (bounded) until it has; panics if it crashed at any
    /// time or did not stop in time.
    pub async fn stop(self) {
        self.try_stop_within(STOP_LIMIT).await.unwrap_or_else(|failure| panic!("{failure}"));
    }

    /// Kills the service as a crash would: every task it spawned stops at once, nothing is cleaned up. Panics if
    /// the service had crashed before, or did not end in time.
    pub async fn kill(self) {
        self.try_kill_within(KILL_LIMIT).await.unwrap_or_else(|failure| panic!("{failure}"));
    }

    /// Like [`Self::stop`], with its own bound, returning the failure instead of panicking. A service that does
    /// not stop within `limit` is killed, so no thread outlives the test.
    pub async fn try_stop_within(mut self, limit: Duration) -> Result<(), HarnessFailure> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.wait_until_finished(limit).await
    }

    /// Like [`Self::kill`], with its own bound, returning the failure instead of panicking.
    pub async fn try_kill_within(mut self, limit: Duration) -> Result<(), HarnessFailure> {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        self.wait_until_finished(limit).await
    }

    /// `Err` if the service has crashed so far, while it keeps running: for a test that checks mid-way.
    pub fn crash_so_far(&self) -> Result<(), HarnessFailure> {
        let panics = lock_panics(&self.panics).clone();
        if panics.is_empty() {
            Ok(())
        } else {
            Err(HarnessFailure::ServiceCrashed { service: self.name.clone(), panics })
        }
    }

    async fn wait_until_finished(&mut self, limit: Duration) -> Result<(), HarnessFailure> {
        self.outcome_reported = true;
        let Some(finished) = self.finished.take() else { return self.crash_so_far() };
        match tokio::time::timeout(limit, finished).await {
            Err(_elapsed) => {
                // Kill what did not stop, so its thread and ports do not linger past the test.
                if let Some(kill) = self.kill.take() {
                    let _ = kill.send(());
                }
                self.crash_so_far()?;
                Err(HarnessFailure::ServiceDidNotStop { service: self.name.clone(), limit })
            }
            Ok(Ok(())) => self.crash_so_far(),
            // The thread ended without saying so: it unwound from a panic the hook has recorded.
            Ok(Err(_)) => self.crash_so_far().and_then(|()| {
                Err(HarnessFailure::ServiceCrashed {
                    service: self.name.clone(),
                    panics: vec!["its thread ended without finishing".to_owned()],
                })
            }),
        }
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        // A test that is already failing says why itself; a second panic here would abort the whole binary.
        if self.outcome_reported || std::thread::panicking() {
            return;
        }
        if let Err(failure) = self.crash_so_far() {
            panic!("{failure}");
        }
    }
}

/// Runs `service` (given its shutdown signal) on a new thread with its own runtime, named `name` in failures.
pub fn spawn_service_thread<F, Fut>(name: &str, address: Option<SocketAddr>, service: F) -> ServiceHandle
where
    F: FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    install_service_panic_recorder();
    let panics = RecordedPanics::default();
    let (shutdown, shutdown_requested) = oneshot::channel::<()>();
    let (kill, kill_requested) = oneshot::channel::<()>();
    let (finished_sender, finished) = oneshot::channel::<()>();
    let thread_panics = panics.clone();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            SERVICE_PANICS.with(|slot| *slot.borrow_mut() = Some(thread_panics.clone()));
            // The runtime's blocking threads belong to the service too.
            let blocking_thread_panics = thread_panics;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_start(move || {
                    let panics = blocking_thread_panics.clone();
                    SERVICE_PANICS.with(|slot| *slot.borrow_mut() = Some(panics));
                })
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let running = service(Box::pin(async move {
                    let _ = shutdown_requested.await;
                }));
                // A dropped handle also ends the service, like a killed process.
                tokio::select! {
                    _ = running => {}
                    _ = kill_requested => {}
                }
            });
            runtime.shutdown_background();
            let _ = finished_sender.send(());
        })
        .expect("spawn a service thread");
    ServiceHandle {
        address,
        name: name.to_owned(),
        shutdown: Some(shutdown),
        kill: Some(kill),
        finished: Some(finished),
        panics,
        outcome_reported: false,
    }
}
