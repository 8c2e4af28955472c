//! The 2019 Xen algorithm, re-implemented as the baseline.
//!
//! Written from the description in SPEC §4 (not from Xen's code): an update of
//! `n` pages is `n` independent single-page updates. Each one walks from the
//! root; at every level it maps the table page through the table-access
//! provider, reads the entry, allocates a missing table (mapping the new
//! page once more to clear it), unmaps the table and goes one level down;
//! at level 3 it checks the entry and writes the leaf. Only 4 KiB pages are
//! supported (a block in the way is refused), and an error leaves the pages
//! already done behind (no rollback). Modify and Remove then invalidate the
//! TLB page by page over the whole range, followed by one `dsb; isb`
//! (inserts are left without invalidation, which favours the baseline).
//! Remove never frees intermediate tables.
//!
//! It is generic over [`hvmm::Arch`], [`TableAccess`] and [`FrameAlloc`], so
//! the same code runs on the host (identity access with a counter) and on the
//! machine model (every table through a PMAP slot, as Xen's early boot does).

use hvmm::format::{table_index, Format};
use hvmm::{Arch, Attrs, FrameAlloc, Mfn, Paddr, Pte, TableAccess, Vaddr, PAGE_SIZE};
use std::marker::PhantomData;

/// What one page update does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum XenOp {
    /// Map the page to `pa`.
    Insert {
        /// Physical address of the page.
        pa: u64,
        /// Attributes.
        attrs: Attrs,
    },
    /// Change the permission of a mapped page.
    Modify {
        /// New attributes (memory type unchanged).
        attrs: Attrs,
    },
    /// Unmap the page (absent is fine).
    Remove,
}

/// Counters kept by the baseline itself.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct XenStats {
    /// Table pages mapped through the provider.
    pub table_maps: u64,
    /// Tables created.
    pub tables_created: u64,
    /// Leaf descriptors written.
    pub leaves: u64,
    /// TLB invalidations issued.
    pub tlb_invalidations: u64,
}

/// A hypervisor page table driven the 2019 way.
pub struct XenPt<F: Format> {
    root: Mfn,
    /// What it did so far.
    pub stats: XenStats,
    _f: PhantomData<F>,
}

/// Why a single-page update failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XenError(pub String);

impl<F: Format> XenPt<F> {
    /// A table whose (zeroed) root is `root`.
    pub fn new(root: Mfn) -> Self {
        XenPt {
            root,
            stats: XenStats::default(),
            _f: PhantomData,
        }
    }

    fn map<A: Arch, T: TableAccess<A>>(
        &mut self,
        arch: &mut A,
        acc: &mut T,
        mfn: Mfn,
    ) -> Result<Vaddr, XenError> {
        self.stats.table_maps += 1;
        acc.map_table(arch, mfn)
            .map_err(|e| XenError(format!("map_table: {e}")))
    }

