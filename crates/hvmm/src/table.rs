//! [`Table`]: one page table together with the parts it works with — the
//! processor ([`Arch`]), the way table pages are reached ([`TableAccess`])
//! and where new table pages come from ([`FrameAlloc`]) — and plain verbs:
//! [`map`](Table::map), [`protect`](Table::protect),
//! [`unmap`](Table::unmap), [`translate`](Table::translate),
//! [`walk`](Table::walk), [`dump`](Table::dump).
//!
//! It is a thin layer over the engine's low-level handle
//! ([`PageTable`], whose [`PageTable::update`] takes an [`Op`] and the parts
//! on each call): every verb is one update, all or nothing and checked.
//!
//! # Units
//!
//! Sizes are counted in 4 KiB pages everywhere: the `pages` argument of the
//! verbs, the `pages` a [`walk`](Table::walk) reports for each leaf, and the
//! range in errors ([`Error::VaOutOfRange`]...). Addresses are typed: a
//! stage-1 table takes [`Vaddr`](crate::Vaddr)s, a stage-2 table
//! [`Ipa`](crate::Ipa)s, both map to [`Paddr`]s.
//!
//! # The parts
//!
//! A table owns its parts; pass `&mut part` to keep using a part elsewhere
//! (every trait is implemented for `&mut` of an implementation), or get them
//! back with [`Table::into_parts`]. The read-only verbs ([`Table::translate`],
//! [`Table::walk`], [`Table::dump`]) need no frame allocator: a table whose
//! allocator is [`NoFrames`] (or anything at all) reads fine.

use crate::access::TableAccess;
use crate::addr::{Mfn, Paddr, Vmid};
use crate::arch::Arch;
use crate::attr::{MairMap, MapFlags};
use crate::engine::{Env, Leaf, Op, PageTable, UpdateReport};
use crate::error::Error;
use crate::format::{Format, Stage1Format, Stage2Format};
use crate::frames::{FrameAlloc, NoFrames};
use core::fmt;

/// A page table of format `F` with its processor back end `A`, its
/// table-access provider `T` and its frame allocator `M`.
///
/// ```
/// # #[cfg(feature = "host")] {
/// use hvmm::host::HostMemory;
/// use hvmm::{Arm64, Attrs, Paddr, Table, Vaddr};
///
/// let mut mem = HostMemory::new(64);
/// let (arch, access, frames) = mem.parts();
/// let mut hyp = Table::new(Arm64, arch, access, frames).unwrap();
/// // 16 pages of RAM at VA 2 MiB, read-write (never executable: W^X).
/// hyp.map(Vaddr(0x20_0000), Paddr(0x8000_0000), 16, Attrs::RW).unwrap();
/// hyp.protect(Vaddr(0x20_0000), 1, Attrs::RO).unwrap();
/// let leaf = hyp.translate(Vaddr(0x20_0123)).unwrap().unwrap();
/// assert_eq!((leaf.pa, leaf.attrs), (Paddr(0x8000_0123), Some(Attrs::RO)));
/// hyp.unmap(Vaddr(0x20_0000), 16).unwrap();
/// assert_eq!(hyp.translate(Vaddr(0x20_0000)).unwrap(), None);
/// # }
/// ```
pub struct Table<F: Format, A, T, M = NoFrames> {
    raw: PageTable<F>,
    arch: A,
    access: T,
    frames: M,
    flags: MapFlags,
}

impl<F: Format, A, T, M> fmt::Debug for Table<F, A, T, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("format", &F::NAME)
            .field("root", &self.raw.root())
            .field("vmid", &self.raw.vmid())
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

impl<F: Stage1Format, A: Arch, T: TableAccess<A>, M: FrameAlloc> Table<F, A, T, M> {
    /// A new, empty stage-1 table (the hypervisor's own, format `F`:
    /// [`Arm64`](crate::Arm64) or [`Arm32`](crate::Arm32)): takes one frame
    /// from `frames` for its root and zeroes it through `access`. Its
    /// attributes are encoded with [`MairMap::XEN`] unless
    /// [`Table::with_mair`] says otherwise.
    pub fn new(format: F, mut arch: A, mut access: T, mut frames: M) -> Result<Self, Error> {
        let _ = format;
        let raw = PageTable::create(&mut Env::new(&mut arch, &mut access, &mut frames))?;
        Ok(Self::from_parts(raw, arch, access, frames))
    }
}

impl<F: Stage2Format, A: Arch, T: TableAccess<A>, M: FrameAlloc> Table<F, A, T, M> {
    /// A new, empty stage-2 table (a guest's, format `F`:
    /// [`Arm64Stage2`](crate::Arm64Stage2) or
    /// [`Arm32Stage2`](crate::Arm32Stage2)) for the guest `vmid`: takes its
    /// root frames (several concatenated ones for some IPA sizes) from
    /// `frames` and zeroes them. Its TLB maintenance is scoped to `vmid`. A
    /// VMID wider than the format's VTTBR field is refused.
    pub fn new_stage2(
        format: F,
        vmid: Vmid,
        mut arch: A,
        mut access: T,
        mut frames: M,
    ) -> Result<Self, Error> {
        let _ = format;
        let raw =
            PageTable::create_stage2(&mut Env::new(&mut arch, &mut access, &mut frames), vmid)?;
        Ok(Self::from_parts(raw, arch, access, frames))
    }
}

