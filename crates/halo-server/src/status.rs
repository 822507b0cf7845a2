//! Engine outcomes as gRPC statuses: RELIABILITY.md's table in one place. Messages come from the
//! engine's typed errors, which name limits with both numbers and never quote prompt text.

use halo_engine::{Failure, FailureKind, SubmitError};
use std::collections::HashMap;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The metadata key carrying how many tokens a failed stream had already delivered.
pub const TOKENS_SENT_KEY: &str = "halo-tokens-sent";
/// `google.rpc.ErrorInfo` reason and domain for a full queue.
pub const QUEUE_FULL_REASON: &str = "QUEUE_FULL";
pub const ERROR_DOMAIN: &str = "halo";

/// The status for a request the engine refused at admission.
pub fn submit_error(e: &SubmitError) -> Status {
    match e {
        SubmitError::QueueFull { max } => {
            let meta = HashMap::from([("max_concurrent_requests".to_string(), max.to_string())]);
            Status::with_error_details(
                Code::ResourceExhausted,
                e.to_string(),
                ErrorDetails::with_error_info(QUEUE_FULL_REASON, ERROR_DOMAIN, meta),
            )
        }
        SubmitError::ShuttingDown | SubmitError::Unavailable => Status::unavailable(e.to_string()),
        SubmitError::DeviceLost => device_lost(e.to_string(), 0),
        _ => Status::invalid_argument(e.to_string()),
    }
}

/// The status for a request that failed after admission.
pub fn failure(f: &Failure) -> Status {
    match f.kind {
        FailureKind::Cancelled => Status::cancelled(f.message.clone()),
        FailureKind::DeadlineExceeded => Status::deadline_exceeded(f.message.clone()),
        FailureKind::DeviceLost { tokens_sent } => device_lost(f.message.clone(), tokens_sent),
        FailureKind::Internal => Status::internal(f.message.clone()),
        FailureKind::SlowReader => Status::resource_exhausted(f.message.clone()),
    }
}

fn device_lost(message: String, tokens_sent: u32) -> Status {
    let mut status = Status::unavailable(message);
    status
        .metadata_mut()
        .insert(TOKENS_SENT_KEY, MetadataValue::from(tokens_sent));
    status
}

/// A stable label for the metrics of a status code.
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halo_engine::{Timings, Usage};

    #[test]
    fn queue_full_carries_error_info() {
        let s = submit_error(&SubmitError::QueueFull { max: 4 });
        assert_eq!(s.code(), Code::ResourceExhausted);
        let info = s.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "QUEUE_FULL");
        assert_eq!(info.domain, "halo");
    }

    #[test]
    fn table_codes() {
        let too_long = SubmitError::PromptTooLong { len: 10, max: 5 };
        assert_eq!(submit_error(&too_long).code(), Code::InvalidArgument);
        assert!(submit_error(&too_long).message().contains("10"));
        assert_eq!(
            submit_error(&SubmitError::ShuttingDown).code(),
            Code::Unavailable
        );
        let fail = |kind| Failure {
            kind,
            message: "m".into(),
            usage: Usage::default(),
            timings: Timings::default(),
        };
        assert_eq!(
            failure(&fail(FailureKind::Cancelled)).code(),
            Code::Cancelled
        );
        assert_eq!(
            failure(&fail(FailureKind::DeadlineExceeded)).code(),
            Code::DeadlineExceeded
        );
        assert_eq!(failure(&fail(FailureKind::Internal)).code(), Code::Internal);
        let lost = failure(&fail(FailureKind::DeviceLost { tokens_sent: 7 }));
        assert_eq!(lost.code(), Code::Unavailable);
        assert_eq!(lost.metadata().get(TOKENS_SENT_KEY).unwrap(), "7");
    }
}
