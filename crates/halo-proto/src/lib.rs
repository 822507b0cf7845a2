//! halo's worker API as Rust types: the messages, the `Worker` client and server generated from
//! `proto/halo/worker/v1/worker.proto`, and the encoded file descriptor set that server
//! reflection serves (so `grpcurl` works without .proto files).
//!
//! The code is generated into OUT_DIR at build time (never checked in), so the .proto stays the
//! one source of truth.

pub mod worker {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("halo.worker.v1");
    }
}

/// The encoded `FileDescriptorSet` of the worker API, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/halo_worker_descriptor.bin"));

/// The fully qualified name of the worker service, as health checks and reflection list it.
pub const WORKER_SERVICE_NAME: &str = "halo.worker.v1.Worker";

#[cfg(test)]
mod tests {
    use super::worker::v1::{self, worker_server::WorkerServer};

    #[test]
    fn descriptor_set_names_the_worker_service() {
        use prost::Message;
        let set = FileDescriptorSetProbe::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        assert!(set
            .files
            .iter()
            .any(|f| f.package.as_deref() == Some("halo.worker.v1")));
        assert_eq!(
            <WorkerServer<Unimplemented> as tonic::server::NamedService>::NAME,
            super::WORKER_SERVICE_NAME
        );
    }

    #[test]
    fn optional_sampling_fields_are_optional() {
        let p = v1::SamplingParams::default();
        assert_eq!(p.top_p, None);
        assert_eq!(p.repetition_penalty, None);
        assert_eq!(p.seed, None);
        assert_eq!(v1::FinishReason::Length.as_str_name(), "LENGTH");
    }

    // A minimal decoding of FileDescriptorSet (field 1: repeated FileDescriptorProto, whose field
    // 2 is the package), so the test needs no prost-types dependency.
    #[derive(Clone, PartialEq, prost::Message)]
    struct FileDescriptorSetProbe {
        #[prost(message, repeated, tag = "1")]
        files: Vec<FileProbe>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct FileProbe {
        #[prost(string, optional, tag = "2")]
        package: Option<String>,
    }

    struct Unimplemented;
    #[tonic::async_trait]
    impl v1::worker_server::Worker for Unimplemented {
        async fn generate(
            &self,
            _: tonic::Request<v1::GenerateRequest>,
        ) -> Result<tonic::Response<v1::GenerateResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
        type GenerateStreamStream = tokio_stream_probe::Empty;
        async fn generate_stream(
            &self,
            _: tonic::Request<v1::GenerateRequest>,
        ) -> Result<tonic::Response<Self::GenerateStreamStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
        async fn tokenize(
            &self,
            _: tonic::Request<v1::TokenizeRequest>,
        ) -> Result<tonic::Response<v1::TokenizeResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
        async fn detokenize(
            &self,
            _: tonic::Request<v1::DetokenizeRequest>,
        ) -> Result<tonic::Response<v1::DetokenizeResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
        async fn render_chat(
            &self,
            _: tonic::Request<v1::RenderChatRequest>,
        ) -> Result<tonic::Response<v1::RenderChatResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
        async fn get_info(
            &self,
            _: tonic::Request<v1::GetInfoRequest>,
        ) -> Result<tonic::Response<v1::GetInfoResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
    }

    mod tokio_stream_probe {
        use super::v1::GenerateStreamResponse;
        use std::pin::Pin;
        use std::task::{Context, Poll};

        /// A stream that ends at once (avoids a tokio-stream dependency for one test).
        pub struct Empty;
        impl tonic::codegen::tokio_stream::Stream for Empty {
            type Item = Result<GenerateStreamResponse, tonic::Status>;
            fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
                Poll::Ready(None)
            }
        }
    }
}
