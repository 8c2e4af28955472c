//! Hand-built tables for the machine model's own tests (walks, TLBs,
//! break-before-make, stage 2): small arm64 and arm32 fixtures. Descriptor
//! bits are written out here as numbers from the Arm ARM, not taken from
//! hvmm.

use hvmm::{Paddr, Vaddr, Vmid};
use hvmm_model::{Machine, Regime, Stage2};

/// `bits[1:0]` = 0b11: table (levels 0-2) or page (level 3).
pub const TABLE: u64 = 0b11;
pub const PAGE: u64 = 0b11;
/// `bits[1:0]` = 0b01: block (levels 1-2); reserved at level 3.
pub const BLOCK: u64 = 0b01;
pub const AF: u64 = 1 << 10;
pub const RO: u64 = 1 << 7;
pub const SH: u64 = 0b11 << 8;
pub const CONT: u64 = 1 << 52;
pub const XN: u64 = 1 << 54;
pub const XN_TABLE: u64 = 1 << 60;
pub const AP_TABLE_RO: u64 = 1 << 62;
/// AttrIndx = 7 (Normal write-back, MAIR byte 0xff).
pub const NORMAL: u64 = 7 << 2;
/// AttrIndx = 4 (Device-nGnRE, MAIR byte 0x04).
pub const DEVICE: u64 = 4 << 2;

pub fn page(pa: u64) -> u64 {
    pa | PAGE | AF | SH | NORMAL
}
pub fn block(pa: u64) -> u64 {
    pa | BLOCK | AF | SH | NORMAL
}
pub fn table(pa: u64) -> u64 {
    pa | TABLE
}

/// Writes descriptor `desc` at index `idx` of the table at `table`.
pub fn set(m: &mut Machine, table: u64, idx: u64, desc: u64) {
    m.phys_write_u64(Paddr(table + idx * 8), desc).unwrap();
}

pub fn get(m: &Machine, table: u64, idx: u64) -> u64 {
    m.phys_read_u64(Paddr(table + idx * 8)).unwrap()
}

// ---- arm64 fixture -------------------------------------------------------
// RAM 0x4000_0000..0x4400_0000.
// L0 @ 0x4000_0000: [0] -> L1
// L1 @ 0x4000_1000: [1] -> L2        (VA 0x4000_0000 .. 0x8000_0000)
// L2 @ 0x4000_2000: [0] -> L3        (VA 0x4000_0000 .. 0x4020_0000)
// L3 @ 0x4000_3000: [0..4] map the four table pages at VA = PA, RW.
// Data pages live from 0x4100_0000.

pub const RAM64: u64 = 0x4000_0000;
pub const L0: u64 = 0x4000_0000;
pub const L1: u64 = 0x4000_1000;
pub const L2: u64 = 0x4000_2000;
pub const L3: u64 = 0x4000_3000;
/// VA mapped by `L3[i]`.
pub fn l3_va(i: u64) -> Vaddr {
    Vaddr(0x4000_0000 + i * 0x1000)
}
pub const DATA: u64 = 0x4100_0000;

pub fn arm64(ncpus: usize) -> Machine {
    let mut m = Machine::new(Regime::Arm64El2 { pa_bits: 48 }, ncpus);
    m.add_ram(Paddr(RAM64), 0x400_0000).unwrap();
    set(&mut m, L0, 0, table(L1));
    set(&mut m, L1, 1, table(L2));
    set(&mut m, L2, 0, table(L3));
    for i in 0..4 {
        set(&mut m, L3, i, page(L0 + i * 0x1000));
    }
    for cpu in 0..ncpus {
        m.set_root(cpu, Paddr(L0)).unwrap();
        m.enable_mmu(cpu, true).unwrap();
    }
    m
}

// ---- arm32 fixture -------------------------------------------------------
// RAM 0x8000_0000..0x8400_0000 and 2 MiB at 0xc0_0000_0000 (above 4 GiB).
// L1 @ 0x8000_0fe0 (32-byte aligned, 4 entries): [2] -> L2 (VA 0x8000_0000 ..)
// L2 @ 0x8000_1000: [0] -> L3 (VA 0x8000_0000 .. 0x8020_0000)
// L3 @ 0x8000_2000: [0..3] map the table pages at VA = PA.

pub const RAM32: u64 = 0x8000_0000;
pub const HIGH32: u64 = 0xc0_0000_0000;
pub const A32_L1: u64 = 0x8000_0fe0;
pub const A32_L2: u64 = 0x8000_1000;
pub const A32_L3: u64 = 0x8000_2000;
pub fn a32_l3_va(i: u64) -> Vaddr {
    Vaddr(0x8000_0000 + i * 0x1000)
}

pub fn arm32(ncpus: usize) -> Machine {
    let mut m = Machine::new(Regime::Arm32Hyp, ncpus);
    m.add_ram(Paddr(RAM32), 0x400_0000).unwrap();
    m.add_ram(Paddr(HIGH32), 0x20_0000).unwrap();
    set(&mut m, A32_L1, 2, table(A32_L2));
    set(&mut m, A32_L2, 0, table(A32_L3));
    for i in 0..3 {
        set(&mut m, A32_L3, i, page(RAM32 + i * 0x1000));
    }
    for cpu in 0..ncpus {
        m.set_root(cpu, Paddr(A32_L1)).unwrap();
        m.enable_mmu(cpu, true).unwrap();
    }
    m
}

/// Exception class of a syndrome.
pub fn ec(esr: u32) -> u32 {
    esr >> 26
}
/// WnR bit of a syndrome.
pub fn wnr(esr: u32) -> bool {
    esr & (1 << 6) != 0
}
/// Fault status code of a syndrome.
pub fn fsc(esr: u32) -> u32 {
    esr & 0x3f
}

