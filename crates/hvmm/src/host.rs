//! The host back end: table pages in host memory, no TLB, no MMU.
//!
//! Used by documentation examples, unit tests of the engine's bookkeeping and
//! the benchmarks ("tables in host memory, no TLB instructions"). A virtual
//! address here is simply the physical address of the frame (an identity
//! "direct map" over a pool of frames), and every access is bounds checked: an
//! address outside the pool reads as a synchronous external abort, so there is
//! no `unsafe` in this module. Hardware behaviour (faults, TLB staleness,
//! break-before-make) is the machine model's job (`hvmm-model`).

extern crate alloc as rust_alloc;

use crate::access::{AccessError, AccessPath, TableAccess};
use crate::addr::{Mfn, Paddr, Vaddr, Vmid};
use crate::arch::{AccessKind, Arch, AtResult, CpuOps, FaultKind, MemFault};
use crate::engine::Env;
use crate::format::ENTRIES;
use crate::frames::{FrameAlloc, OutOfFrames, TableMeta};
use rust_alloc::boxed::Box;
use rust_alloc::vec;
use rust_alloc::vec::Vec;

/// A pool of frames in host memory, and the [`Arch`] operations over it.
pub struct HostArch {
    base: Mfn,
    frames: Vec<[u64; ENTRIES]>,
    root: Paddr,
    /// TLB operations requested (counted, not performed).
    tlb_ops: u64,
    /// Pages zeroed (counted with `test-hooks` only).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    zeroed: u64,
}

impl HostArch {
    /// A pool of `count` frames starting at frame `base`.
    pub fn new(base: Mfn, count: usize) -> Self {
        HostArch {
            base,
            frames: vec![[0u64; ENTRIES]; count],
            root: Paddr(0),
            tlb_ops: 0,
            zeroed: 0,
        }
    }

    /// TLB operations requested so far (counted, not performed; feature
    /// `test-hooks`).
    #[cfg(feature = "test-hooks")]
    pub fn tlb_ops(&self) -> u64 {
        self.tlb_ops
    }

    /// Pages zeroed so far through [`Arch::zero_page`] (feature
    /// `test-hooks`).
    #[cfg(feature = "test-hooks")]
    pub fn zeroed_pages(&self) -> u64 {
        self.zeroed
    }

    /// Sets what [`Arch::root`] reports.
    pub fn set_root(&mut self, root: Paddr) {
        self.root = root;
    }

    /// The frame index and entry index of `va`, or the fault an access to it
    /// takes. One combined check (an address below the pool wraps around to
    /// a huge index); the fault is built only on the cold path.
    #[inline(always)]
    fn slot(&self, va: Vaddr, access: AccessKind) -> Result<(usize, usize), MemFault> {
        let frame = (va.0 >> 12).wrapping_sub(self.base.0);
        if frame < self.frames.len() as u64 && va.0 & 7 == 0 {
            Ok((frame as usize, ((va.0 & 0xfff) >> 3) as usize))
        } else {
            Err(Self::fault(va, access))
        }
    }

    /// The `n` entries from `va` on, if they all lie in one frame of the
    /// pool (otherwise the caller goes entry by entry, and faults where a
    /// single access would).
    #[inline(always)]
    fn run(&mut self, va: Vaddr, n: usize) -> Option<&mut [u64]> {
        let frame = (va.0 >> 12).wrapping_sub(self.base.0);
        let i = ((va.0 & 0xfff) >> 3) as usize;
        if frame < self.frames.len() as u64 && va.0 & 7 == 0 && n <= ENTRIES - i {
            Some(&mut self.frames[frame as usize][i..i + n])
        } else {
            None
        }
    }

    #[cold]
    #[inline(never)]
    fn fault(va: Vaddr, access: AccessKind) -> MemFault {
        MemFault {
            va,
            access,
            kind: FaultKind::External,
            level: 0,
        }
    }

    /// A copy of every frame of the pool (to compare before and after).
    pub fn snapshot(&self) -> Vec<[u64; ENTRIES]> {
        self.frames.clone()
    }

    /// The 512 entries of frame `mfn`, if it is in the pool.
    pub fn frame(&self, mfn: Mfn) -> Option<&[u64; ENTRIES]> {
        let i = usize::try_from(mfn.0.checked_sub(self.base.0)?).ok()?;
        self.frames.get(i)
    }
}

