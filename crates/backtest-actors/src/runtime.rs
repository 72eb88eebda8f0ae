//! Where supervisors run: on the caller's actix arbiter when there is one,
//! else on a background actix system owned by this library (one thread,
//! started on first use), so the async facades work from plain tokio.

use std::sync::OnceLock;

use actix::Addr;
use actix_rt::ArbiterHandle;
use tokio::sync::oneshot;

use crate::events::ManagedSessionError;

/// An arbiter on a thread of its own (its own actix system), kept for the
/// rest of the process. `None` if the thread cannot be started.
pub(crate) fn spawn_arbiter_thread(name: &str) -> Option<ArbiterHandle> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let system = actix_rt::System::new();
            let _ = tx.send(actix_rt::Arbiter::current());
            system.run()
        })
        .ok()?;
    rx.recv().ok()
}

fn background_arbiter() -> Option<&'static ArbiterHandle> {
    static ARBITER: OnceLock<Option<ArbiterHandle>> = OnceLock::new();
    ARBITER
        .get_or_init(|| spawn_arbiter_thread("backtest-actors"))
        .as_ref()
}

/// Start an actor (made by `start`) on the caller's arbiter when there is
/// one, else on the background system.
pub(crate) async fn start_actor<A, F>(start: F) -> Result<Addr<A>, ManagedSessionError>
where
    A: actix::Actor,
    F: FnOnce() -> Addr<A> + Send + 'static,
{
    // Inside an actix system (actix_rt::main, actix_rt::test, an actix-web
    // app): start on the current arbiter.
    if actix_rt::Arbiter::try_current().is_some() {
        return Ok(start());
    }
    let arbiter = background_arbiter().ok_or_else(|| {
        ManagedSessionError::Create("cannot start the background actix system".into())
    })?;
    let (tx, rx) = oneshot::channel();
    let spawned = arbiter.spawn_fn(move || {
        let _ = tx.send(start());
    });
    if !spawned {
        return Err(ManagedSessionError::Create(
            "the background actix system has stopped".into(),
        ));
    }
    rx.await.map_err(|_| {
        ManagedSessionError::Create("the background actix system dropped the start".into())
    })
}

/// The arbiter data connections run on: the library's background system
/// (one thread for the process). Socket reads, zstd and JSON decoding then
/// run beside the supervisors and consumers instead of on their thread, and
/// nothing is tied to the caller's system, so nothing leaks when it stops.
pub(crate) fn data_arbiter() -> Option<ArbiterHandle> {
    background_arbiter().cloned()
}

/// Start the library's background threads now rather than on first use:
/// the actix system that hosts data connections (and facades called outside
/// actix), and the decoder arbiters. They live for the rest of the process,
/// so starting them first keeps them out of resource accounting (threads,
/// file descriptors) around a run. Returns false if they cannot start
/// (data frames are then decoded on the connection's thread).
pub fn start_background_runtime() -> bool {
    background_arbiter().is_some() && crate::decoder::start()
}
