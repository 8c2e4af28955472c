//! The logic of the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer), kept
//! here so that `tests/fuzz_replay.rs` replays every checked-in corpus on
//! stable Rust in `cargo test`.
//!
//! Every function takes arbitrary bytes and **panics on a finding** (that is
//! what libFuzzer reports); a rejection of bad input is not a finding.
//!
//! - [`dtb_boot`]: arbitrary bytes as the DTB of a whole boot on the machine
//!   model, judged by [`check_boot`]: the boot either reaches Active and
//!   verifies, or stops with a named error at a step that depends on the
//!   DTB; the model never sees a stale TLB entry, a break-before-make
//!   violation or a TLB conflict, and no PMAP slot is left held.
//! - [`dtb_structured`]: structure-aware: bytes decoded into a
//!   [`VirtBoard`] (RAM banks, reserved memory, memreserve entries, typed and
//!   untyped modules, command lines, cell sizes), written as a DTB, then
//!   optionally damaged at a few byte positions, then booted as above.
//! - [`dtb_parse`]: arbitrary bytes straight into [`BootInfo::parse`] with a
//!   reader over a small fake memory; on success the result is consistent
//!   (banks inside the PA size, modules inside the PA size, free ranges
//!   disjoint, sorted, page aligned and outside the image/DTB/modules/reserved).
//! - [`engine_ops`]: bytes decoded into a sequence of update-engine
//!   operations on both formats, run on the engine rig of [`crate::engine`]
//!   (the live tables of the model's MMU, reached through a direct-map
//!   window), with after every operation the rig's checks: a reference map
//!   compared with the table bytes (read independently of hvmm's descriptor
//!   code), with fresh walks on CPU 0, the TLB of CPU 1 and the engine's
//!   `lookup` on sampled pages; no stale TLB entry, no BBM violation; on
//!   error the tables unchanged, nothing leaked, and the error one the rules
//!   give ([`justify`]); at the end every table frame accounted for and
//!   given back once everything is removed.
//!
//! Inputs are bounded (at most [`MAX_OPS`] operations, a few thousand pages
//! of leaves each) so that each runs in milliseconds.

use crate::boot::check_boot;
use crate::engine::{
    attrs_of, check_tables, check_tlbs, check_translations, justify, remove_everything,
    samples_spread, ModelFormat, RefMap, Rig, Step, GIB, MIB2, PAGE,
};
use hvmm::{Arm32, Arm64, MapFlags, Op, Paddr, Perm};
use hvmm_boot::model::{ArchKind, Scenario};
use hvmm_bootinfo::builder::VirtBoard;
use hvmm_bootinfo::{BootInfo, ModuleReader, ParseParams, XSM_MAGIC};

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
/// Leaves an operation may write as 4 KiB pages; bigger inserts use blocks.
const MAX_PAGE_LEAVES: u64 = 2048;
/// Pages checked after an operation, spread over its range (the property
/// tests check twice as many; an input must run in milliseconds).
const SPREAD: u64 = 16;

/// Decodes [`OP_BYTES`] bytes into an operation, against what was done so
/// far (so that a sequence can aim at earlier ranges).
fn decode<F: ModelFormat>(b: &[u8], history: &[(u64, u64)], r: &RefMap) -> Step {
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

fn run_ops<F: ModelFormat>(pool_frames: u64, ops: &[u8]) {
    let mut rig = Rig::<F>::new(pool_frames);
    let mut r = RefMap::default();
    let mut history: Vec<(u64, u64)> = Vec::new();
    for chunk in ops.chunks_exact(OP_BYTES).take(MAX_OPS) {
        let st = decode::<F>(chunk, &history, &r);
        history.push((st.va, st.pages));
        let end = st.va + st.pages * PAGE;
        let samp = samples_spread::<F>(st.va, st.pages, SPREAD);
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
        check_tlbs(&rig, &format!("{st:x?}"));
        check_translations(&mut rig, &r, &samp);
        check_tables(&rig, &r);
    }
    let (a0, a1) = F::ARENA;
    assert_eq!(
        rig.engine_runs(a0, (a1 - a0) / PAGE),
        r.runs(),
        "for_each_leaf vs reference"
    );
    remove_everything(&mut rig, &mut r);
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
