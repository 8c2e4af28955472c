//! The logic of the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer), kept
//! here so that `tests/fuzz_replay.rs` replays every checked-in corpus on
//! stable Rust in `cargo test`.
//!
//! Every function takes arbitrary bytes and **panics on a finding** (that is
//! what libFuzzer reports); a rejection of bad input is not a finding.
//!
//! - [`dtb_boot`]: arbitrary bytes as the DTB of a whole boot on the machine
//!   model. The boot either reaches Active and verifies, or stops with a
//!   named error at a step that depends on the DTB; the model never sees a
//!   stale TLB entry, a break-before-make violation or a TLB conflict, and
//!   no PMAP slot is left held.
//! - [`dtb_structured`]: structure-aware: bytes decoded into a
//!   [`VirtBoard`] (RAM banks, reserved memory, memreserve entries, typed and
//!   untyped modules, command lines, cell sizes), written as a DTB, then
//!   optionally damaged at a few byte positions, then booted as above.
//! - [`dtb_parse`]: arbitrary bytes straight into [`BootInfo::parse`] with a
//!   reader over a small fake memory; on success the result is consistent
//!   (banks inside the PA size, modules inside the PA size, free ranges
//!   disjoint, sorted, page aligned and outside the image/DTB/modules/reserved).
//! - [`engine_ops`]: bytes decoded into a sequence of update-engine
//!   operations on both formats, applied to [`hvmm::PageTable`] over the
//!   machine model (the live tables of the model's MMU, reached through a
//!   direct-map window built by physical writes), with after every
//!   operation: a reference model (runs in a `BTreeMap`) compared with the
//!   table bytes (read independently of hvmm's descriptor code), with fresh
//!   walks on CPU 0, the TLB of CPU 1 and the engine's `lookup` on sampled
//!   pages; no stale TLB entry, no BBM violation; on error the tables
//!   unchanged, nothing leaked, and the error one the rules give; at the
//!   end every table frame accounted for and given back once everything is
//!   removed.
//!
//! Inputs are bounded (at most [`MAX_OPS`] operations, a few thousand pages
//! of leaves each) so that each runs in milliseconds.

use crate::model::{self, ArchKind, Scenario};
use crate::report::BootStep;
use hvmm::access::{AccessError, AccessPath, TableAccess};
use hvmm::{
    AccessKind, Arch, Arm32, Arm64, Attrs, Env, Error, FaultKind, MapFlags, MemType, Mfn, Op,
    Paddr, PageTable, Perm, Stage1Format, UpdateReport, Vaddr,
};
use hvmm_bootinfo::builder::VirtBoard;
use hvmm_bootinfo::{BootInfo, ModuleReader, ParseParams, XSM_MAGIC};
use hvmm_model::{desc, FrameSnapshot, Machine, ModelError, Regime};
use hvmm_xen::boot_alloc::FrameRanges;
use std::collections::{BTreeMap, BTreeSet};
use std::string::String;
use std::vec::Vec;

const PAGE: u64 = 4096;
const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;

// ===========================================================================
// Device tree through the whole boot
// ===========================================================================

/// Boots the default scenario of the architecture chosen by `data[0]` (bit
/// 0: arm64/arm32; bit 1: 1 CPU instead of 4) with `data[1..]` as the DTB.
pub fn dtb_boot(data: &[u8]) {
    let Some((&sel, dtb)) = data.split_first() else {
        return;
    };
    boot_with_dtb(sel, dtb.to_vec());
}

fn boot_with_dtb(sel: u8, dtb: Vec<u8>) {
    let arch = if sel & 1 == 0 {
        ArchKind::Arm64
    } else {
        ArchKind::Arm32
    };
    let mut s = Scenario::default_for(arch);
    if sel & 2 != 0 {
        s.cpus = 1;
    }
    s.dtb_override = Some(dtb);
    check_boot(&s);
}

/// Runs `s` and panics on anything but a verified boot or a named rejection.
pub fn check_boot(s: &Scenario) {
    let out = match model::run(s) {
        // Set-up refused (e.g. a DTB too large to place): named.
        Err(e) => {
            if std::env::var_os("HVMM_FUZZ_VERBOSE").is_some() {
                std::eprintln!("scenario: {e}");
            }
            assert!(!e.0.is_empty(), "scenario error without a message");
            return;
        }
        Ok(o) => o,
    };
    if std::env::var_os("HVMM_FUZZ_VERBOSE").is_some_and(|v| v == "log") {
        std::eprintln!("{}", out.log);
    }
    if std::env::var_os("HVMM_FUZZ_VERBOSE").is_some() {
        match &out.result {
            Ok(sum) => std::eprintln!("boot: reached {:?}", sum.state),
            Err(f) => std::eprintln!("boot: {}", f.error),
        }
    }
    assert!(
        out.stale.is_empty(),
        "stale TLB entries after the boot: {:x?}\n{}",
        out.stale,
        out.log
    );
    assert!(
        out.bbm.is_empty(),
        "break-before-make violations: {:x?}\n{}",
        out.bbm,
        out.log
    );
    let conflicts = out.machine.tlb_conflicts();
    assert!(
        conflicts.is_empty(),
        "TLB conflicts: {conflicts:x?}\n{}",
        out.log
    );
    match &out.result {
        Ok(sum) => {
            assert!(
                out.ok(),
                "boot returned Ok but is not verified\n{}",
                out.log
            );
            assert_eq!(sum.pmap_in_use, 0, "PMAP slot left held\n{}", out.log);
        }
        Err(f) => {
            let e = &f.error;
            assert!(
                !e.message.as_str().is_empty(),
                "failure without a message at {:?}\n{}",
                e.step,
                out.log
            );
            assert_eq!(
                f.summary.pmap_in_use, 0,
                "PMAP slot left held after a failure\n{}",
                out.log
            );
            match e.step {
                // The DTB is read from here on: any named refusal is fine.
                BootStep::EarlyFdtMap | BootStep::BootFdtInfo => {}
                // Later steps fail when the DTB describes a machine that is
                // not there (RAM that does not exist, everything reserved):
                // still a named error, and a fault only as an external abort
                // (an access to memory the DTB invented).
                BootStep::SetupMm
                | BootStep::Frametable
                | BootStep::EndBootAllocator
                | BootStep::Vmap
                | BootStep::SmpBringUp
                | BootStep::FreeInitMem
                // A DTB's modules may be no kernel, or one that does not fit.
                | BootStep::Dom0 => {}
                // Before the DTB is read, or the final proof: never.
                BootStep::ImageDiscovery
                | BootStep::SetupPagetables
                | BootStep::Verify
                | BootStep::Audit => {
                    panic!("a DTB made the boot fail at {:?}: {e}\n{}", e.step, out.log)
                }
            }
            if let Some(fault) = e.fault {
                assert_eq!(
                    fault.kind,
                    FaultKind::External,
                    "the boot took a {:?} fault at {:?} ({e})\n{}",
                    fault.kind,
                    e.step,
                    out.log
                );
            }
        }
    }
}

// ===========================================================================
// Structure-aware DTBs
// ===========================================================================

/// Reads bytes, giving zeros once the input is used up.
struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Bytes<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bytes { data, at: 0 }
    }
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn left(&self) -> usize {
        self.data.len().saturating_sub(self.at)
    }
}

