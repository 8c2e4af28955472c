//! Per-CPU translation caches: TLBs of leaf translations and walk caches of
//! table descriptors, one pair per translation regime tag (EL2, and per VMID
//! stage-2-only and stage 1+2). Nothing is ever evicted: entries leave only
//! when a TLB invalidation removes them, so every missing invalidation stays
//! visible.

use crate::mem::IntMap;
use crate::walk::{level_shift, Resume, TableStep};
use hvmm::{Ipa, Paddr, Vaddr, Vmid};
use std::collections::BTreeMap;

/// What a TLB or walk-cache entry is tagged with: the translation regime it
/// belongs to and, for a guest's, its VMID. Lookups and invalidations only
/// ever see entries of one tag.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlbTag {
    /// The hypervisor's own stage 1 (EL2 / Hyp mode): VA -> PA.
    El2,
    /// A guest's stage 2 alone: IPA -> PA (used for the guest's stage-1
    /// table walks and to build combined entries).
    Stage2 {
        /// The VMID (VTTBR) the entry was filled under.
        vmid: Vmid,
    },
    /// A guest's EL1&0 translation: stage 1, or stage 1 and 2 combined
    /// (VA -> PA). The walk cache of this tag holds the guest's stage-1
    /// table descriptors.
    Stage12 {
        /// The VMID (VTTBR) the entry was filled under.
        vmid: Vmid,
    },
}

impl TlbTag {
    /// The VMID of a guest tag.
    pub fn vmid(self) -> Option<Vmid> {
        match self {
            TlbTag::El2 => None,
            TlbTag::Stage2 { vmid } | TlbTag::Stage12 { vmid } => Some(vmid),
        }
    }
}

/// One stage's part of a cached translation: the leaf descriptor it came
/// from and what it allows.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StageLeaf {
    /// Lookup level of the leaf.
    pub level: u8,
    /// Reads allowed (stage 2 `S2AP[0]`; always at stage 1).
    pub readable: bool,
    /// Writes allowed.
    pub writable: bool,
    /// Instruction fetches allowed (stage 1: XN / PXN and their table bits,
    /// and WXN at EL2; stage 2: XN).
    pub executable: bool,
    /// AttrIndx (stage 1) or MemAttr `[5:2]` (stage 2).
    pub attr: u8,
    /// Whether the leaf's contiguous hint was used.
    pub contiguous: bool,
    /// The leaf descriptor as the walk read it.
    pub descriptor: u64,
    /// Address of the descriptor: a PA, or an IPA for a guest's stage 1.
    pub descriptor_addr: u64,
}

impl StageLeaf {
    /// Whether this stage allows `access`.
    pub fn allows(&self, access: hvmm::AccessKind) -> bool {
        match access {
            hvmm::AccessKind::Read => self.readable,
            hvmm::AccessKind::Write => self.writable,
            hvmm::AccessKind::Exec => self.executable,
        }
    }
}

/// One cached leaf translation.
///
/// The top-level permission and attribute fields are the entry's effective
/// ones (both stages for a combined entry); [`TlbEntry::stage1`] and
/// [`TlbEntry::stage2`] keep each stage's part, which decides which stage a
/// permission fault is reported for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TlbEntry {
    /// The regime and VMID of the entry.
    pub tag: TlbTag,
    /// First input address covered (aligned to `size`): a VA, or an IPA for
    /// a [`TlbTag::Stage2`] entry.
    pub va: Vaddr,
    /// Bytes covered: the block / page size, or 16 times that for an entry
    /// made from a descriptor with the contiguous hint; for a combined entry
    /// the smaller of the two stages' sizes.
    pub size: u64,
    /// Physical address that `va` translates to.
    pub pa: Paddr,
    /// Lookup level of the leaf descriptor the entry was made from (the
    /// stage-1 leaf of a combined entry when the guest's stage 1 is on).
    pub level: u8,
    /// Reads allowed.
    pub readable: bool,
    /// Writes allowed.
    pub writable: bool,
    /// Instruction fetches allowed (XN, XNTable and WXN as they were at fill).
    pub executable: bool,
    /// AttrIndx of the leaf (MemAttr for a stage-2 entry).
    pub attr_idx: u8,
    /// Whether the entry was made from a descriptor with the contiguous hint.
    pub contiguous: bool,
    /// The leaf descriptor as it was read by the walk that filled the entry.
    pub descriptor: u64,
    /// Address of that descriptor (an IPA for a guest's stage-1 leaf).
    pub descriptor_pa: Paddr,
    /// The input address whose translation filled the entry.
    pub filled_from: Vaddr,
    /// For a combined entry: the IPA that `va` translates to at stage 1.
    pub ipa: Option<Ipa>,
    /// The stage-1 part (EL2 entries and combined entries with the guest's
    /// stage 1 on).
    pub stage1: Option<StageLeaf>,
    /// The stage-2 part (stage-2 entries and combined entries with stage 2
    /// on).
    pub stage2: Option<StageLeaf>,
}

