//! The engine's health as the router must see it: derived from the scheduler's heartbeat, not
//! only from the thread being alive.

/// What `health()` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Loading or warming up.
    Starting,
    Serving,
    /// Work is pending and no loop iteration completed within the stall timeout.
    Stalled,
    /// The device failed fatally; every submit is refused until the engine is restarted.
    DeviceLost,
    /// `shutdown()` was called: no new requests, in-flight ones drain.
    ShuttingDown,
}

impl Health {
    pub fn is_serving(self) -> bool {
        self == Health::Serving
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Serving => "serving",
            Health::Stalled => "stalled",
            Health::DeviceLost => "device_lost",
            Health::ShuttingDown => "shutting_down",
        }
    }
}