/// An address near the interesting places of the default scenario's
/// machine (1 GiB of RAM at 1 GiB), or anywhere.
fn pick_addr(b: &mut Bytes<'_>) -> u64 {
    let mode = b.u8();
    let v = u64::from(b.u32());
    match mode % 8 {
        0 => 0x4000_0000 + (v & 0x3fff_f000),
        1 => 0x4000_0000 + (v & 0x3fff_ffff),
        2 => 0x7c00_0000 + (v & 0x03ff_f000), // near the GRUB placement
        3 => v << 12,
        4 => (v << 32) | u64::from(b.u32()),
        5 => 0,
        6 => 0x8000_0000 - (v & 0xffff) * PAGE,
        _ => u64::MAX - (v & 0xffff),
    }
}

fn pick_size(b: &mut Bytes<'_>) -> u64 {
    let mode = b.u8();
    let v = u64::from(b.u32());
    match mode % 6 {
        0 => (v & 0xfff) * PAGE,
        1 => v & 0xf_ffff,
        2 => 0x4000_0000,
        3 => 0,
        4 => (v & 0x3ff) << 20,
        _ => u64::MAX - (v & 0xff),
    }
}

const COMPATIBLES: [&str; 9] = [
    "multiboot,module",
    "multiboot,kernel",
    "multiboot,ramdisk",
    "xen,linux-zimage",
    "xen,linux-initrd",
    "xen,xsm-policy",
    "xen,multiboot-module",
    "multiboot,unknown",
    "",
];

/// Decodes `data` into a board, builds its DTB, damages up to 8 bytes of it
/// as the tail of the input says, and boots it.
pub fn dtb_structured(data: &[u8]) {
    let mut b = Bytes::new(data);
    let sel = b.u8();
    let flags = b.u8();
    let mut board = VirtBoard::new();
    if sel & 1 != 0 {
        board = board.arm32();
    }
    // RAM: mostly the machine's real RAM, sometimes something else.
    let nbanks = b.u8() % 4;
    if flags & 1 == 0 {
        board = board.ram(0x4000_0000, 0x4000_0000);
    }
    for _ in 0..nbanks {
        if b.u8() & 1 == 0 {
            board = board.ram(pick_addr(&mut b), pick_size(&mut b));
        } else {
            let banks = [
                (pick_addr(&mut b), pick_size(&mut b)),
                (pick_addr(&mut b), pick_size(&mut b)),
            ];
            board = board.memory_node(&banks);
        }
    }
    for _ in 0..b.u8() % 4 {
        board = board.reserved_memory(pick_addr(&mut b), pick_size(&mut b));
    }
    for _ in 0..b.u8() % 3 {
        board = board.memreserve(pick_addr(&mut b), pick_size(&mut b));
    }
    // Modules: at the default GRUB placement's addresses (so their content
    // is the synthesised kernel / initrd / XSM policy), or anywhere.
    let grub = [0x7bff_0000u64, 0x7bfd_0000, 0x7bfc_e000];
    for _ in 0..b.u8() % 5 {
        let c = b.u8();
        let (addr, size) = if c & 0x80 == 0 {
            (grub[usize::from(c) % 3], u64::from(b.u16()) * 4)
        } else {
            (pick_addr(&mut b), pick_size(&mut b))
        };
        let first = COMPATIBLES[usize::from(c & 7)];
        let compat: &[&str] = if c & 0x40 != 0 {
            &[first, "multiboot,module"]
        } else {
            &[first]
        };
        let args = (c & 0x20 != 0).then_some("console=hvc0 root=/dev/ram");
        board = board.module_with(addr, size, compat, args);
    }
    if flags & 2 != 0 {
        board = board.bootargs("dom0_mem=512M");
    }
    if flags & 4 != 0 {
        board = board.xen_bootargs("console=dtuart sync_console");
    }
    if flags & 8 != 0 {
        board = board.root_cells(u32::from(b.u8() % 4), u32::from(b.u8() % 4));
    }
    if flags & 16 != 0 {
        let c = b.u8();
        let cells = (c & 1 != 0).then_some((u32::from(c >> 1) % 4, u32::from(c >> 3) % 4));
        board = board.chosen_cells(cells);
    }
    if flags & 32 != 0 {
        let n = usize::from(b.u8() % 16);
        let value: Vec<u8> = (0..n).map(|_| b.u8()).collect();
        let name = [
            "bootargs",
            "xen,xen-bootargs",
            "#address-cells",
            "linux,initrd-start",
        ][usize::from(b.u8() % 4)];
        board = board.chosen_raw_property(name, &value);
    }
    board = board.cpus(u32::from(b.u8() % 9));
    let Ok(mut dtb) = board.try_build() else {
        return;
    };
    // Damage: (position, xor) pairs from the rest of the input.
    while b.left() >= 3 && !dtb.is_empty() {
        let pos = usize::from(b.u16()) % dtb.len();
        dtb[pos] ^= b.u8();
    }
    boot_with_dtb(sel, dtb);
}

// ===========================================================================
// The parser alone
// ===========================================================================

/// A reader over a fake memory: `[0x4000_0000, 0x8000_0000)` reads as a
/// pattern (with the XSM magic at every 1 MiB), anything else fails.
struct FakeMemory {
    reads: usize,
}

impl ModuleReader for FakeMemory {
    type Error = ();
    fn read(&mut self, pa: Paddr, buf: &mut [u8]) -> Result<(), ()> {
        self.reads += 1;
        let end = pa.0.checked_add(buf.len() as u64).ok_or(())?;
        if pa.0 < 0x4000_0000 || end > 0x8000_0000 {
            return Err(());
        }
        for (i, byte) in buf.iter_mut().enumerate() {
            let a = pa.0 + i as u64;
            *byte = if a % (1 << 20) < 4 {
                XSM_MAGIC.to_le_bytes()[(a % 4) as usize]
            } else {
                a as u8
            };
        }
        Ok(())
    }
}

