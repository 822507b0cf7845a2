//! Non-finite logits end to end: a model whose embedding row for one token is NaN poisons every
//! sequence that contains that token, and only those. Such a request ends INTERNAL while the
//! requests batched with it finish with their golden tokens, and every block comes back.

mod serve_common;

use serve_common::*;
use std::path::Path;
use std::time::Duration;

const POISON: u32 = 500;

/// A copy of tiny-mha whose embedding row `POISON` is all NaN.
fn poisoned_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let path = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let embed = &header["model.embed_tokens.weight"];
    assert_eq!(embed["dtype"], "F32");
    let hidden = embed["shape"][1].as_u64().unwrap() as usize;
    let start =
        8 + n + embed["data_offsets"][0].as_u64().unwrap() as usize + POISON as usize * hidden * 4;
    for i in 0..hidden {
        bytes[start + 4 * i..start + 4 * i + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    }
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, bytes).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_finite_logits_fail_only_their_request() {
    let model = poisoned_model();
    let server = Server::start_with_model(Path::new(model.path()), &["--num-blocks", "64"], &[]);
    let mut c = client(&server.url(), None).await;
    let total = kv(&mut c).await.total_blocks;

    let (golden_prompt, golden_ids) = golden().remove(0);
    let mut poisoned = prompt(12, 3);
    poisoned[5] = POISON;
    for round in 0..2 {
        let mut good_client = c.clone();
        let mut bad_client = c.clone();
        let good = tokio::spawn({
            let req = ids_request(golden_prompt.clone(), golden_ids.len() as u32);
            async move { run_stream(&mut good_client, req).await }
        });
        let bad = tokio::spawn({
            let req = ids_request(poisoned.clone(), 32);
            async move { run_stream(&mut bad_client, req).await }
        });
        let (good_ids, good_end) = good.await.unwrap();
        let (bad_ids, bad_end) = bad.await.unwrap();
        assert!(good_end.is_ok(), "round {round}: {good_end:?}");
        assert_eq!(
            good_ids, golden_ids,
            "round {round}: the healthy request is unaffected"
        );
        let status = bad_end.expect_err("the poisoned request must fail");
        assert_eq!(
            status.code(),
            tonic::Code::Internal,
            "round {round}: {status:?}"
        );
        assert!(bad_ids.is_empty());
        let idle = wait_idle(&mut c, Duration::from_secs(10)).await;
        assert_eq!(idle.free_blocks, total);
    }
}