impl TlbEntry {
    /// Whether the entry covers the input address `va`.
    pub fn covers(&self, va: Vaddr) -> bool {
        va.0 >= self.va.0 && va.0 - self.va.0 < self.size
    }

    /// The physical address the entry gives for `va` (which it must cover).
    pub fn pa_of(&self, va: Vaddr) -> Paddr {
        Paddr(self.pa.0.wrapping_add(va.0.wrapping_sub(self.va.0)))
    }

    /// The IPA a combined entry gives for `va` (which it must cover).
    pub fn ipa_of(&self, va: Vaddr) -> Option<Ipa> {
        self.ipa
            .map(|i| Ipa(i.0.wrapping_add(va.0.wrapping_sub(self.va.0))))
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
    /// Where walks continue.
    pub next: Resume,
    /// The translation-state generation at which it was last known to agree
    /// with the tables.
    pub gen: u64,
}

/// A walk-cache entry a walk resumed from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resumed {
    /// Level of the cached table descriptor.
    pub level: u8,
    /// What it says.
    pub next: Resume,
    /// Its generation.
    pub gen: u64,
}

/// A cached leaf entry and the translation-state generation at which it was
/// last known to agree in size with a fresh walk.
#[derive(Copy, Clone, Debug)]
struct Slot {
    e: TlbEntry,
    checked: u64,
}

/// The TLB and walk cache of one CPU for one tag.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tlb {
    /// Leaf entries by size class, keyed by base input address. No two of
    /// them cover a common address: a fill that would make that happen is
    /// a TLB conflict abort and is not made.
    classes: [BTreeMap<u64, Slot>; 6],
    /// Table descriptors keyed by (level, input >> level shift).
    walk: IntMap<(u8, u64), WalkCacheEntry>,
}

impl Tlb {
    /// The entry that translates `ia`, with its checked generation.
    pub(crate) fn lookup(&self, ia: u64) -> Option<(&TlbEntry, u64)> {
        for (i, shift) in CLASSES.iter().enumerate() {
            if let Some(s) = self.classes[i].get(&((ia >> shift) << shift)) {
                return Some((&s.e, s.checked));
            }
        }
        None
    }

    /// Records that `e` agreed with a fresh walk at generation `gen`.
    pub(crate) fn set_checked(&mut self, e: &TlbEntry, gen: u64) {
        if let Some(i) = CLASSES.iter().position(|&s| 1u64 << s == e.size) {
            if let Some(s) = self.classes[i].get_mut(&e.va.0) {
                s.checked = gen;
            }
        }
    }

    /// The cached entries of another size than `e` that cover an address
    /// `e` covers.
    pub(crate) fn overlaps(&self, e: &TlbEntry) -> Vec<TlbEntry> {
        let mut out = Vec::new();
        let end = e.end();
        for (i, shift) in CLASSES.iter().enumerate() {
            let size = 1u64 << shift;
            if size == e.size {
                continue;
            }
            if size > e.size {
                let base = (e.va.0 >> shift) << shift;
                if let Some(s) = self.classes[i].get(&base) {
                    out.push(s.e);
                }
            } else {
                out.extend(self.classes[i].range(e.va.0..end).map(|(_, s)| s.e));
            }
        }
        out
    }