impl Arch for HostArch {
    #[inline(always)]
    fn read_pte(&mut self, va: Vaddr) -> Result<u64, MemFault> {
        let (f, i) = self.slot(va, AccessKind::Read)?;
        Ok(self.frames[f][i])
    }
    #[inline(always)]
    fn write_pte(&mut self, va: Vaddr, val: u64) -> Result<(), MemFault> {
        let (f, i) = self.slot(va, AccessKind::Write)?;
        self.frames[f][i] = val;
        Ok(())
    }
    #[inline]
    fn write_pte_run(
        &mut self,
        va: Vaddr,
        first: u64,
        step: u64,
        n: usize,
    ) -> Result<(), MemFault> {
        let mut val = first;
        match self.run(va, n) {
            Some(run) => {
                for e in run {
                    *e = val;
                    val = val.wrapping_add(step);
                }
            }
            None => {
                for i in 0..n {
                    self.write_pte(Vaddr(va.0 + 8 * i as u64), val)?;
                    val = val.wrapping_add(step);
                }
            }
        }
        Ok(())
    }
    #[inline(always)]
    fn update_pte_run<G: FnMut(u64) -> Option<u64>>(
        &mut self,
        va: Vaddr,
        n: usize,
        mut f: G,
    ) -> Result<(), MemFault> {
        if n == 1 {
            // One descriptor: one bounds check for the read and the write.
            let (fr, i) = self.slot(va, AccessKind::Write)?;
            if let Some(new) = f(self.frames[fr][i]) {
                self.frames[fr][i] = new;
            }
            return Ok(());
        }
        match self.run(va, n) {
            Some(run) => {
                for e in run {
                    if let Some(new) = f(*e) {
                        *e = new;
                    }
                }
            }
            None => {
                for i in 0..n {
                    let at = Vaddr(va.0 + 8 * i as u64);
                    if let Some(new) = f(self.read_pte(at)?) {
                        self.write_pte(at, new)?;
                    }
                }
            }
        }
        Ok(())
    }
    #[inline]
    fn find_pte<P: FnMut(u64) -> bool>(
        &mut self,
        va: Vaddr,
        n: usize,
        mut pred: P,
    ) -> Result<Option<usize>, MemFault> {
        match self.run(va, n) {
            Some(run) => Ok(run.iter().position(|&e| pred(e))),
            None => {
                for i in 0..n {
                    if pred(self.read_pte(Vaddr(va.0 + 8 * i as u64))?) {
                        return Ok(Some(i));
                    }
                }
                Ok(None)
            }
        }
    }
    fn zero_page(&mut self, va: Vaddr) -> Result<(), MemFault> {
        let (f, _) = self.slot(va.page_floor(), AccessKind::Write)?;
        self.frames[f].fill(0);
        #[cfg(feature = "test-hooks")]
        {
            self.zeroed += 1;
        }
        Ok(())
    }
    fn tlb_flush_va(&mut self, _va: Vaddr) {
        self.tlb_ops += 1;
    }
    fn tlb_flush_all(&mut self) {
        self.tlb_ops += 1;
    }
    fn tlb_flush_ipa(&mut self, _vmid: Vmid, _ipa: u64) {
        self.tlb_ops += 1;
    }
    fn tlb_flush_guest_s1(&mut self, _vmid: Vmid) {
        self.tlb_ops += 1;
    }
    fn tlb_flush_vmid(&mut self, _vmid: Vmid) {
        self.tlb_ops += 1;
    }
    fn tlb_sync(&mut self) {}
    fn isb(&mut self) {}
    fn root(&self) -> Paddr {
        self.root
    }
}

impl CpuOps for HostArch {
    fn tlb_flush_va_local(&mut self, _va: Vaddr) {
        self.tlb_ops += 1;
    }
    fn hw_translate(&mut self, va: Vaddr, write: bool) -> Result<AtResult, MemFault> {
        let access = if write {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        self.slot(va, access)?;
        Ok(AtResult {
            pa: Paddr(va.0),
            mair_attr: 0xff,
        })
    }
    fn cpu(&self) -> usize {
        0
    }
}

/// Table access on the host: every frame is reachable at VA = PA.
#[derive(Default)]
pub struct HostIdentity {
    /// Table maps served (counted with the feature `test-hooks` only: the
    /// count is a test's, and a counter in memory bumped on every map is a
    /// dependency chain through memory in a loop of one-page updates).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    maps: u64,
}

impl HostIdentity {
    /// Table maps served so far (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    pub fn maps(&self) -> u64 {
        self.maps
    }
}

