//! The incremental detokenizer over tiny-mha's byte-level tokenizer, fed arbitrary id
//! sequences (split characters, invalid UTF-8 byte runs, special tokens). Properties
//! (RELIABILITY.md, "Streaming text"): at every step the streamed text is a prefix of the full
//! decode, so no replacement character is streamed that the full decode lacks; after `finish`
//! the deltas concatenate to the full decode exactly.

#![no_main]

use halo_engine::IncrementalDetokenizer;
use halo_fuzz::{ids_from_bytes, tokenizer, vocab_size};
use libfuzzer_sys::fuzz_target;

const REPLACEMENT: char = '\u{FFFD}';

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let skip_special = flags & 1 == 1;
    let tok = tokenizer();
    let ids = ids_from_bytes(rest, vocab_size());
    let full = tok
        .decode(&ids, skip_special)
        .expect("in-vocabulary ids always decode");
    let full_fffd = full.matches(REPLACEMENT).count();

    let mut d = IncrementalDetokenizer::new(skip_special);
    let mut streamed = String::new();
    for (i, &id) in ids.iter().enumerate() {
        let delta = d.push(tok, id).expect("in-vocabulary ids always decode");
        streamed.push_str(&delta);
        assert!(
            streamed.matches(REPLACEMENT).count() <= full_fffd,
            "after id {i}: more U+FFFD streamed than the full decode has: {streamed:?} vs {full:?}"
        );
        assert!(
            full.starts_with(&streamed),
            "after id {i}: streamed {streamed:?} is not a prefix of the full decode {full:?}"
        );
    }
    streamed.push_str(&d.finish(tok).expect("in-vocabulary ids always decode"));
    assert_eq!(
        streamed, full,
        "deltas do not concatenate to the full decode"
    );
    // A finished stream has nothing left to emit.
    assert_eq!(d.finish(tok).expect("decodes"), "");
});
