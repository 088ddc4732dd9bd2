//! Starting and stopping: the tokio runtime for HTTP, the engine thread, the listener, and the
//! drain on SIGTERM/SIGINT.
//!
//! Shutdown: the first signal flips the server to draining (`/ready` and new requests → 503)
//! while the listener stays open, then waits for every accepted request (queued or running) to
//! finish, at most `--shutdown-timeout`; past it, or on a second signal, what is left is failed
//! with 503. Then axum's graceful shutdown lets the last responses go out (bounded too), the
//! engine thread stops, and the process exits 0.

use super::auth::ApiKeys;
use super::error::ServeError;
use super::routes;
use super::state::{Phase, Settings, Shared};
use super::worker::{self, Loader};
use std::future::IntoFuture;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Everything `serve` needs.
pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    pub settings: Settings,
    pub keys: Option<ApiKeys>,
    /// Loads the model (on the engine thread; again after an engine failure).
    pub loader: Loader,
    /// The log subscriber for the server's threads (`--log-format`).
    pub dispatch: Option<tracing::Dispatch>,
}

/// How long the last responses may take to go out after the drain.
const FINAL_WRITE: Duration = Duration::from_secs(5);

/// Whether `host` names a loopback address (or `localhost`).
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn bind_address(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Runs the server until it has drained after a signal. See the module docs.
pub fn run(options: ServeOptions) -> Result<(), ServeError> {
    let ServeOptions {
        host,
        port,
        settings,
        keys,
        loader,
        dispatch,
    } = options;
    let _log = dispatch
        .clone()
        .map(|d| tracing::dispatcher::set_default(&d));
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("dalle-http");
    if let Some(d) = dispatch.clone() {
        builder.on_thread_start(move || {
            // Kept for the thread's whole life: the runtime's threads log like the main one.
            std::mem::forget(tracing::dispatcher::set_default(&d));
        });
    }
    let runtime = builder.build().map_err(|source| ServeError::Runtime {
        what: "HTTP runtime",
        source,
    })?;
    let shared = Arc::new(Shared::new(settings, keys));
    let engine =
        worker::spawn(shared.clone(), loader, dispatch).map_err(|source| ServeError::Runtime {
            what: "engine thread",
            source,
        })?;
    let served = runtime.block_on(serve(shared.clone(), &host, port));
    shared.stop.store(true, Ordering::SeqCst);
    shared.queue.wake();
    if engine.join().is_err() {
        tracing::error!("the engine thread panicked while stopping");
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    served
}

async fn serve(shared: Arc<Shared>, host: &str, port: u16) -> Result<(), ServeError> {
    let addr = bind_address(host, port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local: SocketAddr = listener.local_addr().map_err(ServeError::Http)?;
    // Tests and scripts read this line to find a port picked with `--port 0`.
    println!("listening on http://{local}");
    let _ = std::io::stdout().flush();
    tracing::info!(
        "listening on http://{local} (model {}; keys {})",
        shared.settings.model_name,
        shared.keys.as_ref().map_or(0, ApiKeys::len)
    );
    let app = routes::router(shared.clone());
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let hard_stop = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(drain_on_signal(
        shared.clone(),
        drained_tx,
        hard_stop.clone(),
    ));
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = drained_rx.await;
        })
        .into_future();
    tokio::select! {
        r = server => r.map_err(ServeError::Http)?,
        () = hard_stop.notified() => {
            tracing::warn!("some responses were still being written {FINAL_WRITE:?} after the drain; closing");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(unix)]
async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot listen for SIGTERM/SIGINT; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn signal() {
    let _ = tokio::signal::ctrl_c().await;
}

async fn drain_on_signal(
    shared: Arc<Shared>,
    drained: tokio::sync::oneshot::Sender<()>,
    hard_stop: Arc<tokio::sync::Notify>,
) {
    signal().await;
    let timeout = shared.settings.shutdown_timeout;
    tracing::info!(
        "signal received: draining ({} requests in flight, shutdown timeout {:.0} s)",
        shared.inflight.load(Ordering::SeqCst),
        timeout.as_secs_f64()
    );
    shared.set_phase(Phase::Draining);
    let deadline = Instant::now() + timeout;
    let second = signal();
    tokio::pin!(second);
    loop {
        if shared.inflight.load(Ordering::SeqCst) == 0 {
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!("shutdown timeout: failing the requests still in flight");
            shared.abort.store(true, Ordering::SeqCst);
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            () = &mut second => {
                tracing::warn!("second signal: failing the requests still in flight");
                shared.abort.store(true, Ordering::SeqCst);
                break;
            }
        }
    }
    shared.queue.wake();
    // Aborted requests get their 503 from the engine thread within a step.
    let settle = Instant::now() + Duration::from_secs(2);
    while shared.inflight.load(Ordering::SeqCst) > 0 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!("drained; closing connections");
    let _ = drained.send(());
    tokio::time::sleep(FINAL_WRITE).await;
    hard_stop.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["0.0.0.0", "::", "10.0.0.1", "example.com"] {
            assert!(!is_loopback(h), "{h}");
        }
        assert_eq!(bind_address("::1", 80), "[::1]:80");
        assert_eq!(bind_address("127.0.0.1", 0), "127.0.0.1:0");
    }
}
