//! Where work runs that must not hold an async worker: Argon2id unseals and the opening of
//! a message whose key must be agreed (an X25519; blocking jobs), and the store's
//! group-commit writer (a loop of its own).
//!
//! The gateway is handed an [`Executor`] rather than calling `spawn_blocking` or
//! `std::thread::spawn` itself. Production uses [`Threads`]: tokio's blocking pool and one OS
//! thread for the writer. The simulation, and tests on paused time, use [`RuntimeTasks`]: the
//! same jobs and the same writer loop as tasks of the current runtime, so they run in
//! simulated time under the seed (an OS thread would run outside it). Either way the code
//! paths are the production ones: group commit, off-thread key agreement and unseal included.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::oneshot;

/// A blocking job, boxed.
pub type Job = Box<dyn FnOnce() + Send + 'static>;
/// A long-running loop, boxed.
pub type Background = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Runs blocking jobs and background loops; see the module documentation.
pub trait Spawn: Send + Sync + 'static {
    /// Runs `job` where it cannot stall the async workers. Must be called inside a runtime.
    /// `what` names the kind of work (`"unseal"`, `"key-agreement"`, `"compact"`).
    fn blocking(&self, what: &'static str, job: Job);

    /// Runs `work` to its end; `Some` is a thread to join when the owner is dropped.
    fn background(
        &self,
        name: &str,
        work: Background,
    ) -> std::io::Result<Option<std::thread::JoinHandle<()>>>;
}

/// Production: tokio's blocking threads for jobs, an OS thread with a small runtime of its
/// own for each background loop (so it works whether or not the caller is in a runtime).
#[derive(Debug, Default, Clone, Copy)]
pub struct Threads;

impl Spawn for Threads {
    fn blocking(&self, _what: &'static str, job: Job) {
        drop(tokio::task::spawn_blocking(job));
    }

    fn background(
        &self,
        name: &str,
        work: Background,
    ) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || runtime.block_on(work))?;
        Ok(Some(thread))
    }
}

/// Deterministic runtimes (the simulation, tests on paused time): jobs and loops are tasks
/// of the runtime the caller runs on. A blocking job then holds that runtime while it runs,
/// which is what makes it part of the seeded schedule. Must be used inside a runtime.
#[derive(Debug, Default, Clone, Copy)]
pub struct RuntimeTasks;

impl Spawn for RuntimeTasks {
    fn blocking(&self, _what: &'static str, job: Job) {
        drop(tokio::spawn(async move { job() }));
    }

    fn background(
        &self,
        _name: &str,
        work: Background,
    ) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
        drop(tokio::spawn(work));
        Ok(None)
    }
}

/// The executor a gateway was given. Cheap to clone.
#[derive(Clone)]
pub struct Executor(Arc<dyn Spawn>);

impl Default for Executor {
    fn default() -> Self {
        Self::threads()
    }
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Executor")
    }
}

/// The job's result was lost: it panicked, or the runtime is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the job ended without a result")]
pub struct Lost;

impl Executor {
    pub fn new(spawn: impl Spawn) -> Self {
        Self(Arc::new(spawn))
    }

    /// Production's: [`Threads`].
    pub fn threads() -> Self {
        Self::new(Threads)
    }

    /// [`RuntimeTasks`].
    pub fn runtime_tasks() -> Self {
        Self::new(RuntimeTasks)
    }

    /// Runs `job` (named `what`) off the async workers and waits for its result.
    pub async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Lost> {
        let (tx, rx) = oneshot::channel();
        self.0.blocking(
            what,
            Box::new(move || {
                let _ = tx.send(job());
            }),
        );
        rx.await.map_err(|_| Lost)
    }

    /// Starts a long-running loop; see [`Spawn::background`].
    pub fn background(
        &self,
        name: &str,
        work: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
        self.0.background(name, Box::pin(work))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn threads_run_jobs_off_the_runtime_and_return_their_results() {
        let executor = Executor::threads();
        let runtime_thread = std::thread::current().id();
        let ran_on = executor
            .run("test", || std::thread::current().id())
            .await
            .unwrap();
        assert_ne!(ran_on, runtime_thread);
    }

    #[tokio::test(start_paused = true)]
    async fn runtime_tasks_run_jobs_on_the_callers_runtime() {
        let executor = Executor::runtime_tasks();
        let runtime_thread = std::thread::current().id();
        let ran_on = executor
            .run("test", || std::thread::current().id())
            .await
            .unwrap();
        assert_eq!(ran_on, runtime_thread);
    }

    #[tokio::test]
    async fn a_panicking_job_is_lost_not_hung() {
        for executor in [Executor::threads(), Executor::runtime_tasks()] {
            let result = executor
                .run("test", || -> u8 { panic!("a bug in a job") })
                .await;
            assert_eq!(result, Err(Lost));
        }
    }

    #[test]
    fn a_background_thread_runs_without_a_callers_runtime() {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = Executor::threads()
            .background("test-loop", async move {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                tx.send(7).unwrap();
            })
            .unwrap()
            .expect("a thread to join");
        thread.join().unwrap();
        assert_eq!(rx.recv().unwrap(), 7);
    }
}