impl<F: Format, A, T, M> Table<F, A, T, M> {
    /// A table from the engine's handle and its parts (the inverse of
    /// [`Table::into_parts`]). New mappings may use blocks
    /// ([`MapFlags::BLOCKS`]) until [`Table::set_map_flags`] says otherwise.
    pub fn from_parts(raw: PageTable<F>, arch: A, access: T, frames: M) -> Self {
        Table {
            raw,
            arch,
            access,
            frames,
            flags: MapFlags::BLOCKS,
        }
    }

    /// The engine's handle and the parts.
    pub fn into_parts(self) -> (PageTable<F>, A, T, M) {
        (self.raw, self.arch, self.access, self.frames)
    }

    /// The engine's handle (root, VMID, MAIR map).
    pub fn raw(&self) -> &PageTable<F> {
        &self.raw
    }

    /// The root table's frame (the first one, for a stage-2 root of
    /// concatenated pages). The root register's value is [`Table::ttbr`]
    /// (stage 1) or [`Table::vttbr`] (stage 2).
    pub fn root(&self) -> Mfn {
        self.raw.root()
    }

    /// The processor back end.
    pub fn arch(&self) -> &A {
        &self.arch
    }
    /// The processor back end, to use it between updates.
    pub fn arch_mut(&mut self) -> &mut A {
        &mut self.arch
    }
    /// The table-access provider.
    pub fn access(&self) -> &T {
        &self.access
    }
    /// The table-access provider, to change it between updates (a new boot
    /// phase).
    pub fn access_mut(&mut self) -> &mut T {
        &mut self.access
    }
    /// The frame allocator.
    pub fn frames(&self) -> &M {
        &self.frames
    }
    /// The frame allocator, to use it between updates.
    pub fn frames_mut(&mut self) -> &mut M {
        &mut self.frames
    }

    /// What new mappings may use (see [`MapFlags`]).
    pub fn map_flags(&self) -> MapFlags {
        self.flags
    }
    /// Sets what new mappings made by [`Table::map`] (and by the splits of
    /// [`Table::protect`] and [`Table::unmap`]) may use: blocks, the
    /// contiguous hint, merges back into blocks. The default,
    /// [`MapFlags::BLOCKS`], uses 2 MiB and 1 GiB blocks wherever the
    /// addresses and the size allow.
    pub fn set_map_flags(&mut self, flags: MapFlags) {
        self.flags = flags;
    }
    /// The table with [`Table::set_map_flags`] applied.
    pub fn with_map_flags(mut self, flags: MapFlags) -> Self {
        self.flags = flags;
        self
    }
}

impl<F: Stage1Format, A, T, M> Table<F, A, T, M> {
    /// The same table with its attributes encoded through `mair` (the CPU's
    /// MAIR register must hold [`MairMap::value`]). Set it before mapping
    /// anything: existing entries keep the index they were written with.
    pub fn with_mair(self, mair: MairMap) -> Self {
        let Table {
            raw,
            arch,
            access,
            frames,
            flags,
        } = self;
        Table {
            raw: raw.with_mair(mair),
            arch,
            access,
            frames,
            flags,
        }
    }

    /// The TTBR0_EL2 / HTTBR value that makes this table the hypervisor's:
    /// the root's physical address.
    pub fn ttbr(&self) -> u64 {
        self.raw.root().paddr().0
    }

    /// The MAIR map the table's attributes are encoded with: the value of
    /// MAIR_EL2 (HMAIR0/1 on arm32) is [`MairMap::value`].
    pub fn mair(&self) -> MairMap {
        self.raw.mair()
    }
}

impl<F: Stage2Format, A, T, M> Table<F, A, T, M> {
    /// The guest's VMID.
    pub fn vmid(&self) -> Vmid {
        // A stage-2 handle always has one (`PageTable::create_stage2`).
        self.raw.vmid().unwrap_or(Vmid(0))
    }
    /// The VTTBR_EL2 / VTTBR value that makes this table the guest's stage
    /// 2: the root's address and the VMID.
    pub fn vttbr(&self) -> u64 {
        self.raw.vttbr()
    }
    /// The VTCR_EL2 / VTCR value this table's format assumes (T0SZ, SL0,
    /// granule, walk cacheability; on arm64 PS = 48 bits: clamp it to the
    /// CPU's `ID_AA64MMFR0_EL1.PARange`).
    pub fn vtcr(&self) -> u64 {
        F::vtcr()
    }
}

