//! Per-CPU translation caches: a TLB of leaf translations and a walk cache of
//! table descriptors. Neither evicts anything: entries leave only when a TLB
//! invalidation removes them, so every missing invalidation stays visible.

use crate::walk::{level_shift, Resume, TableStep};
use hvmm::{Paddr, Vaddr};
use std::collections::{BTreeMap, HashMap};

/// One cached leaf translation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TlbEntry {
    /// First VA covered (aligned to `size`).
    pub va: Vaddr,
    /// Bytes covered: the block / page size, or 16 times that for an entry
    /// made from a descriptor with the contiguous hint.
    pub size: u64,
    /// Physical address that `va` translates to.
    pub pa: Paddr,
    /// Lookup level of the leaf descriptor the entry was made from.
    pub level: u8,
    /// Writes allowed.
    pub writable: bool,
    /// Instruction fetches allowed (XN, XNTable and WXN as they were at fill).
    pub executable: bool,
    /// AttrIndx of the leaf.
    pub attr_idx: u8,
    /// Whether the entry was made from a descriptor with the contiguous hint.
    pub contiguous: bool,
    /// The leaf descriptor as it was read by the walk that filled the entry.
    pub descriptor: u64,
    /// Physical address of that descriptor.
    pub descriptor_pa: Paddr,
    /// The VA whose translation filled the entry.
    pub filled_from: Vaddr,
}

impl TlbEntry {
    /// Whether the entry covers `va`.
    pub fn covers(&self, va: Vaddr) -> bool {
        va.0 >= self.va.0 && va.0 - self.va.0 < self.size
    }

    /// The physical address the entry gives for `va` (which it must cover).
    pub fn pa_of(&self, va: Vaddr) -> Paddr {
        Paddr(self.pa.0.wrapping_add(va.0.wrapping_sub(self.va.0)))
    }

    fn end(&self) -> u64 {
        self.va.0.saturating_add(self.size)
    }
}

/// Entry sizes (as shifts): 4K, 64K (contiguous 4K), 2M, 32M (contiguous
/// 2M), 1G, 16G (contiguous 1G).
const CLASSES: [u32; 6] = [12, 16, 21, 25, 30, 34];

/// A table descriptor kept by the walk cache.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct WalkCacheEntry {
    /// Physical address of the descriptor.
    pub desc_pa: u64,
    /// Where walks continue.
    pub next: Resume,
}

/// The translation caches of one CPU.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tlb {
    /// Leaf entries by size class, keyed by base VA; with the sequence number
    /// of their fill (the most recent wins when several match).
    classes: [BTreeMap<u64, (u64, TlbEntry)>; 6],
    /// Table descriptors keyed by (level, VA >> level shift).
    walk: HashMap<(u8, u64), WalkCacheEntry>,
}

impl Tlb {
    /// The entry that translates `va`, if any.
    pub(crate) fn lookup(&self, va: u64) -> Option<TlbEntry> {
        let mut best: Option<(u64, TlbEntry)> = None;
        for (i, shift) in CLASSES.iter().enumerate() {
            let base = (va >> shift) << shift;
            if let Some(&(seq, e)) = self.classes[i].get(&base) {
                let newer = match best {
                    Some((s, _)) => s < seq,
                    None => true,
                };
                if newer {
                    best = Some((seq, e));
                }
            }
        }
        best.map(|(_, e)| e)
    }

    /// Caches `e` (fill number `seq`); returns the entries it overlaps.
    pub(crate) fn insert(&mut self, seq: u64, e: TlbEntry) -> Vec<TlbEntry> {
        let mut overlaps = Vec::new();
        let end = e.end();
        for (i, shift) in CLASSES.iter().enumerate() {
            let size = 1u64 << shift;
            if size >= e.size {
                let base = (e.va.0 >> shift) << shift;
                if let Some(&(_, o)) = self.classes[i].get(&base) {
                    overlaps.push(o);
                }
            } else {
                overlaps.extend(self.classes[i].range(e.va.0..end).map(|(_, &(_, o))| o));
            }
        }
        if let Some(i) = CLASSES.iter().position(|&s| 1u64 << s == e.size) {
            self.classes[i].insert(e.va.0, (seq, e));
        }
        overlaps
    }

    /// All leaf entries, in VA order within each size.
    pub(crate) fn entries(&self) -> Vec<TlbEntry> {
        self.classes
            .iter()
            .flat_map(|c| c.values().map(|&(_, e)| e))
            .collect()
    }

    /// The deepest cached table descriptor on the path of `va`.
    pub(crate) fn walk_lookup(&self, va: u64, first_level: u8) -> Option<Resume> {
        (first_level..3)
            .rev()
            .find_map(|l| self.walk.get(&(l, va >> level_shift(l))).map(|w| w.next))
    }

    /// Keeps a table descriptor met by a walk.
    pub(crate) fn walk_insert(&mut self, s: TableStep) {
        self.walk.insert(
            (s.level, s.key),
            WalkCacheEntry {
                desc_pa: s.desc_pa,
                next: s.next,
            },
        );
    }

    /// All walk-cache entries as ((level, key), entry).
    pub(crate) fn walk_entries(&self) -> Vec<((u8, u64), WalkCacheEntry)> {
        let mut v: Vec<_> = self.walk.iter().map(|(&k, &e)| (k, e)).collect();
        v.sort_by_key(|&(k, _)| k);
        v
    }

    /// Forgets every translation of `va` (leaf entries of any size covering
    /// it, and the table descriptors on its path), as `TLBI VAE2` does.
    pub(crate) fn invalidate_va(&mut self, va: u64) {
        for (i, shift) in CLASSES.iter().enumerate() {
            self.classes[i].remove(&((va >> shift) << shift));
        }
        for l in 0..3 {
            self.walk.remove(&(l, va >> level_shift(l)));
        }
    }

    /// Empties the walk cache only.
    pub(crate) fn clear_walk_cache(&mut self) {
        self.walk.clear();
    }

    /// Forgets everything, as `TLBI ALLE2` does.
    pub(crate) fn invalidate_all(&mut self) {
        for c in &mut self.classes {
            c.clear();
        }
        self.walk.clear();
    }
}
