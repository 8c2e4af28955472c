//! hvmm's engine building and changing a guest's stage 2 on the model, the
//! guest reading and writing through it on two CPUs: the formats' VTCR and
//! VTTBR values work, and after every update no CPU holds a stale or
//! conflicting guest translation and no break-before-make rule was broken.
//!
//! The model's EL2 MMU is off (table pages are reached at VA = PA), so only
//! the guest's translations are cached.

use hvmm::access::{AccessError, AccessPath, TableAccess};
use hvmm::frames::OutOfFrames;
use hvmm::{
    AccessKind, Arm32Stage2, Arm64Stage2, Env, FrameAlloc, Ipa, MapFlags, Mfn, Op, Paddr,
    PageTable, S2Access, S2Attrs, S2MemType, Stage, Stage2Format, Vaddr, Vmid,
};
use hvmm_model::{AbortKind, Machine, Regime};
use hvmm_xen::boot_alloc::FrameRanges;

/// Table pages at VA = PA (EL2's MMU is off).
struct Identity;

impl AccessPath for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }
}

impl TableAccess<Machine> for Identity {
    fn map_table(&mut self, _arch: &mut Machine, mfn: Mfn) -> Result<Vaddr, AccessError> {
        Ok(Vaddr(mfn.paddr().0))
    }
    fn unmap_table(&mut self, _arch: &mut Machine, _mfn: Mfn, _va: Vaddr) {}
}

/// The boot allocator, which also serves the concatenated stage-2 root.
struct Alloc(FrameRanges);

impl FrameAlloc for Alloc {
    fn reserve(&mut self, n: usize) -> Result<(), OutOfFrames> {
        self.0.reserve(n)
    }
    fn take(&mut self) -> Option<Mfn> {
        self.0.take()
    }
    fn unreserve(&mut self) {
        self.0.unreserve()
    }
    fn free(&mut self, mfn: Mfn) {
        self.0.free(mfn)
    }
    fn alloc_contiguous(&mut self, frames: usize) -> Result<Mfn, OutOfFrames> {
        self.0
            .alloc(frames as u64, frames as u64)
            .map_err(|_| OutOfFrames {
                needed: frames,
                available: 0,
            })
    }
}

struct Rig<F: Stage2Format> {
    m: Machine,
    alloc: Alloc,
    pt: PageTable<F>,
}

const VMID: Vmid = Vmid(3);
const MIB2: u64 = 2 << 20;

impl<F: Stage2Format> Rig<F> {
    /// RAM at `ram` (16 MiB of table frames, then guest memory); the stage
    /// 2 made by the engine loaded on both CPUs with the format's VTCR.
    fn new(regime: Regime, ram: u64) -> Rig<F> {
        let mut m = Machine::new(regime, 2);
        m.add_ram(Paddr(ram), 64 << 20).unwrap();
        let mut ranges = FrameRanges::new();
        ranges.add(Paddr(ram), Paddr(ram + (16 << 20))).unwrap();
        let mut alloc = Alloc(ranges);
        let pt =
            PageTable::<F>::create_stage2(&mut Env::new(&mut m, &mut Identity, &mut alloc), VMID)
                .unwrap();
        for cpu in 0..2 {
            m.set_vtcr(cpu, F::vtcr()).unwrap();
            m.set_vttbr_raw(cpu, pt.vttbr()).unwrap();
            m.set_stage2(cpu, true).unwrap();
        }
        assert_eq!(m.vmid(0).unwrap(), VMID);
        Rig { m, alloc, pt }
    }

    fn update(&mut self, ipa: u64, pages: u64, op: Op<S2Attrs>, flags: MapFlags) {
        let mut access = Identity;
        let mut env = Env::new(&mut self.m, &mut access, &mut self.alloc);
        self.pt
            .update(&mut env, Ipa(ipa), pages, op, flags)
            .unwrap_or_else(|e| panic!("{} at {ipa:#x}: {e}", op.name()));
        self.clean();
    }