/// Parses `data[1..]` as a DTB (`data[0]` picks the PA size and where the
/// image and the DTB are said to be) and checks what a successful parse
/// promises.
pub fn dtb_parse(data: &[u8]) {
    let Some((&sel, dtb)) = data.split_first() else {
        return;
    };
    let pa_bits = [40, 48, 32, 52][usize::from(sel & 3)];
    let (image, dtb_at) = if sel & 4 == 0 {
        (
            (Paddr(0x4020_0000), 2 << 20),
            (Paddr(0x4800_0000), 0x1_0000),
        )
    } else {
        (
            (Paddr(0x7c00_0000), 2 << 20),
            (Paddr(0x7bf0_0000), 0x1_0000),
        )
    };
    let pp = ParseParams {
        pa_bits,
        image,
        dtb: dtb_at,
    };
    let mut mem = FakeMemory { reads: 0 };
    let Ok(info) = BootInfo::parse(dtb, &pp, &mut mem) else {
        // Every refusal is a `BootInfoError` with a message.
        let e = BootInfo::parse(dtb, &pp, &mut FakeMemory { reads: 0 }).unwrap_err();
        assert!(!format!("{e}").is_empty());
        return;
    };
    let limit = 1u128 << pa_bits;
    for b in info.ram_banks().iter() {
        assert!(b.size() > 0, "empty bank {b:?}");
        assert!(
            u128::from(b.end().0) <= limit,
            "bank {b:?} beyond {pa_bits} bits"
        );
    }
    for m in info.modules().iter() {
        assert!(m.range.size() > 0, "empty module {m:?}");
        assert!(
            u128::from(m.range.end().0) <= limit,
            "module {m:?} beyond {pa_bits} bits"
        );
    }
    // Only the 2nd and later untyped modules are read, 4 bytes each.
    assert!(mem.reads <= info.modules().len());
    if let Some(args) = info.hypervisor_cmdline() {
        let _ = args.len();
    }
    if let Ok(free) = info.free_ranges(&[]) {
        let mut last_end = 0u64;
        let taken: Vec<(u64, u64)> = info
            .modules()
            .iter()
            .map(|m| (m.range.base().0, m.range.end().0))
            .chain(
                info.reserved()
                    .iter()
                    .map(|r| (r.range.base().0, r.range.end().0)),
            )
            .chain([
                (image.0 .0, image.0 .0 + image.1),
                (dtb_at.0 .0, dtb_at.0 .0 + dtb_at.1),
            ])
            .collect();
        for r in free.iter() {
            let (s, e) = (r.base().0, r.end().0);
            assert!(s % PAGE == 0 && e % PAGE == 0 && s < e, "free range {r:?}");
            assert!(s >= last_end, "free ranges unsorted or overlapping");
            last_end = e;
            assert!(
                info.ram_banks()
                    .iter()
                    .any(|b| s >= b.base().0 && e <= b.end().0),
                "free range {r:?} outside RAM"
            );
            for &(ts, te) in &taken {
                assert!(
                    e <= ts || s >= te,
                    "free range {r:?} overlaps {ts:#x}..{te:#x}"
                );
            }
        }
    }
}

// ===========================================================================
// The update engine on the model
// ===========================================================================

/// Most operations one input runs.
pub const MAX_OPS: usize = 48;
/// Bytes per operation in an [`engine_ops`] input.
pub const OP_BYTES: usize = 12;
const RAM_SIZE: u64 = 4 << 20;
const CPUS: usize = 2;
/// Leaves an operation may write as 4 KiB pages; bigger inserts use blocks.
const MAX_PAGE_LEAVES: u64 = 2048;

/// A format with where the rig puts things for it (as in
/// `crates/hvmm-model/tests/engine_support`): RAM of 4 MiB mapped by a
/// window of two 2 MiB blocks; hand-built tables at the start of the upper
/// 2 MiB, the rest of it the frame pool.
trait FuzzFormat: Stage1Format {
    const REGIME: Regime;
    const RAM_BASE: u64;
    const TABLES: u64 = Self::RAM_BASE + MIB2;
    const WINDOW: u64;
    /// The VAs given to the engine: `[start, end)`, disjoint from the window.
    const ARENA: (u64, u64);
    const OA: u64;
    const HAND_TABLES: u64;
    fn build_window(m: &mut Machine);
}

fn set(m: &mut Machine, table: u64, idx: u64, d: u64) {
    m.phys_write_u64(Paddr(table + idx * 8), d)
        .expect("hand table in RAM");
}

const fn shift(level: u8) -> u32 {
    12 + 9 * (3 - level as u32)
}
const fn size(level: u8) -> u64 {
    1 << shift(level)
}
const fn idx(va: u64, level: u8) -> u64 {
    (va >> shift(level)) & 511
}

impl FuzzFormat for Arm64 {
    const REGIME: Regime = Regime::Arm64El2 { pa_bits: 48 };
    const RAM_BASE: u64 = 0x40_0000_0000;
    const WINDOW: u64 = 0x8000_c000_0000;
    // L0[255] (tables the engine makes) and L1[0..3] of the hand L1 (shared).
    const ARENA: (u64, u64) = (0x7fff_0000_0000, 0x8000_c000_0000);
    const OA: u64 = 0x0000_ffff_ffff_f000;
    const HAND_TABLES: u64 = 3;
    fn build_window(m: &mut Machine) {
        let (l0, l1, l2) = (Self::TABLES, Self::TABLES + PAGE, Self::TABLES + 2 * PAGE);
        set(m, l0, idx(Self::WINDOW, 0), desc::table(l1));
        set(m, l1, idx(Self::WINDOW, 1), desc::table(l2));
        for i in 0..RAM_SIZE / MIB2 {
            let d = desc::block(Self::RAM_BASE + i * MIB2) | desc::XN;
            set(m, l2, idx(Self::WINDOW, 2) + i, d);
        }
    }
}

impl FuzzFormat for Arm32 {
    const REGIME: Regime = Regime::Arm32Hyp;
    const RAM_BASE: u64 = 0x10_8000_0000;
    const WINDOW: u64 = 0xc000_0000;
    const ARENA: (u64, u64) = (0, 0xc000_0000);
    const OA: u64 = 0x0000_00ff_ffff_f000;
    const HAND_TABLES: u64 = 2;
    fn build_window(m: &mut Machine) {
        let (l1, l2) = (Self::TABLES, Self::TABLES + PAGE);
        set(m, l1, idx(Self::WINDOW, 1), desc::table(l2));
        for i in 0..RAM_SIZE / MIB2 {
            let d = desc::block(Self::RAM_BASE + i * MIB2) | desc::XN;
            set(m, l2, idx(Self::WINDOW, 2) + i, d);
        }
    }
}

/// Reaches a RAM frame at `window + (pa - ram_base)`; counts mappings held.
struct Window {
    ram: (u64, u64),
    window: u64,
    held: i64,
}

impl AccessPath for Window {
    fn name(&self) -> &'static str {
        "fuzz-directmap"
    }
}

impl TableAccess<Machine> for Window {
    fn map_table(&mut self, _arch: &mut Machine, mfn: Mfn) -> Result<Vaddr, AccessError> {
        let pa = mfn.paddr().0;
        if pa < self.ram.0 || pa >= self.ram.1 {
            return Err(AccessError::Unreachable {
                provider: "fuzz-directmap",
            });
        }
        self.held += 1;
        Ok(Vaddr(self.window + (pa - self.ram.0)))
    }
    fn unmap_table(&mut self, _arch: &mut Machine, _mfn: Mfn, _va: Vaddr) {
        self.held -= 1;
    }
}

struct Rig<F: FuzzFormat> {
    m: Machine,
    pt: PageTable<F>,
    access: Window,
    alloc: FrameRanges,
    pool: (u64, u64),
    initial_free: u64,
}

#[derive(Copy, Clone, Debug)]
struct PhysLeaf {
    va: u64,
    level: u8,
    desc: u64,
    pa: u64,
}

/// `[va, end)` mapped linearly to `pa..` with `attrs`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Run {
    va: u64,
    end: u64,
    pa: u64,
    attrs: Attrs,
}