impl AccessPath for HostIdentity {
    fn name(&self) -> &'static str {
        "host-identity"
    }
}

impl<A: Arch> TableAccess<A> for HostIdentity {
    #[inline(always)]
    fn map_table(&mut self, _arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
        #[cfg(feature = "test-hooks")]
        {
            self.maps += 1;
        }
        Ok(Vaddr(mfn.paddr().0))
    }
    #[inline(always)]
    fn unmap_table(&mut self, _arch: &mut A, _mfn: Mfn, _va: Vaddr) {}
}

/// A free list of frames with reservations, for tests and benchmarks. It
/// keeps a [`TableMeta`] slot per frame of its pool (a frametable), as a
/// hypervisor's page allocator would, and knows which free frames were
/// given back all zero ([`FrameAlloc::free_zeroed`]).
pub struct HostFrames {
    /// The free frames (as offsets from `base`, 4 bytes each, with
    /// [`HostFrames::ZEROED`] for a frame given back all zero), a stack:
    /// `stack[..free]`, the next one handed out last. As long as the pool,
    /// so that a free never grows it.
    stack: Box<[u32]>,
    free: usize,
    base: Mfn,
    meta: Vec<TableMeta>,
    reserved: usize,
    /// Frames handed out and not yet freed.
    in_use: usize,
    /// Frames that may never be freed (like tables inside an image).
    pinned: Box<[Mfn]>,
}

impl HostFrames {
    /// Marks a free frame given back all zero (an offset has no such bit:
    /// a pool holds fewer than 2^31 frames).
    const ZEROED: u32 = 1 << 31;

    /// A free list of the `count` frames (fewer than 2^31) starting at
    /// `base`.
    pub fn new(base: Mfn, count: usize) -> Self {
        let count = count.min(Self::ZEROED as usize - 1);
        HostFrames {
            stack: (0..count as u32).rev().collect(),
            free: count,
            base,
            meta: vec![TableMeta::UNKNOWN; count],
            reserved: 0,
            in_use: 0,
            pinned: Box::new([]),
        }
    }
    /// Frames left.
    pub fn available(&self) -> usize {
        self.free
    }
    /// The free frames, the next one handed out last.
    fn free_frames(&self) -> impl DoubleEndedIterator<Item = Mfn> + '_ {
        self.stack[..self.free]
            .iter()
            .map(|&i| self.base.add(u64::from(i & !Self::ZEROED)))
    }
    /// The offset of `mfn` in the pool, if it is a frame of the pool.
    #[inline(always)]
    fn offset(&self, mfn: Mfn) -> Option<u32> {
        let i = mfn.0.wrapping_sub(self.base.0);
        (i < self.meta.len() as u64).then_some(i as u32)
    }
    /// Takes the top of the stack: the frame, and whether it was given back
    /// all zero.
    #[inline(always)]
    fn pop(&mut self) -> Option<(Mfn, bool)> {
        self.free = self.free.checked_sub(1)?;
        let i = self.stack[self.free];
        Some((
            self.base.add(u64::from(i & !Self::ZEROED)),
            i & Self::ZEROED != 0,
        ))
    }

    /// Puts `mfn` back on the stack (`zeroed`: all zero).
    #[inline(always)]
    fn push(&mut self, mfn: Mfn, zeroed: bool) {
        // A frame not from the pool is a caller's bug, dropped here (the
        // stack, as long as the pool, then always has room).
        let Some(i) = self.offset(mfn) else {
            return;
        };
        if let Some(top) = self.stack.get_mut(self.free) {
            *top = i | if zeroed { Self::ZEROED } else { 0 };
            self.free += 1;
            self.in_use -= 1;
        }
    }
    /// Frames handed out and not yet freed.
    pub fn in_use(&self) -> usize {
        self.in_use
    }
    /// Makes `frames` frames that may never be freed, as the tables inside
    /// a hypervisor image are ([`FrameAlloc::can_free`]; feature
    /// `test-hooks`).
    #[cfg(feature = "test-hooks")]
    pub fn pin(&mut self, frames: &[Mfn]) {
        self.pinned = frames.into();
    }
    /// Allocates one frame outside any update (a root table), zeroed.
    pub fn alloc_zeroed(&mut self, arch: &mut HostArch) -> Option<Mfn> {
        let (mfn, _) = self.pop()?;
        self.in_use += 1;
        arch.zero_page(Vaddr(mfn.paddr().0)).ok()?;
        Some(mfn)
    }
}