    /// Caches `e` as checked at generation `gen`.
    pub(crate) fn insert(&mut self, e: TlbEntry, gen: u64) {
        if let Some(i) = CLASSES.iter().position(|&s| 1u64 << s == e.size) {
            self.classes[i].insert(e.va.0, Slot { e, checked: gen });
        }
    }

    /// All leaf entries, in input-address order within each size.
    pub(crate) fn entries(&self) -> Vec<TlbEntry> {
        self.classes
            .iter()
            .flat_map(|c| c.values().map(|s| s.e))
            .collect()
    }

    /// The deepest cached table descriptor on the path of `ia`.
    pub(crate) fn walk_lookup(&self, ia: u64, first_level: u8) -> Option<Resumed> {
        (first_level..3).rev().find_map(|l| {
            self.walk.get(&(l, ia >> level_shift(l))).map(|w| Resumed {
                level: l,
                next: w.next,
                gen: w.gen,
            })
        })
    }

    /// Keeps a table descriptor met by a walk at generation `gen`.
    pub(crate) fn walk_insert(&mut self, s: TableStep, gen: u64) {
        self.walk
            .insert((s.level, s.key), WalkCacheEntry { next: s.next, gen });
    }

    /// Records that the walk-cache entry of `ia` at `level` agreed with the
    /// tables at generation `gen`.
    pub(crate) fn walk_refresh(&mut self, ia: u64, level: u8, gen: u64) {
        if let Some(w) = self.walk.get_mut(&(level, ia >> level_shift(level))) {
            w.gen = gen;
        }
    }

    /// All walk-cache entries as ((level, key), entry).
    pub(crate) fn walk_entries(&self) -> Vec<((u8, u64), WalkCacheEntry)> {
        let mut v: Vec<_> = self.walk.iter().map(|(&k, &e)| (k, e)).collect();
        v.sort_by_key(|&(k, _)| k);
        v
    }

    /// Forgets every translation of `ia` (leaf entries of any size covering
    /// it, and the table descriptors on its path), as `TLBI VAE2` and `TLBI
    /// IPAS2E1` do.
    pub(crate) fn invalidate_addr(&mut self, ia: u64) {
        for (i, shift) in CLASSES.iter().enumerate() {
            self.classes[i].remove(&((ia >> shift) << shift));
        }
        for l in 0..3 {
            self.walk.remove(&(l, ia >> level_shift(l)));
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

    /// Whether nothing is cached.
    pub(crate) fn is_empty(&self) -> bool {
        self.walk.is_empty() && self.classes.iter().all(|c| c.is_empty())
    }
}

/// All translation caches of one CPU.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tlbs {
    /// EL2 / Hyp entries.
    pub(crate) el2: Tlb,
    /// Guest entries by tag.
    pub(crate) guest: BTreeMap<TlbTag, Tlb>,
}

impl Tlbs {
    /// The caches of `tag`, if any.
    pub(crate) fn get(&self, tag: TlbTag) -> Option<&Tlb> {
        match tag {
            TlbTag::El2 => Some(&self.el2),
            t => self.guest.get(&t),
        }
    }

    /// The caches of `tag`, made if needed.
    pub(crate) fn get_mut(&mut self, tag: TlbTag) -> &mut Tlb {
        match tag {
            TlbTag::El2 => &mut self.el2,
            t => self.guest.entry(t).or_default(),
        }
    }

    /// Every tag with its caches, EL2 first.
    pub(crate) fn all(&self) -> impl Iterator<Item = (TlbTag, &Tlb)> {
        std::iter::once((TlbTag::El2, &self.el2)).chain(self.guest.iter().map(|(&t, c)| (t, c)))
    }

    /// Drops the caches of `tag` (a guest tag).
    pub(crate) fn remove(&mut self, tag: TlbTag) {
        match tag {
            TlbTag::El2 => self.el2.invalidate_all(),
            t => {
                self.guest.remove(&t);
            }
        }
    }

    /// Empties every walk cache.
    pub(crate) fn clear_walk_caches(&mut self) {
        self.el2.clear_walk_cache();
        for t in self.guest.values_mut() {
            t.clear_walk_cache();
        }
    }

    /// Drops empty guest caches.
    pub(crate) fn tidy(&mut self) {
        self.guest.retain(|_, t| !t.is_empty());
    }
}