    /// No stale or conflicting entry anywhere, no BBM violation.
    fn clean(&self) {
        let stale = self.m.all_stale_tlb_entries();
        assert!(stale.is_empty(), "stale: {stale:#x?}");
        assert!(
            self.m.tlb_conflicts().is_empty(),
            "{:#x?}",
            self.m.tlb_conflicts()
        );
        assert!(
            self.m.bbm_violations().is_empty(),
            "{:#x?}",
            self.m.bbm_violations()
        );
    }

    /// Both CPUs translate `ipa` for `access` to `pa` (or fault as `want`).
    fn expect(&mut self, ipa: u64, access: AccessKind, want: Result<u64, AbortKind>) {
        for cpu in 0..2 {
            let got = self
                .m
                .guest_access(cpu, Vaddr(ipa), access)
                .map(|p| p.0)
                .map_err(|g| {
                    assert_eq!(g.stage, Stage::Two, "{g}");
                    g.kind
                });
            assert_eq!(got, want, "CPU {cpu}, IPA {ipa:#x}, {access:?}");
        }
    }
}

fn life_of_a_guest<F: Stage2Format>(regime: Regime, ram: u64, ipa: u64) {
    let mut r = Rig::<F>::new(regime, ram);
    let data = ram + (32 << 20);
    let ro = S2Attrs::RAM_RO;
    // Map 4 MiB as blocks; both CPUs cache the translations.
    r.update(
        ipa,
        1024,
        Op::Insert {
            pa: Paddr(data),
            attrs: S2Attrs::RAM,
        },
        MapFlags::BLOCKS,
    );
    for off in [0, 0x1000, MIB2 + 0x5000] {
        r.expect(ipa + off, AccessKind::Write, Ok(data + off));
    }
    r.clean();
    // Make one page read-only: the block around it is split (with
    // break-before-make) and the guest's cached translations invalidated.
    r.update(ipa + 0x1000, 1, Op::Modify { attrs: ro }, MapFlags::BLOCKS);
    r.expect(ipa + 0x1000, AccessKind::Read, Ok(data + 0x1000));
    r.expect(ipa + 0x1000, AccessKind::Write, Err(AbortKind::Permission));
    r.expect(ipa, AccessKind::Write, Ok(data));
    r.clean();
    // Remove the second 2 MiB: the guest faults there, on every CPU.
    r.update(ipa + MIB2, 512, Op::Remove, MapFlags::BLOCKS);
    r.expect(
        ipa + MIB2 + 0x5000,
        AccessKind::Read,
        Err(AbortKind::Translation),
    );
    r.clean();
    // Map it again elsewhere, write-only and execute-never.
    let wo = S2Attrs::new(S2MemType::NormalWb, S2Access::Wo, false).unwrap();
    r.update(
        ipa + MIB2,
        512,
        Op::Insert {
            pa: Paddr(data + 2 * MIB2),
            attrs: wo,
        },
        MapFlags::BLOCKS,
    );
    r.expect(ipa + MIB2 + 8, AccessKind::Write, Ok(data + 2 * MIB2 + 8));
    r.expect(ipa + MIB2 + 8, AccessKind::Read, Err(AbortKind::Permission));
    r.expect(ipa + MIB2 + 8, AccessKind::Exec, Err(AbortKind::Permission));
    r.clean();
    let c = r.m.counters();
    assert!(c.tlbi_ipa > 0 && c.tlbi_guest_s1 > 0, "{c:?}");
}

#[test]
fn engine_stage2_on_the_model_arm64_40_bit_ipa() {
    // An IPA in the second root page.
    life_of_a_guest::<Arm64Stage2<40>>(
        Regime::Arm64El2 { pa_bits: 48 },
        0x40_0000_0000,
        (1 << 39) + 0x4000_0000,
    );
}

#[test]
fn engine_stage2_on_the_model_arm64_44_bit_ipa() {
    life_of_a_guest::<Arm64Stage2<44>>(
        Regime::Arm64El2 { pa_bits: 48 },
        0x40_0000_0000,
        0xf00_0000_0000,
    );
}

#[test]
fn engine_stage2_on_the_model_arm32() {
    // arm32 guests see 32-bit VAs: with their stage 1 off the IPA is below
    // 4 GiB.
    life_of_a_guest::<Arm32Stage2>(Regime::Arm32Hyp, 0x10_8000_0000, 0x8000_0000);
}