fn merge(mut v: Vec<Run>) -> Vec<Run> {
    v.sort_by_key(|r| r.va);
    let mut out: Vec<Run> = Vec::new();
    for r in v {
        if let Some(last) = out.last_mut() {
            assert!(last.end <= r.va, "overlapping runs {last:x?} {r:x?}");
            if last.end == r.va && last.pa + (last.end - last.va) == r.pa && last.attrs == r.attrs {
                last.end = r.end;
                continue;
            }
        }
        out.push(r);
    }
    out
}

/// Decodes a leaf's attributes from Arm ARM bit positions and checks the
/// bits every hvmm leaf must have.
fn leaf_attrs(l: &PhysLeaf) -> Attrs {
    let d = l.desc;
    assert!(d & desc::AF != 0, "leaf without AF: {d:#x}");
    assert!(d & desc::AP1 != 0, "leaf without AP[1]: {d:#x}");
    let perm = match (d & desc::AP_RO != 0, d & desc::XN != 0) {
        (true, true) => Perm::Ro,
        (true, false) => Perm::Rx,
        (false, true) => Perm::Rw,
        (false, false) => panic!("writable and executable leaf {d:#x} at {:#x}", l.va),
    };
    let mem = MemType::from_index(((d >> 2) & 7) as u8).expect("unknown AttrIndx");
    Attrs::new(mem, perm).expect("executable device leaf")
}

impl<F: FuzzFormat> Rig<F> {
    fn new(pool_frames: u64) -> Self {
        let mut m = Machine::new(F::REGIME, CPUS);
        m.add_ram(Paddr(F::RAM_BASE), RAM_SIZE).expect("RAM");
        F::build_window(&mut m);
        for cpu in 0..CPUS {
            m.set_root(cpu, Paddr(F::TABLES)).expect("cpu");
            m.enable_mmu(cpu, true).expect("cpu");
        }
        let first = F::TABLES / PAGE + F::HAND_TABLES;
        let end = (first + pool_frames).min((F::RAM_BASE + RAM_SIZE) / PAGE);
        let mut alloc = FrameRanges::new();
        alloc.pin(Paddr(F::TABLES), Paddr(F::TABLES + F::HAND_TABLES * PAGE));
        if end > first {
            alloc
                .add(Paddr(first * PAGE), Paddr(end * PAGE))
                .expect("pool");
        }
        let initial_free = alloc.free_pages();
        Rig {
            m,
            // SAFETY: the rig's one handle on its hand-built root.
            pt: unsafe { PageTable::from_root(Mfn(F::TABLES / PAGE)) },
            access: Window {
                ram: (F::RAM_BASE, F::RAM_BASE + RAM_SIZE),
                window: F::WINDOW,
                held: 0,
            },
            alloc,
            pool: (first, end),
            initial_free,
        }
    }

    fn update(
        &mut self,
        va: u64,
        pages: u64,
        op: Op,
        flags: MapFlags,
    ) -> Result<UpdateReport, Error> {
        let mut env = Env::new(&mut self.m, &mut self.access, &mut self.alloc);
        let r = self.pt.update(&mut env, Vaddr(va), pages, op, flags);
        assert_eq!(self.access.held, 0, "a table mapping was not given back");
        r
    }

    fn lookup(&mut self, va: u64) -> Option<hvmm::Leaf> {
        let r = self
            .pt
            .lookup(&mut self.m, &mut self.access, Vaddr(va))
            .expect("lookup");
        assert_eq!(self.access.held, 0);
        r
    }

    fn engine_runs(&mut self) -> Vec<Run> {
        let (a0, a1) = F::ARENA;
        let mut out = Vec::new();
        self.pt
            .for_each_leaf(
                &mut self.m,
                &mut self.access,
                Vaddr(a0),
                (a1 - a0) / PAGE,
                &mut |v, pages, leaf| {
                    out.push(Run {
                        va: v.0,
                        end: v.0 + pages * PAGE,
                        pa: leaf.pa.0,
                        attrs: leaf.attrs.expect("a leaf hvmm cannot express"),
                    })
                },
            )
            .expect("for_each_leaf");
        assert_eq!(self.access.held, 0);
        merge(out)
    }

    fn free(&self) -> u64 {
        self.alloc.free_pages()
    }

    fn allocated(&self) -> Vec<Mfn> {
        let free: Vec<(u64, u64)> = self
            .alloc
            .ranges()
            .map(|(s, e)| (s.0 / PAGE, e.0 / PAGE))
            .collect();
        (self.pool.0..self.pool.1)
            .filter(|f| !free.iter().any(|&(s, e)| *f >= s && *f < e))
            .map(Mfn)
            .collect()
    }

    fn snapshot(&self) -> FrameSnapshot {
        let mut frames: Vec<Mfn> = (0..F::HAND_TABLES)
            .map(|i| Mfn(F::TABLES / PAGE + i))
            .collect();
        frames.extend(self.allocated());
        self.m.snapshot_frames(&frames).expect("snapshot")
    }

    fn read_table(&self, table: u64) -> Vec<u64> {
        let mut b = vec![0u8; PAGE as usize];
        self.m
            .phys_read(Paddr(table), &mut b)
            .expect("table in RAM");
        b.chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect()
    }

    fn entries(level: u8) -> usize {
        if level == F::ROOT_LEVEL && F::ROOT_LEVEL == 1 {
            4
        } else {
            512
        }
    }

    /// The descriptor at `level` on the walk of `va`, if every level above
    /// holds a table descriptor.
    fn entry_at(&self, va: u64, level: u8) -> Option<u64> {
        let mut table = F::TABLES;
        let mut l = F::ROOT_LEVEL;
        loop {
            let d = self
                .m
                .phys_read_u64(Paddr(table + idx(va, l) * 8))
                .expect("table in RAM");
            if l == level {
                return Some(d);
            }
            if l == 3 || d & 3 != 3 {
                return None;
            }
            table = d & F::OA;
            l += 1;
        }
    }

    /// Every table reachable from the root except the root: (frame, level,
    /// first VA); a table linked twice is a finding.
    fn tables(&self) -> Vec<(u64, u8, u64)> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![(F::TABLES, F::ROOT_LEVEL, 0u64)];
        while let Some((table, level, base)) = stack.pop() {
            if level == 3 {
                continue;
            }
            for (i, &d) in self
                .read_table(table)
                .iter()
                .enumerate()
                .take(Self::entries(level))
            {
                if d & 3 == 3 {
                    let next = d & F::OA;
                    let va = base + i as u64 * size(level);
                    assert!(seen.insert(next), "table {next:#x} linked twice");
                    out.push((next / PAGE, level + 1, va));
                    stack.push((next, level + 1, va));
                }
            }
        }
        out
    }

    fn leaves(&self) -> Vec<PhysLeaf> {
        let mut out = Vec::new();
        let mut stack = vec![(F::TABLES, F::ROOT_LEVEL, 0u64)];
        while let Some((table, level, base)) = stack.pop() {
            for (i, &d) in self
                .read_table(table)
                .iter()
                .enumerate()
                .take(Self::entries(level))
            {
                let va = base + i as u64 * size(level);
                if va >= F::ARENA.1 || va + size(level) <= F::ARENA.0 {
                    continue;
                }
                let leaf = if level == 3 { d & 3 == 3 } else { d & 3 == 1 };
                if level < 3 && d & 3 == 3 {
                    stack.push((d & F::OA, level + 1, va));
                } else if leaf {
                    assert!(level > 0, "a level-0 block at {va:#x}");
                    out.push(PhysLeaf {
                        va,
                        level,
                        desc: d,
                        pa: d & F::OA & !(size(level) - 1),
                    });
                } else {
                    assert_eq!(d & 1, 0, "reserved descriptor {d:#x} at L{level} {va:#x}");
                }
            }
        }
        out
    }

    fn physical_runs(&self) -> Vec<Run> {
        merge(
            self.leaves()
                .iter()
                .map(|l| Run {
                    va: l.va,
                    end: l.va + size(l.level),
                    pa: l.pa,
                    attrs: leaf_attrs(l),
                })
                .collect(),
        )
    }

    fn flush_tlbs(&mut self) {
        self.m.tlb_flush_all();
        self.m.tlb_sync();
    }

    fn prefetch(&mut self, samples: &[u64]) {
        for cpu in 0..CPUS {
            for &va in samples {
                let _ = self.m.touch(cpu, Vaddr(va));
            }
        }
    }
}

