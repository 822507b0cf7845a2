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

/// Polls the engine every `interval` and publishes changes until `stop` turns true.
pub async fn watch_engine(
    engine: Engine,
    reporter: HealthReporter,
    draining: Arc<AtomicBool>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut last: Option<bool> = None;
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
