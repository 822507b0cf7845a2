//! grpc.health.v1 driven by the engine: SERVING only while the scheduler's heartbeat is fresh,
//! the device is alive and no shutdown began. The overall status (`""`) and the worker service's
//! status always move together, so a probe on either sees the same truth.

use halo_engine::{Engine, Health};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// Sets both names at once.
pub async fn set_status(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(halo_proto::WORKER_SERVICE_NAME, status)
        .await;
}

/// Whether the worker should report SERVING now.
pub fn is_serving(engine: &Engine, draining: &AtomicBool) -> bool {
    !draining.load(Ordering::Acquire) && engine.health() == Health::Serving
}

/// A test hook: milliseconds the watcher waits before its first tick, so a test can show that
/// the status published before the serving line does not depend on the watcher's timing.
pub const FIRST_TICK_DELAY_ENV: &str = "HALO_TEST_HEALTH_FIRST_TICK_DELAY_MS";

/// Publishes the engine's status now and returns it: called before the worker announces itself,
/// so a probe sent on the serving line already sees SERVING.
pub async fn publish_initial(
    engine: &Engine,
    reporter: &HealthReporter,
    draining: &AtomicBool,
) -> bool {
    let serving = is_serving(engine, draining);
    set_status(reporter, serving).await;
    if serving {
        tracing::info!(health = engine.health().as_str(), "health: SERVING");
    }
    serving
}

/// Polls the engine every `interval` and publishes changes until `stop` turns true. `published`
/// is the status already published (by [`publish_initial`]), if any.
pub async fn watch_engine(
    engine: Engine,
    reporter: HealthReporter,
    draining: Arc<AtomicBool>,
    interval: Duration,
    published: Option<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let delay = std::env::var(FIRST_TICK_DELAY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0);
    if let Some(ms) = delay {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
    let mut last = published;
    loop {
        let serving = is_serving(&engine, &draining);
        if last != Some(serving) {
            let health = engine.health();
            if serving {
                tracing::info!(health = health.as_str(), "health: SERVING");
            } else if last.is_some() {
                tracing::warn!(health = health.as_str(), "health: NOT_SERVING");
            }
            set_status(&reporter, serving).await;
            last = Some(serving);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
