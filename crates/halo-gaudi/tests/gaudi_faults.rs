//! The supervisor under faults: a sidecar killed (SIGKILL) or hung (SIGSTOP) mid-decode makes
//! the step return DeviceError::Lost within seconds, the device restarts it with backoff
//! (re-load, re-warm), and new work then succeeds; lying sidecars are rejected without a panic.

mod common;

use common::*;
use halo_hal::{Device, DeviceError, StepBatch};
use std::time::{Duration, Instant};

fn decode_a_few(dev: &mut halo_gaudi::GaudiDevice, g: &mut Gen) {
    for _ in 0..4 {
        let s = g.next_step(64);
        let out = dev.step(&StepBatch { seqs: vec![s] }).expect("step");
        g.out
            .push(out.results[0].outcome.as_ref().expect("finite").token);
    }
}

fn recovers_after(signal: libc::c_int, name: &str) {
    let cases = golden();
    let mut dev = ready_device(options());
    let mut g = Gen::new(1, &cases[0].prompt_ids, 0);
    decode_a_few(&mut dev, &mut g);
    let pid = dev.sidecar_pid().expect("running");
    let epoch = dev.epoch().expect("running");
    // SAFETY: plain kill(2) on the child this test's device started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);

    let start = Instant::now();
    let err = dev
        .step(&StepBatch {
            seqs: vec![g.next_step(64)],
        })
        .expect_err(name);
    let took = start.elapsed();
    assert!(matches!(err, DeviceError::Lost(_)), "{name}: {err:?}");
    assert!(took < Duration::from_secs(6), "{name}: Lost after {took:?}");
    assert!(!dev.is_ready() || dev.epoch() != Some(epoch));

    assert!(
        dev.wait_until_ready(Duration::from_secs(120)),
        "{name}: no restart"
    );
    assert!(dev.epoch().expect("up") > epoch);
    assert_ne!(dev.sidecar_pid(), Some(pid));
    // The engine failed the old sequence; a new one runs from scratch on the restarted sidecar.
    let mut fresh = vec![Gen::new(2, &cases[1].prompt_ids, 8)];
    drive(&mut dev, &mut fresh, 16, 64);
    assert_eq!(fresh[0].out, cases[1].greedy_ids[..16], "{name}");
}

#[test]
fn sigkill_mid_decode_is_lost_then_restarted() {
    recovers_after(libc::SIGKILL, "SIGKILL");
}

#[test]
fn sigstop_mid_decode_trips_the_watchdog_then_restarted() {
    recovers_after(libc::SIGSTOP, "SIGSTOP");
}

#[test]
fn lying_sidecars_are_rejected_and_replaced() {
    let cases = golden();
    for mode in [
        "wrong_count",
        "oov",
        "wrong_epoch",
        "wrong_step",
        "nan_logprob",
        "no_outcome",
    ] {
        // One honest step first: the lie comes mid-decode.
        let mut dev = ready_device(fake_options(mode, 1));
        let mut g = Gen::new(1, &cases[0].prompt_ids, 0);
        let first = dev
            .step(&StepBatch {
                seqs: vec![g.next_step(64)],
            })
            .expect("honest step");
        g.out
            .push(first.results[0].outcome.as_ref().expect("finite").token);
        let epoch = dev.epoch();
        let err = dev
            .step(&StepBatch {
                seqs: vec![g.next_step(64)],
            })
            .expect_err(mode);
        assert!(
            matches!(&err, DeviceError::Lost(m) if m.contains("rejected")),
            "{mode}: {err:?}"
        );
        // The liar is replaced by a fresh process (which, being the same fake, lies again after
        // one honest step: good enough to see the restart happen).
        assert!(
            dev.wait_until_ready(Duration::from_secs(120)),
            "{mode}: no restart"
        );
        assert_ne!(dev.epoch(), epoch);
    }
}

#[test]
fn a_missing_python_is_unavailable_not_a_panic() {
    let opts = halo_gaudi::GaudiOptions {
        python: Some("/nonexistent/python".into()),
        ..options()
    };
    assert!(matches!(
        halo_gaudi::GaudiDevice::new(opts),
        Err(DeviceError::Unavailable(_))
    ));
}