/// What should be mapped: disjoint runs keyed by their first VA.
#[derive(Clone, Debug, Default)]
struct RefMap {
    runs: BTreeMap<u64, (u64, u64, Attrs)>,
}

impl RefMap {
    fn get(&self, va: u64) -> Option<(u64, Attrs)> {
        let (&s, &(e, pa, a)) = self.runs.range(..=va).next_back()?;
        (va < e).then_some((pa + (va - s), a))
    }
    fn split(&mut self, at: u64) {
        if let Some((&s, &(e, pa, a))) = self.runs.range(..at).next_back() {
            if e > at {
                self.runs.insert(s, (at, pa, a));
                self.runs.insert(at, (e, pa + (at - s), a));
            }
        }
    }
    fn remove(&mut self, s: u64, e: u64) {
        self.split(s);
        self.split(e);
        let keys: Vec<u64> = self.runs.range(s..e).map(|(&k, _)| k).collect();
        for k in keys {
            self.runs.remove(&k);
        }
    }
    fn insert(&mut self, s: u64, e: u64, pa: u64, attrs: Attrs) {
        self.remove(s, e);
        self.runs.insert(s, (e, pa, attrs));
    }
    fn set_perm(&mut self, s: u64, e: u64, perm: Perm) {
        self.split(s);
        self.split(e);
        for (_, (_, _, a)) in self.runs.range_mut(s..e) {
            *a = a.with_perm(perm).expect("same memory type");
        }
    }
    fn any_mapped(&self, s: u64, e: u64) -> bool {
        self.get(s).is_some() || self.runs.range(s..e).next().is_some()
    }
    fn all_mapped(&self, s: u64, e: u64) -> bool {
        let mut at = s;
        while at < e {
            match self.runs.range(..=at).next_back() {
                Some((_, &(end, _, _))) if end > at => at = end,
                _ => return false,
            }
        }
        true
    }
    fn runs(&self) -> Vec<Run> {
        merge(
            self.runs
                .iter()
                .map(|(&va, &(end, pa, attrs))| Run { va, end, pa, attrs })
                .collect(),
        )
    }
}

fn attrs_of(n: u8) -> Attrs {
    [Attrs::RO, Attrs::RX, Attrs::RW, Attrs::DEVICE, Attrs::WC][usize::from(n % 5)]
}

/// One concrete operation.
#[derive(Copy, Clone, Debug)]
struct Step {
    va: u64,
    pages: u64,
    op: Op,
    flags: MapFlags,
}

/// Decodes [`OP_BYTES`] bytes into an operation, against what was done so
/// far (so that a sequence can aim at earlier ranges).
fn decode<F: FuzzFormat>(b: &[u8], history: &[(u64, u64)], r: &RefMap) -> Step {
    let (a0, a1) = F::ARENA;
    let kind = b[0] % 10; // 0-3 insert, 4-5 modify, 6-8 remove, 9 populate
    let class = b[1];
    let s = u64::from(u16::from_le_bytes([b[2], b[3]]));
    let mut flags = MapFlags {
        blocks: class & 0x40 != 0,
        contiguous: class & 0x80 != 0,
        ..MapFlags::PAGES
    };
    let mut pages = match class % 8 {
        0..=2 => 1 + s % 32,
        3 => 1 + s % 1024,
        4 => 16 * (1 + s % 64),
        5 => 512 * (1 + s % 8) + if s & 0x100 != 0 { (s >> 9) % 16 } else { 0 },
        6 => 512 * (1 + s % 4),
        _ => 262_144 * (1 + s % 2) + 512 * ((s >> 8) % 4),
    };
    let is_insert = kind < 4;
    if kind == 9 {
        pages = pages.min(MAX_PAGE_LEAVES);
    }
    if is_insert && pages > MAX_PAGE_LEAVES {
        flags.blocks = true;
    }
    pages = pages.min((a1 - a0) / PAGE);
    let len = pages * PAGE;
    let mode = b[4];
    let v = u64::from(u32::from_le_bytes([b[5], b[6], b[7], 0]));
    let mut va = if mode & 1 == 0 && !history.is_empty() {
        let (hva, hpages) = history[(v as usize) % history.len()];
        let off = ((v >> 8) % 64) as i64 - 32;
        match (mode >> 1) % 4 {
            0 => hva,
            1 => hva.wrapping_add_signed(off * PAGE as i64),
            2 => (hva + hpages * PAGE).wrapping_add_signed(off.min(0) * PAGE as i64),
            _ => hva.wrapping_add_signed(off * 16 * PAGE as i64),
        }
    } else {
        let align = [PAGE, 16 * PAGE, MIB2, 16 * MIB2, GIB][usize::from((mode >> 1) % 5)];
        // 24 bits of choice spread over the arena.
        let slots = (a1 - a0 - len) / align + 1;
        a0 + ((v * 0x9e37_79b9) % slots) * align
    };
    va = va.clamp(a0, a1 - len);
    if is_insert && pages > MAX_PAGE_LEAVES {
        va = (va & !(MIB2 - 1)).max(a0);
    }
    let attrs = attrs_of(b[11]);
    let p = u64::from(u16::from_le_bytes([b[9], b[10]]));
    let op = match kind {
        0..=3 => {
            let pa = match b[8] % 4 {
                // Same offset in a 1 GiB frame as the VA: blocks and runs fit.
                0 | 1 => ((p % 64) << 30) + (va & (GIB - 1)),
                2 => {
                    let align = [16 * PAGE, MIB2, GIB][usize::from((b[8] >> 2) % 3)];
                    ((p << 22) % (1 << 36)) & !(align - 1)
                }
                _ => (p << 12) | (u64::from(b[8] >> 2) << 28),
            };
            let pa = if pages > MAX_PAGE_LEAVES {
                pa & !(MIB2 - 1)
            } else {
                pa
            };
            // Now and then a PA beyond the format's reach.
            let pa = if b[8] == 0xff {
                pa | (1 << F::PA_BITS)
            } else {
                pa
            };
            Op::Insert {
                pa: Paddr(pa),
                attrs,
            }
        }
        4 | 5 => {
            let attrs = match r.get(va) {
                Some((_, cur)) if b[8] < 200 => {
                    let perm = [Perm::Ro, Perm::Rx, Perm::Rw][usize::from(b[11] % 3)];
                    cur.with_perm(perm)
                        .unwrap_or_else(|_| cur.with_perm(Perm::Ro).expect("RO always fits"))
                }
                _ => attrs,
            };
            Op::Modify { attrs }
        }
        6..=8 => Op::Remove,
        _ => Op::Populate,
    };
    Step {
        va,
        pages,
        op,
        flags,
    }
}