// ---- stage 2 and the guest's stage 1 -------------------------------------
// Stage-2 leaf bits from the Arm ARM: S2AP[7:6] (bit 6 read, bit 7 write),
// MemAttr[5:2], XN[54]; table descriptors are the same as at stage 1.

pub const S2_READ: u64 = 1 << 6;
pub const S2_WRITE: u64 = 1 << 7;
pub const S2_RW: u64 = S2_READ | S2_WRITE;
/// MemAttr = 0b1111: Normal, outer and inner write-back.
pub const MEMATTR_WB: u64 = 0b1111 << 2;
/// MemAttr = 0b0001: Device-nGnRE.
pub const MEMATTR_DEV: u64 = 0b0001 << 2;
/// PXN (bit 53): not executable at EL1 (the guest's stage 1).
pub const PXN: u64 = 1 << 53;
/// NS (bit 5) of a stage-1 descriptor.
pub const NS: u64 = 1 << 5;

pub fn s2_page(pa: u64) -> u64 {
    pa | PAGE | AF | SH | MEMATTR_WB | S2_RW
}
pub fn s2_block(pa: u64) -> u64 {
    pa | BLOCK | AF | SH | MEMATTR_WB | S2_RW
}

/// A bump allocator of (zero) table frames, aligned to their size.
pub struct Frames {
    pub next: u64,
}

impl Frames {
    pub fn take(&mut self, pages: u64) -> u64 {
        let size = pages * 0x1000;
        let at = (self.next + size - 1) & !(size - 1);
        self.next = at + size;
        at
    }
}

pub const fn shift(level: u8) -> u32 {
    39 - 9 * level as u32
}

/// Hand-built tables of one translation regime (addresses are PAs, or IPAs
/// that equal PAs in the tests that use them for a guest's stage 1).
#[derive(Copy, Clone, Debug)]
pub struct HandTables {
    pub root: u64,
    pub start: u8,
    pub ia_bits: u32,
}

impl HandTables {
    pub fn new(frames: &mut Frames, start: u8, ia_bits: u32) -> HandTables {
        let entries = 1u64 << (ia_bits - shift(start));
        let root = frames.take((entries / 512).max(1));
        HandTables {
            root,
            start,
            ia_bits,
        }
    }

    fn index(&self, ia: u64, level: u8) -> u64 {
        let bits = if level == self.start {
            self.ia_bits - shift(level)
        } else {
            9
        };
        (ia >> shift(level)) & ((1 << bits) - 1)
    }

    /// The address of the descriptor for `ia` at `level`, making the tables
    /// above it (with `frames`) where there are none.
    pub fn slot(&self, m: &mut Machine, frames: &mut Frames, ia: u64, level: u8) -> u64 {
        let mut table = self.root;
        for l in self.start..level {
            let at = table + self.index(ia, l) * 8;
            let d = m.phys_read_u64(Paddr(at)).unwrap();
            table = if d & 3 == 3 {
                d & 0x0000_ffff_ffff_f000
            } else {
                let t = frames.take(1);
                m.phys_write_u64(Paddr(at), table_desc(t)).unwrap();
                t
            };
        }
        table + self.index(ia, level) * 8
    }

    /// Writes `leaf` for `ia` at `level`.
    pub fn map(&self, m: &mut Machine, frames: &mut Frames, ia: u64, level: u8, leaf: u64) {
        let at = self.slot(m, frames, ia, level);
        m.phys_write_u64(Paddr(at), leaf).unwrap();
    }
}

fn table_desc(pa: u64) -> u64 {
    table(pa)
}

/// Stage-2 and guest table frames (arm64 fixture RAM).
pub const S2_FRAMES64: u64 = 0x4200_0000;
/// Guest data pages (arm64 fixture RAM).
pub const GUEST_DATA64: u64 = 0x4300_0000;
/// Stage-2 and guest table frames (arm32 fixture RAM).
pub const S2_FRAMES32: u64 = 0x8200_0000;
/// Guest data pages (arm32 fixture RAM).
pub const GUEST_DATA32: u64 = 0x8300_0000;

/// The arm64 fixture plus an empty stage 2 of `s` on every CPU (VMID 1,
/// stage 2 on, the guest's stage 1 off).
pub fn arm64_s2(ncpus: usize, s: Stage2) -> (Machine, Frames, HandTables) {
    let mut m = arm64(ncpus);
    let mut f = Frames { next: S2_FRAMES64 };
    let t = HandTables::new(&mut f, s.start_level, u32::from(s.ipa_bits));
    for cpu in 0..ncpus {
        m.set_stage2_config(cpu, s).unwrap();
        m.set_vttbr(cpu, Paddr(t.root), Vmid(1)).unwrap();
        m.set_stage2(cpu, true).unwrap();
    }
    (m, f, t)
}

/// The arm32 fixture plus an empty 40-bit stage 2 on every CPU (VMID 1,
/// stage 2 on, the guest's stage 1 off).
pub fn arm32_s2(ncpus: usize) -> (Machine, Frames, HandTables) {
    let mut m = arm32(ncpus);
    let s = Stage2::arm32();
    let mut f = Frames { next: S2_FRAMES32 };
    let t = HandTables::new(&mut f, s.start_level, u32::from(s.ipa_bits));
    for cpu in 0..ncpus {
        m.set_stage2_config(cpu, s).unwrap();
        m.set_vttbr(cpu, Paddr(t.root), Vmid(1)).unwrap();
        m.set_stage2(cpu, true).unwrap();
    }
    (m, f, t)
}