impl FrameAlloc for HostFrames {
    #[inline]
    fn reserve(&mut self, n: usize) -> Result<(), OutOfFrames> {
        if n > self.free {
            return Err(OutOfFrames {
                needed: n,
                available: self.free,
            });
        }
        self.reserved = n;
        Ok(())
    }
    #[inline]
    fn take(&mut self) -> Option<Mfn> {
        if self.reserved == 0 {
            return None;
        }
        self.reserved -= 1;
        self.in_use += 1;
        self.pop().map(|(mfn, _)| mfn)
    }
    #[inline]
    fn take_zeroed(&mut self) -> Option<(Mfn, bool)> {
        if self.reserved == 0 {
            return None;
        }
        self.reserved -= 1;
        self.in_use += 1;
        self.pop()
    }
    #[inline]
    fn unreserve(&mut self) {
        self.reserved = 0;
    }
    #[inline(always)]
    fn free(&mut self, mfn: Mfn) {
        self.push(mfn, false);
    }
    #[inline(always)]
    fn free_zeroed(&mut self, mfn: Mfn) {
        self.push(mfn, true);
    }
    #[inline]
    fn free_batch(&mut self, mfns: &[Mfn]) {
        let (base, count) = (self.base.0, self.meta.len() as u64);
        let mut top = self.free;
        for &mfn in mfns {
            // As in `free`: a frame not from the pool is dropped.
            let i = mfn.0.wrapping_sub(base);
            if i < count {
                if let Some(slot) = self.stack.get_mut(top) {
                    *slot = i as u32;
                    top += 1;
                }
            }
        }
        self.in_use -= top - self.free;
        self.free = top;
    }
    #[inline(always)]
    fn can_free(&self, mfn: Mfn) -> bool {
        !self.pinned.contains(&mfn)
    }
    #[inline(always)]
    fn table_meta(&mut self, mfn: Mfn) -> Option<&mut TableMeta> {
        let i = mfn.0.wrapping_sub(self.base.0);
        self.meta.get_mut(usize::try_from(i).ok()?)
    }
    fn reserved_frames(&self, f: &mut dyn FnMut(Mfn)) {
        for mfn in self.free_frames().rev().take(self.reserved) {
            f(mfn);
        }
    }
    fn alloc_contiguous(&mut self, frames: usize) -> Result<Mfn, OutOfFrames> {
        let n = frames as u64;
        let fail = OutOfFrames {
            needed: frames,
            available: self.free,
        };
        if frames == 0 || !frames.is_power_of_two() {
            return Err(fail);
        }
        // The most recently freed aligned block whose frames are all free.
        let base = self
            .free_frames()
            .rev()
            .find(|m| m.0 % n == 0 && (1..n).all(|i| self.free_frames().any(|f| f == m.add(i))))
            .ok_or(fail)?;
        let mut kept = 0;
        for i in 0..self.free {
            let m = self.stack[i];
            let mfn = self.base.add(u64::from(m & !Self::ZEROED));
            if mfn.0 < base.0 || mfn.0 >= base.0 + n {
                self.stack[kept] = m;
                kept += 1;
            }
        }
        self.free = kept;
        self.in_use += frames;
        Ok(base)
    }
}

/// A complete host set-up: the pool, the identity provider and the free list.
pub struct HostMemory {
    /// The frames and the processor operations.
    pub arch: HostArch,
    /// The table-access provider.
    pub access: HostIdentity,
    /// The frame allocator.
    pub frames: HostFrames,
}