impl<F: Format, A: Arch, T: TableAccess<A>, M: FrameAlloc> Table<F, A, T, M> {
    /// Maps `pages` pages from `va` on to `pa..` with `attrs`. Refused, with
    /// nothing changed, if any page of the range is mapped already (no
    /// silent replacement), if the attributes are not allowed (writable and
    /// executable, executable device memory), or if the tables it needs
    /// cannot be had.
    pub fn map(
        &mut self,
        va: F::Input,
        pa: Paddr,
        pages: u64,
        attrs: F::Attrs,
    ) -> Result<UpdateReport, Error> {
        self.update(va, pages, Op::Insert { pa, attrs }, self.flags)
    }

    /// Changes the permission of the `pages` mapped pages from `va` on to
    /// that of `attrs` (whose memory type must be the one they have), at
    /// whatever level they are mapped: a block the range covers in part is
    /// split, with break-before-make. Refused, with nothing changed, if a
    /// page of the range is not mapped.
    pub fn protect(
        &mut self,
        va: F::Input,
        pages: u64,
        attrs: F::Attrs,
    ) -> Result<UpdateReport, Error> {
        self.update(va, pages, Op::Modify { attrs }, self.flags)
    }

    /// Unmaps the `pages` pages from `va` on, at whatever level they are
    /// mapped (a block the range covers in part is split). Pages that are
    /// not mapped are fine. Tables it empties are freed after the TLB
    /// invalidation.
    pub fn unmap(&mut self, va: F::Input, pages: u64) -> Result<UpdateReport, Error> {
        self.update(va, pages, Op::Remove, self.flags)
    }

    /// Creates the tables down to level 3 for the `pages` pages from `va`
    /// on, mapping nothing (so that later maps there need no allocation).
    pub fn populate(&mut self, va: F::Input, pages: u64) -> Result<UpdateReport, Error> {
        self.update(va, pages, Op::Populate, self.flags)
    }

    /// The low-level update: `op` on `pages` pages from `va` on, with
    /// `flags` for this call ([`PageTable::update`]).
    pub fn update(
        &mut self,
        va: F::Input,
        pages: u64,
        op: Op<F::Attrs>,
        flags: MapFlags,
    ) -> Result<UpdateReport, Error> {
        let env = &mut Env::new(&mut self.arch, &mut self.access, &mut self.frames);
        self.raw.update(env, va, pages, op, flags)
    }

    /// Frees every table page, root included, after invalidating the
    /// regime's TLB entries (the hypervisor's, or the guest's VMID); returns
    /// how many pages were freed. No CPU may still use the table (TTBR /
    /// VTTBR pointing at it).
    pub fn destroy(self) -> Result<u64, Error> {
        let Table {
            raw,
            mut arch,
            mut access,
            mut frames,
            ..
        } = self;
        raw.destroy(&mut Env::new(&mut arch, &mut access, &mut frames))
    }
}

impl<F: Format, A: Arch, T: TableAccess<A>, M> Table<F, A, T, M> {
    /// The leaf that maps `va` (its level, the physical address `va`
    /// translates to, its attributes), or `None` if `va` is not mapped.
    /// Software walk of the tables; no frame allocator involved.
    pub fn translate(&mut self, va: F::Input) -> Result<Option<Leaf<F::Attrs>>, Error> {
        self.raw.lookup(&mut self.arch, &mut self.access, va)
    }

    /// Calls `f(va, pages, leaf)` for each mapped part of the `pages` pages
    /// from `va` on, in address order, visiting each table once: the part
    /// starts at `va`, is `pages` pages long and lies in one leaf (a page or
    /// a block), and `leaf.pa` is where `va` maps to.
    ///
    /// ```
    /// # #[cfg(feature = "host")] {
    /// use hvmm::host::HostMemory;
    /// use hvmm::{Arm64, Attrs, Paddr, Table, Vaddr};
    ///
    /// let mut mem = HostMemory::new(64);
    /// let (arch, access, frames) = mem.parts();
    /// let mut hyp = Table::new(Arm64, arch, access, frames).unwrap();
    /// hyp.map(Vaddr(0x4000_0000), Paddr(0x4000_0000), 513, Attrs::RW).unwrap();
    /// let mut runs = Vec::new();
    /// hyp.walk(Vaddr(0x4000_0000), 1024, |va, pages, leaf| runs.push((va.0, pages, leaf.level)))
    ///     .unwrap();
    /// // One 2 MiB block (512 pages), then one page.
    /// assert_eq!(runs, [(0x4000_0000, 512, 2), (0x4020_0000, 1, 3)]);
    /// # }
    /// ```
    pub fn walk(
        &mut self,
        va: F::Input,
        pages: u64,
        f: impl FnMut(F::Input, u64, Leaf<F::Attrs>),
    ) -> Result<(), Error> {
        self.raw
            .for_each_leaf_with(&mut self.arch, &mut self.access, va, pages, f)
    }

    /// Writes the walk for `va` to `out`: each level's table, index and
    /// entry, down to the leaf or the first invalid entry (Xen's
    /// `dump_hyp_walk`). A stage-1 root is compared with the root register.
    pub fn dump(&mut self, va: F::Input, out: &mut dyn fmt::Write) -> Result<(), Error> {
        self.raw.dump(&mut self.arch, &mut self.access, va, out)
    }
}
