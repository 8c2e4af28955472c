//! A hypervisor's two kinds of table, built on the host with a frame
//! allocator and a table-access provider written here:
//!
//! ```text
//! cargo run -p hvmm --example tables --features host
//! ```
//!
//! The processor is [`hvmm::host::HostArch`], 4 KiB frames in host memory
//! at their physical address, so that the example runs anywhere; on
//! hardware it is `hvmm_arch::Aarch64El2` (see `examples/el2-hello` for the
//! same steps at EL2 on QEMU). Everything else is what a hypervisor writes:
//!
//! 1. a frame allocator ([`FreeList`]) that can reserve, so that every update
//!    is all or nothing;
//! 2. a table-access provider ([`LinearMap`]): how the engine reaches a
//!    table page (here every frame is mapped at VA = PA + [`OFFSET`]; on
//!    the host `OFFSET` is 0);
//! 3. the hypervisor's stage-1 table and a guest's stage-2 table, what they
//!    map, a walk and a dump.

use hvmm::host::HostArch;
use hvmm::{
    AccessError, AccessPath, Arch, Arm64, Arm64Stage2, Attrs, FrameAlloc, Ipa, MapFlags, Mfn,
    OutOfFrames, Paddr, S2Attrs, Table, TableAccess, Vaddr, Vmid,
};

/// Where the frames are: 256 frames from PA 0x4000_0000.
const POOL: (Mfn, usize) = (Mfn(0x4_0000), 256);

/// The offset of the provider's linear map (0 on the host: `HostArch`
/// reaches a frame at its physical address).
const OFFSET: u64 = 0;

/// Free frames on a list; a reservation is a promise that the next `n`
/// [`FrameAlloc::take`] calls succeed.
struct FreeList {
    free: Vec<Mfn>,
    reserved: usize,
}

impl FreeList {
    fn new(first: Mfn, count: usize) -> Self {
        FreeList {
            free: (0..count as u64).rev().map(|i| first.add(i)).collect(),
            reserved: 0,
        }
    }
}

impl FrameAlloc for FreeList {
    fn reserve(&mut self, n: usize) -> Result<(), OutOfFrames> {
        if n > self.free.len() {
            return Err(OutOfFrames {
                needed: n,
                available: self.free.len(),
            });
        }
        self.reserved = n;
        Ok(())
    }
    fn take(&mut self) -> Option<Mfn> {
        self.reserved = self.reserved.checked_sub(1)?;
        self.free.pop()
    }
    fn unreserve(&mut self) {
        self.reserved = 0;
    }
    fn free(&mut self, mfn: Mfn) {
        self.free.push(mfn);
    }
    /// A 40-bit stage-2 root is two consecutive frames, aligned to 8 KiB.
    fn alloc_contiguous(&mut self, frames: usize) -> Result<Mfn, OutOfFrames> {
        let n = frames as u64;
        let fail = OutOfFrames {
            needed: frames,
            available: self.free.len(),
        };
        let base = self
            .free
            .iter()
            .copied()
            .find(|m| m.0 % n == 0 && (1..n).all(|i| self.free.contains(&m.add(i))))
            .ok_or(fail)?;
        self.free.retain(|m| m.0 < base.0 || m.0 >= base.0 + n);
        Ok(base)
    }
}

/// Every frame of the pool, always mapped at `PA + OFFSET`.
struct LinearMap;

impl AccessPath for LinearMap {
    fn name(&self) -> &'static str {
        "linear-map"
    }
    fn can_reach(&self, mfn: Mfn) -> bool {
        mfn.0.wrapping_sub(POOL.0 .0) < POOL.1 as u64
    }
}

impl<A: Arch> TableAccess<A> for LinearMap {
    fn map_table(&mut self, _arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
        if !self.can_reach(mfn) {
            return Err(AccessError::Unreachable {
                provider: self.name(),
            });
        }
        Ok(Vaddr(mfn.paddr().0 + OFFSET))
    }
    fn unmap_table(&mut self, _arch: &mut A, _mfn: Mfn, _va: Vaddr) {}
}

/// Consecutive leaves of one level and one set of attributes, mapping
/// consecutive addresses, printed as one line.
#[derive(Default)]
struct Runs(Vec<(u64, u64, u64, u8, String)>);