impl HostMemory {
    /// A pool of `count` frames at PA 0x4000_0000.
    pub fn new(count: usize) -> Self {
        Self::at(Mfn(0x4_0000), count)
    }
    /// A pool of `count` frames from frame `base` on.
    pub fn at(base: Mfn, count: usize) -> Self {
        HostMemory {
            arch: HostArch::new(base, count),
            access: HostIdentity::default(),
            frames: HostFrames::new(base, count),
        }
    }
    /// Allocates a zeroed root table and makes it the root register's value.
    pub fn alloc_root(&mut self) -> Option<Mfn> {
        let root = self.frames.alloc_zeroed(&mut self.arch)?;
        self.arch.set_root(root.paddr());
        Some(root)
    }
    /// The three parts, to build a [`crate::Table`] over this memory:
    /// `Table::new(Arm64, arch, access, frames)`.
    pub fn parts(&mut self) -> (&mut HostArch, &mut HostIdentity, &mut HostFrames) {
        (&mut self.arch, &mut self.access, &mut self.frames)
    }
    /// The engine environment over this memory.
    pub fn env(&mut self) -> Env<'_, HostArch, HostIdentity, HostFrames> {
        Env::new(&mut self.arch, &mut self.access, &mut self.frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host back end with only the required `Arch` methods: every
    /// provided method runs its default (entry by entry).
    struct Plain(HostArch);

    impl Arch for Plain {
        fn read_pte(&mut self, va: Vaddr) -> Result<u64, MemFault> {
            self.0.read_pte(va)
        }
        fn write_pte(&mut self, va: Vaddr, val: u64) -> Result<(), MemFault> {
            self.0.write_pte(va, val)
        }
        fn zero_page(&mut self, va: Vaddr) -> Result<(), MemFault> {
            self.0.zero_page(va)
        }
        fn tlb_flush_va(&mut self, va: Vaddr) {
            self.0.tlb_flush_va(va)
        }
        fn tlb_flush_all(&mut self) {
            self.0.tlb_flush_all()
        }
        fn tlb_flush_ipa(&mut self, vmid: Vmid, ipa: u64) {
            self.0.tlb_flush_ipa(vmid, ipa)
        }
        fn tlb_flush_guest_s1(&mut self, vmid: Vmid) {
            self.0.tlb_flush_guest_s1(vmid)
        }
        fn tlb_flush_vmid(&mut self, vmid: Vmid) {
            self.0.tlb_flush_vmid(vmid)
        }
        fn tlb_sync(&mut self) {}
        fn isb(&mut self) {}
        fn root(&self) -> Paddr {
            self.0.root()
        }
    }

    /// The host's run methods do what the defaults do, inside a frame,
    /// across frames and at the edges of the pool (where both fault).
    #[test]
    fn run_overrides_match_the_defaults() {
        let base = Mfn(0x4_0000);
        let mut fast = HostArch::new(base, 3);
        let mut plain = Plain(HostArch::new(base, 3));
        let pool = base.paddr().0;
        let cases: [(u64, usize); 6] = [
            (pool, 512),
            (pool + 8 * 500, 12),
            (pool + 8 * 500, 20),
            (pool + 0x1000 + 8 * 3, 7),
            (pool + 3 * 0x1000 - 16, 4),
            (pool - 8, 2),
        ];
        for (k, &(va, n)) in cases.iter().enumerate() {
            let va = Vaddr(va);
            let first = 0x0040_0000_4000_0743 + k as u64;
            let a = fast.write_pte_run(va, first, 0x1000, n);
            let b = plain.write_pte_run(va, first, 0x1000, n);
            assert_eq!(a, b);
            assert_eq!(fast.snapshot(), plain.0.snapshot());
            let f = |e: u64| (e & 4 != 0).then_some(e ^ 0x80);
            let a = fast.update_pte_run(va, n, f);
            let b = plain.update_pte_run(va, n, f);
            assert_eq!(a, b);
            assert_eq!(fast.snapshot(), plain.0.snapshot());
            let p = |e: u64| e & 0x84 == 0x84;
            assert_eq!(fast.find_pte(va, n, p), plain.find_pte(va, n, p));
            let none = |_: u64| false;
            assert_eq!(fast.find_pte(va, n, none), plain.find_pte(va, n, none));
        }
    }
}
