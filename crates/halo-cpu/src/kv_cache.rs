//! The paged KV pool: per layer, `num_blocks * block_size` slots, each holding one token's keys
//! and values for every KV head. Which slot a token uses is the engine's business (its block
//! table); this type only stores rows.

pub struct KvCache {
    pub block_size: usize,
    /// Floats per slot: num_kv_heads * head_dim.
    pub row: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl KvCache {
    pub fn new(layers: usize, block_size: usize, num_blocks: usize, row: usize) -> KvCache {
        let slots = block_size * num_blocks;
        // vec![0.0; n] maps zeroed pages lazily: a large pool costs memory only as it fills.
        KvCache {
            block_size,
            row,
            keys: (0..layers).map(|_| vec![0.0; slots * row]).collect(),
            values: (0..layers).map(|_| vec![0.0; slots * row]).collect(),
        }
    }

    pub fn bytes_per_block(layers: usize, block_size: usize, row: usize) -> u64 {
        (2 * layers * block_size * row * std::mem::size_of::<f32>()) as u64
    }

    /// Stores one token's keys and values (each `row` floats) in `slot` of `layer`.
    pub fn write(&mut self, layer: usize, slot: usize, k: &[f32], v: &[f32]) {
        let at = slot * self.row;
        self.keys[layer][at..at + self.row].copy_from_slice(k);
        self.values[layer][at..at + self.row].copy_from_slice(v);
    }

    pub fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.keys[layer], &self.values[layer])
    }
}
