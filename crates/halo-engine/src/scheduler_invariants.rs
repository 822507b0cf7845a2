//! The scheduler's invariants (RELIABILITY.md), checked by the tests after every operation:
//! every request is in exactly one queue and its state agrees, waiting requests hold no blocks,
//! block tables cover the computed tokens, reference counts equal holders, free + used = total,
//! and free = total once drained.

use super::Scheduler;
use crate::sequence::SeqState;
use halo_hal::FREED_BLOCK;
use std::collections::HashMap;

impl Scheduler {
    /// The invariants of RELIABILITY.md, checked by the tests after every operation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen: HashMap<u64, SeqState> = HashMap::new();
        for &id in &self.waiting {
            if seen.insert(id, SeqState::Waiting).is_some() {
                return Err(format!("request {id} queued twice"));
            }
        }
        for &id in &self.running {
            if seen.insert(id, SeqState::Running).is_some() {
                return Err(format!(
                    "request {id} both waiting and running, or running twice"
                ));
            }
        }
        if seen.len() != self.seqs.len() {
            return Err(format!(
                "{} requests in queues but {} known",
                seen.len(),
                self.seqs.len()
            ));
        }
        let bs = self.blocks.block_size();
        for (id, state) in &seen {
            let s = self
                .seqs
                .get(id)
                .ok_or_else(|| format!("request {id} queued but unknown"))?;
            if s.state != *state {
                return Err(format!(
                    "request {id} is {:?} but queued as {state:?}",
                    s.state
                ));
            }
            if *state == SeqState::Waiting && !s.blocks.is_empty() {
                return Err(format!("waiting request {id} holds blocks"));
            }
            if s.blocks.len() * bs < s.num_computed || s.num_computed >= s.tokens.len() {
                return Err(format!(
                    "request {id}: blocks do not cover its computed tokens"
                ));
            }
            // Freed entries: a prefix of the table, wholly outside the window of the next
            // position, and only for a windowed model.
            let freed = s.blocks.iter().take_while(|&&b| b == FREED_BLOCK).count();
            if s.blocks[freed..].contains(&FREED_BLOCK) {
                return Err(format!("request {id}: a freed block after a live one"));
            }
            let visible_from = match self.kv_window {
                Some(w) => (s.num_computed + 1).saturating_sub(w),
                None => 0,
            };
            if freed * bs > visible_from {
                return Err(format!(
                    "request {id}: block {} freed but inside the attention window",
                    freed - 1
                ));
            }
        }
        if self.running.len() > self.cfg.max_batch_seqs {
            return Err("more running sequences than max_batch_seqs".into());
        }
        let tables: Vec<&[halo_hal::BlockId]> =
            self.seqs.values().map(|s| s.blocks.as_slice()).collect();
        self.blocks.check_invariants(Some(&tables))?;
        if self.seqs.is_empty() && self.blocks.num_free() != self.blocks.total() {
            return Err("drained but not every block is free".into());
        }
        Ok(())
    }
}