impl Runs {
    fn add(&mut self, va: u64, pages: u64, pa: u64, level: u8, attrs: Option<impl ToString>) {
        let attrs = attrs.map_or("(not hvmm's)".into(), |a| a.to_string());
        if let Some(last) = self.0.last_mut() {
            let (lva, lpages, lpa, llevel, lattrs) = last;
            if *lva + *lpages * 4096 == va
                && *lpa + *lpages * 4096 == pa
                && *llevel == level
                && *lattrs == attrs
            {
                *lpages += pages;
                return;
            }
        }
        self.0.push((va, pages, pa, level, attrs));
    }
    fn print(&self) {
        for (va, pages, pa, level, attrs) in &self.0 {
            println!("  {va:#014x} +{pages:>5} pages -> PA {pa:#012x}  level {level}  {attrs}");
        }
    }
}

fn main() -> Result<(), hvmm::Error> {
    let mut cpu = HostArch::new(POOL.0, POOL.1);
    let mut frames = FreeList::new(POOL.0, POOL.1);

    // The hypervisor's own table: its image, a heap, a device.
    let mut hyp = Table::new(Arm64, &mut cpu, LinearMap, &mut frames)?;
    hyp.map(Vaddr(0x20_0000), Paddr(0x4020_0000), 256, Attrs::RX)?;
    hyp.map(Vaddr(0x30_0000), Paddr(0x4030_0000), 256, Attrs::RW)?;
    hyp.map(Vaddr(0x1_0000_0000), Paddr(0x8000_0000), 1024, Attrs::RW)?;
    hyp.map(Vaddr(0x900_0000), Paddr(0x900_0000), 1, Attrs::DEVICE)?;
    // On hardware: TTBR0_EL2 := root (hvmm_arch::aarch64::switch_root).
    let root = Paddr(hyp.ttbr());
    hyp.arch_mut().set_root(root);
    println!("stage 1 (arm64 EL2), root {root}:");
    let mut runs = Runs::default();
    hyp.walk(Vaddr(0), 1 << 22, |va, pages, leaf| {
        runs.add(va.0, pages, leaf.pa.0, leaf.level, leaf.attrs)
    })?;
    runs.print();
    // W^X: a writable, executable permission cannot even be made.
    let rwx = hvmm::Perm::from_rwx(true, true);
    println!("  read-write-execute: {}", rwx.unwrap_err());
    let overlap = hyp.map(Vaddr(0x20_0000), Paddr(0x5000_0000), 1, Attrs::RW);
    println!("  map over the image: {}", overlap.unwrap_err());

    // Make one heap page read-only: its 2 MiB block is split.
    let r = hyp.protect(Vaddr(0x1_0000_1000), 1, Attrs::RO)?;
    println!(
        "  protect 0x100001000: {} split, {} table page(s) made",
        r.splits, r.tables_created
    );
    let mut dump = String::new();
    hyp.dump(Vaddr(0x1_0000_1000), &mut dump)?;
    print!("{dump}");

    // A guest's table: 40-bit IPA (two concatenated root pages), VMID 1.
    let (_, cpu, _, frames) = hyp.into_parts();
    let mut guest = Table::new_stage2(Arm64Stage2::<40>, Vmid(1), cpu, LinearMap, frames)?
        .with_map_flags(MapFlags::BLOCKS);
    guest.map(Ipa(0x4000_0000), Paddr(0x8800_0000), 2048, S2Attrs::RAM)?;
    guest.map(Ipa(0x900_0000), Paddr(0x900_0000), 1, S2Attrs::DEVICE)?;
    println!(
        "stage 2 (arm64, 40-bit IPA), VMID {}, VTTBR {:#x}, VTCR {:#x}:",
        guest.vmid().0,
        guest.vttbr(),
        guest.vtcr()
    );
    let mut runs = Runs::default();
    guest.walk(Ipa(0), 1 << 28, |ipa, pages, leaf| {
        runs.add(ipa.0, pages, leaf.pa.0, leaf.level, leaf.attrs)
    })?;
    runs.print();
    let leaf = guest.translate(Ipa(0x4010_0123))?;
    let pa = leaf.map_or("nothing".into(), |l| l.pa.to_string());
    println!("  IPA 0x40100123 -> PA {pa}");
    let freed = guest.destroy()?;
    println!("stage 2 destroyed: {freed} table pages freed");
    Ok(())
}