/// Pages worth checking for `[va, va + pages)`: all up to 64; else the first
/// and last 16, both sides of 2 MiB boundaries and a spread; plus the page
/// on either side of the range.
fn samples<F: FuzzFormat>(va: u64, pages: u64) -> Vec<u64> {
    let end = va + pages * PAGE;
    let mut v = BTreeSet::new();
    if pages <= 64 {
        v.extend((0..pages).map(|i| va + i * PAGE));
    } else {
        v.extend((0..16).map(|i| va + i * PAGE));
        v.extend((1..=16).map(|i| end - i * PAGE));
        let first = (va & !(MIB2 - 1)) + MIB2;
        let boundaries = end.saturating_sub(first).div_ceil(MIB2);
        let step = boundaries.div_ceil(16).max(1);
        let mut b = first;
        while b < end {
            v.insert(b);
            v.insert(b - PAGE);
            b += step * MIB2;
        }
        let stride = (pages / 16) | 1;
        v.extend((0..16).map(|i| va + ((i * stride + 7) % pages) * PAGE));
    }
    if va > F::ARENA.0 {
        v.insert(va - PAGE);
    }
    if end < F::ARENA.1 {
        v.insert(end);
    }
    v.into_iter().collect()
}

fn check_translations<F: FuzzFormat>(rig: &mut Rig<F>, r: &RefMap, samples: &[u64]) {
    for &va in samples {
        let want = r.get(va);
        let walk = rig.m.walk(0, Vaddr(va));
        let looked = rig.lookup(va);
        let touched = rig.m.touch(1, Vaddr(va));
        match want {
            Some((pa, attrs)) => {
                let t = walk.unwrap_or_else(|f| panic!("{va:#x}: walk faults ({f}), want {pa:#x}"));
                assert_eq!(t.pa, Paddr(pa), "{va:#x}: walk PA");
                assert_eq!(t.writable, attrs.perm().writable(), "{va:#x}: writable");
                assert_eq!(t.executable, attrs.perm().executable(), "{va:#x}: exec");
                assert_eq!(t.attr_idx, attrs.mem().index(), "{va:#x}: AttrIndx");
                let l = looked.unwrap_or_else(|| panic!("{va:#x}: lookup finds nothing"));
                assert_eq!(
                    (l.pa, l.level, l.attrs),
                    (Paddr(pa), t.level, Some(attrs)),
                    "{va:#x}: lookup disagrees with the walk"
                );
                assert_eq!(touched, Ok(Paddr(pa)), "{va:#x}: CPU 1 TLB");
                let w = rig.m.access(Vaddr(va), AccessKind::Write);
                assert_eq!(w.is_ok(), attrs.perm().writable(), "{va:#x}: write {w:?}");
            }
            None => {
                let f = walk.expect_err("should be unmapped");
                assert_eq!(f.kind, FaultKind::Translation, "{va:#x}: {f}");
                assert!(looked.is_none(), "{va:#x}: lookup finds {looked:x?}");
                assert!(
                    matches!(touched, Err(ModelError::Fault(f)) if f.kind == FaultKind::Translation),
                    "{va:#x}: CPU 1 translates it: {touched:?}"
                );
            }
        }
    }
}

fn check_tlbs<F: FuzzFormat>(rig: &Rig<F>, what: &dyn core::fmt::Debug) {
    let stale = rig.m.all_stale_tlb_entries();
    assert!(
        stale.is_empty(),
        "{what:x?}: stale TLB entries: {stale:#x?}"
    );
    let bbm = rig.m.bbm_violations();
    assert!(bbm.is_empty(), "{what:x?}: BBM violations: {bbm:#x?}");
    let c = rig.m.tlb_conflicts();
    assert!(c.is_empty(), "{what:x?}: TLB conflicts: {c:#x?}");
}

/// Every pool frame handed out is a table reachable from the root, and every
/// reachable table other than the hand-built ones is such a frame.
fn check_no_leak<F: FuzzFormat>(rig: &Rig<F>) {
    let hand: BTreeSet<u64> = (1..F::HAND_TABLES).map(|i| F::TABLES / PAGE + i).collect();
    let tables = rig.tables();
    let reachable: BTreeSet<u64> = tables
        .iter()
        .map(|t| t.0)
        .filter(|m| !hand.contains(m))
        .collect();
    let allocated: BTreeSet<u64> = rig.allocated().iter().map(|m| m.0).collect();
    assert_eq!(
        reachable, allocated,
        "reachable tables vs frames taken from the pool"
    );
    for &h in &hand {
        assert!(
            tables.iter().any(|t| t.0 == h),
            "hand table {h:#x} unlinked"
        );
    }
}

fn check_physical<F: FuzzFormat>(rig: &Rig<F>, r: &RefMap, what: &dyn core::fmt::Debug) {
    let phys = rig.physical_runs();
    let want = r.runs();
    assert!(
        phys == want,
        "{what:x?}: tables and reference differ\n tables:    {phys:x?}\n reference: {want:x?}"
    );
}

/// Whether `err` is one the rules give for `st`, given the (unchanged) tables.
fn justify<F: FuzzFormat>(rig: &Rig<F>, r: &RefMap, st: &Step, free_before: u64, err: &Error) {
    let end = st.va + st.pages * PAGE;
    let inside = |va: u64| va >= st.va && va < end;
    let d_at = |va: u64, level: u8| {
        rig.entry_at(va, level)
            .unwrap_or_else(|| panic!("{err}: no descriptor at L{level} for {va:#x}"))
    };
    let is_table = |d: u64, level: u8| level < 3 && d & 3 == 3;
    let is_leaf = |d: u64, level: u8| if level == 3 { d & 3 == 3 } else { d & 3 == 1 };
    match (*err, st.op) {
        (Error::AlreadyMapped { va, level }, Op::Insert { .. }) => {
            assert!(inside(va.0), "{err} outside {st:x?}");
            let d = d_at(va.0, level);
            if is_table(d, level) {
                assert!(
                    st.flags.blocks && level >= 1,
                    "{err}: table met without blocks"
                );
            } else {
                assert!(is_leaf(d, level), "{err}: {d:#x}");
                let slot = va.0 & !(size(level) - 1);
                assert!(
                    r.any_mapped(slot.max(st.va), (slot + size(level)).min(end)),
                    "{err}: reference has nothing there"
                );
            }
        }
        (Error::NotMapped { va }, Op::Modify { .. }) => {
            assert!(inside(va.0), "{err} outside {st:x?}");
            assert!(r.get(va.0).is_none(), "{err}: the reference maps it");
        }
        (Error::BlockInTheWay { va, level }, Op::Populate) => {
            assert!(inside(va.0) && level < 3, "{err} for {st:x?}");
            let d = d_at(va.0, level);
            assert!(is_leaf(d, level), "{err}: {d:#x}");
        }
        (Error::AttrIndexChange { va, from, to }, Op::Modify { attrs }) => {
            assert!(
                inside(va.0) && from != to && to == attrs.mem().index(),
                "{err}"
            );
            let (_, cur) = r.get(va.0).expect("mapped");
            assert_eq!(cur.mem().index(), from, "{err}");
        }
        // Insert and Populate create tables; Modify and Remove split blocks.
        (Error::OutOfMemory { needed, available }, _) => {
            assert_eq!(available as u64, free_before, "{err}");
            assert!(needed > available, "{err}");
        }
        (Error::PaOutOfRange { pa, .. }, Op::Insert { pa: want, .. }) => {
            assert_eq!(pa, want, "{err}");
            assert!(
                !F::pa_end_fits(pa.0.saturating_add(st.pages * PAGE)),
                "{err}: the range fits"
            );
        }
        _ => panic!("unexpected error {err:?} for {st:x?}"),
    }
}

