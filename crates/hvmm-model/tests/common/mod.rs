//! Hand-built tables for the tests. Descriptor bits are written out here as
//! numbers from the Arm ARM, not taken from hvmm.
#![allow(dead_code)]

use hvmm::{Paddr, Vaddr};
use hvmm_model::{Machine, Regime};

/// bits[1:0] = 0b11: table (levels 0-2) or page (level 3).
pub const TABLE: u64 = 0b11;
pub const PAGE: u64 = 0b11;
/// bits[1:0] = 0b01: block (levels 1-2); reserved at level 3.
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
/// VA mapped by L3[i].
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
