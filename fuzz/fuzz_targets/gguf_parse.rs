//! The GGUF parser on arbitrary bytes (a model file is untrusted input). Properties: nothing
//! panics and nothing is allocated by an unchecked size (libFuzzer's `-rss_limit_mb` catches
//! that); an accepted file's tensors all lie inside it with the size their dims and type give;
//! reading a config and a tokenizer from its metadata is an error or a value, never a panic.

#![no_main]

use halo_model::gguf::config::{model_config, TensorLookup};
use halo_model::gguf::tensor_info::tensor_size;
use halo_model::gguf::{GgufError, GgufFile};
use libfuzzer_sys::fuzz_target;

struct Parsed<'a> {
    file: &'a GgufFile,
    bytes: &'a [u8],
}

impl TensorLookup for Parsed<'_> {
    fn dims(&self, name: &str) -> Option<Vec<u64>> {
        self.file.tensor(name).map(|t| t.dims.clone())
    }

    fn f32_values(&self, name: &str) -> Result<Option<Vec<f32>>, GgufError> {
        let Some(t) = self.file.tensor(name) else {
            return Ok(None);
        };
        if t.dtype.is_quantized() {
            return Ok(None);
        }
        let data = self.file.data(self.bytes, t).expect("checked by parse");
        let mut out = vec![0.0f32; t.elements()];
        halo_model::quant::dequantize(t.dtype, data, &mut out);
        Ok(Some(out))
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::parse(data) else {
        return;
    };
    assert!(file.alignment.is_power_of_two());
    for t in &file.tensors {
        let bytes = file
            .data(data, t)
            .expect("an accepted tensor lies inside the file");
        assert_eq!(bytes.len(), t.size);
        assert_eq!(tensor_size(&t.name, &t.dims, t.dtype).ok(), Some(t.size));
        assert!(t.dims.len() <= 4);
    }
    let parsed = Parsed {
        file: &file,
        bytes: data,
    };
    let _ = model_config(&file.metadata, &parsed);
    let _ = halo_model::gguf::tokenizer::build(&file.metadata);
});