fn run_ops<F: FuzzFormat>(pool_frames: u64, ops: &[u8]) {
    let mut rig = Rig::<F>::new(pool_frames);
    let mut r = RefMap::default();
    let mut history: Vec<(u64, u64)> = Vec::new();
    for chunk in ops.chunks_exact(OP_BYTES).take(MAX_OPS) {
        let st = decode::<F>(chunk, &history, &r);
        history.push((st.va, st.pages));
        let end = st.va + st.pages * PAGE;
        let samp = samples::<F>(st.va, st.pages);
        // Empty TLBs, then let every CPU cache what the update may change.
        rig.flush_tlbs();
        rig.prefetch(&samp);
        let snap = rig.snapshot();
        let free_before = rig.free();
        let c0 = rig.m.counters();
        let res = rig.update(st.va, st.pages, st.op, st.flags);
        if std::env::var_os("HVMM_FUZZ_VERBOSE").is_some() {
            std::eprintln!("{} {st:x?} -> {res:x?}", F::NAME);
        }
        match res {
            Ok(rep) => {
                assert_eq!(
                    free_before + rep.tables_freed - rep.tables_created,
                    rig.free(),
                    "{st:x?}: report vs pool"
                );
                let c1 = rig.m.counters();
                let tlbi = (c1.tlbi_va - c0.tlbi_va) + (c1.tlbi_all - c0.tlbi_all);
                assert_eq!(
                    tlbi, rep.tlb_invalidations,
                    "{st:x?}: report vs TLBIs issued"
                );
                match st.op {
                    Op::Insert { pa, attrs } => {
                        assert!(!r.any_mapped(st.va, end), "{st:x?}: replaced a mapping");
                        assert_eq!(tlbi, 0, "{st:x?}: a pure insert invalidated");
                        r.insert(st.va, end, pa.0, attrs);
                    }
                    Op::Modify { attrs } => {
                        assert!(r.all_mapped(st.va, end), "{st:x?}: modified a hole");
                        r.set_perm(st.va, end, attrs.perm());
                    }
                    Op::Remove => r.remove(st.va, end),
                    Op::Populate => assert_eq!(rep.leaves, 0, "{st:x?}: populate mapped"),
                }
            }
            Err(e) => {
                let changed = rig.m.changed_frames(&snap);
                assert!(
                    changed.is_empty(),
                    "{st:x?} failed ({e}) but changed {changed:x?}"
                );
                assert_eq!(rig.free(), free_before, "{st:x?} failed ({e}) and leaked");
                justify(&rig, &r, &st, free_before, &e);
            }
        }
        check_tlbs(&rig, &st);
        check_translations(&mut rig, &r, &samp);
        check_physical(&rig, &r, &st);
        check_no_leak(&rig);
    }
    assert_eq!(rig.engine_runs(), r.runs(), "for_each_leaf vs reference");
    remove_everything(&mut rig, &mut r);
}

/// Removes every mapping the rules allow (all but contiguous entries) and
/// every table left without one; then no table frame may be missing.
fn remove_everything<F: FuzzFormat>(rig: &mut Rig<F>, r: &mut RefMap) {
    for l in rig.leaves() {
        if l.level < 3 && l.desc & desc::CONTIGUOUS == 0 {
            rig.update(l.va, size(l.level) / PAGE, Op::Remove, MapFlags::BLOCKS)
                .unwrap_or_else(|e| panic!("removing block {l:x?}: {e}"));
            r.remove(l.va, l.va + size(l.level));
        }
    }
    let mut by_slot: BTreeMap<u64, Vec<PhysLeaf>> = BTreeMap::new();
    for l in rig.leaves().into_iter().filter(|l| l.level == 3) {
        by_slot.entry(l.va & !(MIB2 - 1)).or_default().push(l);
    }
    for (_, level, va) in rig.tables() {
        if level != 3 || va < F::ARENA.0 || va >= F::ARENA.1 {
            continue;
        }
        let leaves = by_slot.remove(&va).unwrap_or_default();
        if !leaves.iter().any(|l| l.desc & desc::CONTIGUOUS != 0) {
            rig.update(va, 512, Op::Remove, MapFlags::PAGES)
                .unwrap_or_else(|e| panic!("removing the 2 MiB at {va:#x}: {e}"));
            r.remove(va, va + MIB2);
        } else {
            for l in leaves.iter().filter(|l| l.desc & desc::CONTIGUOUS == 0) {
                rig.update(l.va, 1, Op::Remove, MapFlags::PAGES)
                    .unwrap_or_else(|e| panic!("removing page {:#x}: {e}", l.va));
                r.remove(l.va, l.va + PAGE);
            }
        }
        check_tlbs(rig, &"remove everything");
    }
    check_no_leak(rig);
    check_physical(rig, r, &"remove everything");
    let left = rig.leaves();
    assert!(
        left.iter().all(|l| l.desc & desc::CONTIGUOUS != 0),
        "left after removing everything: {left:x?}"
    );
    for (mfn, _, va) in rig.tables() {
        if mfn < rig.pool.0 {
            continue;
        }
        let entries = rig.read_table(mfn * PAGE);
        assert!(
            entries.iter().any(|d| d & 1 != 0),
            "empty table {mfn:#x} (VA {va:#x}) left behind"
        );
    }
    if left.is_empty() {
        assert_eq!(rig.free(), rig.initial_free, "table frames not given back");
    }
}

/// `data[0]`: bit 0 the format (arm64 / arm32), bits 1..: the pool (mostly
/// the whole RAM; sometimes 1..=31 frames, to run out). Then [`OP_BYTES`]
/// bytes per operation, at most [`MAX_OPS`].
pub fn engine_ops(data: &[u8]) {
    let Some((&sel, ops)) = data.split_first() else {
        return;
    };
    let pool = match sel >> 1 {
        p @ 1..=31 => u64::from(p),
        _ => u64::MAX / 2,
    };
    if sel & 1 == 0 {
        run_ops::<Arm64>(pool, ops);
    } else {
        run_ops::<Arm32>(pool, ops);
    }
}