    /// Creates a table: allocate, map, clear, unmap.
    fn create_table<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &mut self,
        arch: &mut A,
        acc: &mut T,
        alloc: &mut M,
    ) -> Result<Mfn, XenError> {
        alloc
            .reserve(1)
            .map_err(|_| XenError("out of memory".into()))?;
        let mfn = alloc
            .take()
            .ok_or_else(|| XenError("out of memory".into()))?;
        alloc.unreserve();
        let va = self.map(arch, acc, mfn)?;
        let r = arch.zero_page(va);
        acc.unmap_table(arch, mfn, va);
        r.map_err(|f| XenError(format!("clear_page: {f}")))?;
        self.stats.tables_created += 1;
        Ok(mfn)
    }

    /// One page: walk from the root, mapping each level's table.
    pub fn update_entry<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &mut self,
        arch: &mut A,
        acc: &mut T,
        alloc: &mut M,
        va: u64,
        op: XenOp,
    ) -> Result<(), XenError> {
        let mut mfn = self.root;
        let mut level = F::ROOT_LEVEL;
        let mut table = self.map(arch, acc, mfn)?;
        while level < 3 {
            let eva = Vaddr(table.0 + table_index(va, level) as u64 * 8);
            let pte = match arch.read_pte(eva) {
                Ok(v) => Pte(v),
                Err(f) => {
                    acc.unmap_table(arch, mfn, table);
                    return Err(XenError(format!("read: {f}")));
                }
            };
            let next = if pte.is_table(level) {
                pte.table_mfn::<F>()
            } else if pte.is_valid() {
                acc.unmap_table(arch, mfn, table);
                return Err(XenError(format!(
                    "block in the way at level {level} (EOPNOTSUPP)"
                )));
            } else {
                match op {
                    XenOp::Insert { .. } => {
                        let new = match self.create_table(arch, acc, alloc) {
                            Ok(n) => n,
                            Err(e) => {
                                acc.unmap_table(arch, mfn, table);
                                return Err(e);
                            }
                        };
                        if let Err(f) = arch.write_pte(eva, Pte::table::<F>(new).0) {
                            acc.unmap_table(arch, mfn, table);
                            return Err(XenError(format!("write: {f}")));
                        }
                        new
                    }
                    XenOp::Remove => {
                        acc.unmap_table(arch, mfn, table);
                        return Ok(());
                    }
                    XenOp::Modify { .. } => {
                        acc.unmap_table(arch, mfn, table);
                        return Err(XenError(format!("{va:#x} is not mapped")));
                    }
                }
            };
            acc.unmap_table(arch, mfn, table);
            mfn = next;
            level += 1;
            table = self.map(arch, acc, mfn)?;
        }
        let eva = Vaddr(table.0 + table_index(va, 3) as u64 * 8);
        let res = (|| {
            let pte = Pte(arch
                .read_pte(eva)
                .map_err(|f| XenError(format!("read: {f}")))?);
            let new = match op {
                XenOp::Insert { pa, attrs } => {
                    if pte.is_valid() {
                        return Err(XenError(format!("{va:#x} is already mapped")));
                    }
                    Pte::leaf::<F>(3, Paddr(pa), attrs, false)
                }
                XenOp::Modify { attrs } => {
                    if !pte.is_leaf(3) {
                        return Err(XenError(format!("{va:#x} is not mapped")));
                    }
                    pte.with_perm(attrs.perm())
                }
                XenOp::Remove => Pte(0),
            };
            arch.write_pte(eva, new.0)
                .map_err(|f| XenError(format!("write: {f}")))?;
            self.stats.leaves += 1;
            Ok(())
        })();
        acc.unmap_table(arch, mfn, table);
        res
    }

    /// `pages` single-page updates from `va`, then (Modify, Remove) one
    /// invalidation per page of the range and a final `dsb; isb`, even on
    /// failure.
    pub fn update<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &mut self,
        arch: &mut A,
        acc: &mut T,
        alloc: &mut M,
        va: u64,
        pages: u64,
        op: XenOp,
    ) -> Result<(), XenError> {
        let mut res = Ok(());
        for i in 0..pages {
            let op_i = match op {
                XenOp::Insert { pa, attrs } => XenOp::Insert {
                    pa: pa + i * PAGE_SIZE,
                    attrs,
                },
                other => other,
            };
            res = self.update_entry(arch, acc, alloc, va + i * PAGE_SIZE, op_i);
            if res.is_err() {
                break;
            }
        }
        if !matches!(op, XenOp::Insert { .. }) {
            for i in 0..pages {
                arch.tlb_flush_va(Vaddr(va + i * PAGE_SIZE));
                self.stats.tlb_invalidations += 1;
            }
            arch.tlb_sync();
        }
        res
    }

    /// Walks from the root for `va` (mapping each level's table) and returns
    /// the PA it maps to and whether it is writable.
    pub fn lookup<A: Arch, T: TableAccess<A>>(
        &mut self,
        arch: &mut A,
        acc: &mut T,
        va: u64,
    ) -> Option<(u64, bool)> {
        let mut mfn = self.root;
        let mut level = F::ROOT_LEVEL;
        loop {
            let table = self.map(arch, acc, mfn).ok()?;
            let pte = arch.read_pte(Vaddr(table.0 + table_index(va, level) as u64 * 8));
            acc.unmap_table(arch, mfn, table);
            let pte = Pte(pte.ok()?);
            if level < 3 && pte.is_table(level) {
                mfn = pte.table_mfn::<F>();
                level += 1;
                continue;
            }
            if !pte.is_leaf(level) {
                return None;
            }
            let size = hvmm::format::level_size(level);
            return Some((pte.oa::<F>().0 + (va & (size - 1)), pte.0 & Pte::AP_RO == 0));
        }
    }
}