/// One [`engine_ops`] operation as numbers: (kind, class, size, va mode,
/// va, pa mode, pa, attrs).
pub type RawOp = (u8, u8, u16, u8, u32, u8, u16, u8);

/// Builds an [`engine_ops`] input (for seed corpora and tests).
pub fn encode_engine_ops(sel: u8, ops: &[RawOp]) -> Vec<u8> {
    let mut v = vec![sel];
    for &(kind, class, size, va_mode, va, pa_mode, pa, attr) in ops {
        v.push(kind);
        v.push(class);
        v.extend_from_slice(&size.to_le_bytes());
        v.push(va_mode);
        v.extend_from_slice(&va.to_le_bytes()[..3]);
        v.push(pa_mode);
        v.extend_from_slice(&pa.to_le_bytes());
        v.push(attr);
    }
    v
}

/// The seed inputs for the corpora: (target, name, bytes). Used by
/// `fuzz_replay.rs` to check the checked-in seeds are still what it would
/// write, and by hand to regenerate them.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    // DTBs from the board builder.
    let boards: Vec<(&str, u8, VirtBoard)> = vec![
        ("arm64-plain", 0, VirtBoard::qemu_default().cpus(4)),
        ("arm32-plain", 1, VirtBoard::qemu_default().arm32().cpus(4)),
        (
            "arm64-grub-modules",
            0,
            VirtBoard::qemu_default()
                .cpus(4)
                .xen_bootargs("console=dtuart")
                .module(0x7bff_0000, 0x1_0000, "multiboot,module")
                .module(0x7bfd_0000, 0x2_0000, "multiboot,module")
                .module(0x7bfc_e000, 0x2000, "multiboot,module"),
        ),
        (
            "arm32-typed-reserved",
            3,
            VirtBoard::qemu_default()
                .arm32()
                .module_with(
                    0x4900_0000,
                    0x80_0000,
                    &["multiboot,kernel", "multiboot,module"],
                    Some("root=/dev/ram"),
                )
                .module(0x4a00_0000, 0x40_0000, "multiboot,ramdisk")
                .reserved_memory(0x5000_0000, 0x10_0000)
                .memreserve(0x5100_0000, 0x1000),
        ),
        (
            "arm64-two-banks",
            2,
            VirtBoard::new()
                .memory_node(&[(0x4000_0000, 0x2000_0000), (0x6000_0000, 0x2000_0000)])
                .reserved_memory(0x4400_0000, 0x20_0000),
        ),
        ("arm64-no-ram", 0, VirtBoard::new().cpus(2)),
    ];
    for (name, sel, board) in boards {
        let mut v = vec![sel];
        v.extend(board.build());
        out.push(("dtb_boot", format!("builder-{name}"), v.clone()));
        out.push(("dtb_parse", format!("builder-{name}"), v));
    }
    // Finding F1 (docs/BAD_INPUTS.md, fixed): an arm32 bank without a 2 MiB boundary.
    let mut v = vec![1u8];
    v.extend(
        VirtBoard::new()
            .arm32()
            .ram(0x4010_0000, 0x8_0000)
            .cpus(4)
            .build(),
    );
    out.push((
        "dtb_boot",
        String::from("finding1-arm32-xenheap-underflow"),
        v,
    ));
    // Structured inputs.
    let structured: [(&str, &[u8]); 5] = [
        ("plain", &[0, 0, 0, 0, 0, 0, 4]),
        (
            "arm32-grub-mods",
            &[
                1, 4, 0, 0, 0, 3, 0x00, 0x00, 0x40, 0x41, 0x00, 0x40, 0x02, 0x00, 0x20, 2,
            ],
        ),
        (
            "reserved",
            &[
                0, 0, 0, 2, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0,
            ],
        ),
        (
            "cells",
            &[2, 24, 1, 0, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 2, 1, 2],
        ),
        (
            "damaged",
            &[
                0, 0, 0, 0, 0, 1, 0x80, 0x05, 0, 0, 0, 0x01, 0, 0, 0, 1, 0x40, 0, 0xff,
            ],
        ),
    ];
    for (name, bytes) in structured {
        out.push(("dtb_structured", format!("seed-{name}"), bytes.to_vec()));
    }
    // Engine sequences: (kind, class, size, va mode, va, pa mode, pa, attrs).
    let seqs: Vec<(&str, u8, Vec<RawOp>)> = vec![
        // Insert pages, modify them, remove them.
        (
            "pages",
            0,
            vec![
                (0, 0, 15, 1, 77, 0, 3, 2),
                (4, 0, 15, 0, 0, 0, 0, 0),
                (6, 0, 15, 0, 0, 0, 0, 0),
            ],
        ),
        (
            "pages-arm32",
            1,
            vec![
                (0, 0, 15, 1, 77, 0, 3, 2),
                (4, 0, 15, 0, 0, 0, 0, 0),
                (6, 0, 15, 0, 0, 0, 0, 0),
            ],
        ),
        // 2 MiB blocks with the contiguous hint, then a modify and remove over them (refused).
        (
            "contig-blocks",
            0,
            vec![
                (0, 0xc5, 15, 7, 3, 0, 5, 2),
                (4, 0x45, 15, 0, 0, 0, 0, 0),
                (6, 0x45, 15, 0, 0, 0, 0, 0),
            ],
        ),
        // A 1 GiB block, a page insert inside it (block in the way), removal.
        (
            "gib-block",
            0,
            vec![
                (0, 0x47, 0, 9, 1, 0, 1, 0),
                (0, 0, 3, 0, 0x2000, 0, 0, 2),
                (6, 0x47, 0, 0, 0, 0, 0, 0),
            ],
        ),
        (
            "gib-block-arm32",
            1,
            vec![
                (0, 0x47, 0, 9, 1, 0, 1, 0),
                (0, 0, 3, 0, 0x2000, 0, 0, 2),
                (6, 0x47, 0, 0, 0, 0, 0, 0),
            ],
        ),
        // Out of frames: a tiny pool.
        (
            "oom",
            2 << 1,
            vec![
                (0, 4, 63, 5, 0x1234, 0, 7, 2),
                (9, 3, 1000, 3, 0x50000, 0, 0, 0),
                (0, 0, 3, 1, 9, 0, 0, 2),
            ],
        ),
        // Populate, then inserts into the populated range, device memory, modify attr index.
        (
            "populate",
            1,
            vec![
                (9, 3, 700, 5, 0x400, 0, 0, 0),
                (0, 0, 7, 0, 0x100, 0, 2, 3),
                (4, 0, 7, 0, 0, 200, 0, 2),
                (6, 3, 700, 0, 0, 0, 0, 0),
            ],
        ),
        // Overlapping inserts, partial removes, unaligned PAs, a PA out of range.
        (
            "overlaps",
            0,
            vec![
                (0, 3, 300, 3, 0x777, 3, 0x99, 2),
                (0, 3, 300, 2, 0x2001, 0, 1, 1),
                (7, 0, 20, 2, 0x1001, 0, 0, 0),
                (1, 0, 4, 1, 0x3, 0xff, 0x1, 2),
            ],
        ),
    ];
    for (name, sel, ops) in seqs {
        out.push((
            "engine_ops",
            format!("seed-{name}"),
            encode_engine_ops(sel, &ops),
        ));
    }
    out
}
