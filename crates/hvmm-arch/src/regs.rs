//! The system-register values hvmm's tables assume, computed in one place
//! for the boot head (assembly), the Rust helpers and adopters. Pure
//! functions and constants: unit tested on the host.
//!
//! | register (arm64 / arm32) | value | why |
//! |---|---|---|
//! | `MAIR_EL2` / `HMAIR0`, `HMAIR1` | [`MAIR_VALUE`] / [`HMAIR0`], [`HMAIR1`] | the memory types behind the attribute indices hvmm writes ([`hvmm::MairMap::XEN`]; a table built [`with_mair`](hvmm::Table::with_mair) another map needs that map's [`value`](hvmm::MairMap::value)) |
//! | `TCR_EL2` / `HTCR` | [`tcr_el2`] / [`HTCR`] | 4 KiB granule, 48-bit VA from level 0 ([`hvmm::Arm64`]) / 32-bit VA from level 1 ([`hvmm::Arm32`]), write-back inner-shareable walks |
//! | `TTBR0_EL2` / `HTTBR` | the root, [`hvmm::Table::root`] | |
//! | `SCTLR_EL2` / `HSCTLR` | [`SCTLR_EL2_BOOT`] / [`HSCTLR_BOOT`], then [`SCTLR_WXN`] | MMU and caches on; WXN once no executable page is writable (hvmm refuses writable-and-executable mappings anyway) |
//! | `VTCR_EL2` / `VTCR` | [`vtcr_el2`] of [`hvmm::Table::vtcr`] / [`hvmm::Table::vtcr`] | the stage-2 format's T0SZ and start level, PS clamped to the CPU |
//! | `VTTBR_EL2` / `VTTBR` | [`hvmm::Table::vttbr`] | root and VMID |
//! | `HCR_EL2` / `HCR` | [`HCR_VM`] set | stage 2 on for the guest |

pub use hvmm::attr::MAIR_VALUE;

/// `HMAIR0` (arm32): MAIR indices 0–3.
pub const HMAIR0: u32 = MAIR_VALUE as u32;
/// `HMAIR1` (arm32): MAIR indices 4–7.
pub const HMAIR1: u32 = (MAIR_VALUE >> 32) as u32;

/// SCTLR_EL2 / HSCTLR: MMU enable.
pub const SCTLR_M: u64 = 1 << 0;
/// SCTLR_EL2 / HSCTLR: alignment check.
pub const SCTLR_A: u64 = 1 << 1;
/// SCTLR_EL2 / HSCTLR: data and unified caches enable.
pub const SCTLR_C: u64 = 1 << 2;
/// SCTLR_EL2: stack alignment check.
pub const SCTLR_SA: u64 = 1 << 3;
/// SCTLR_EL2 / HSCTLR: instruction cache enable.
pub const SCTLR_I: u64 = 1 << 12;
/// SCTLR_EL2 / HSCTLR: write permission implies execute-never.
pub const SCTLR_WXN: u64 = 1 << 19;
/// SCTLR_EL2 (without VHE) RES1 bits: 29, 28, 23, 22, 18, 16, 11, 5, 4.
pub const SCTLR_EL2_RES1: u64 = 0x30c5_0830;
/// HSCTLR RES1 bits: 29, 28, 23, 22, 18, 16, 11, 4, 3.
pub const HSCTLR_RES1: u64 = 0x30c5_0818;
/// The SCTLR_EL2 value the head writes: RES1, MMU, caches, SP alignment
/// check, little-endian, WXN clear (it is set once the runtime tables are
/// live).
pub const SCTLR_EL2_BOOT: u64 = SCTLR_EL2_RES1 | SCTLR_M | SCTLR_C | SCTLR_SA | SCTLR_I;
/// The HSCTLR value the head writes (same meaning as [`SCTLR_EL2_BOOT`]).
pub const HSCTLR_BOOT: u64 = HSCTLR_RES1 | SCTLR_M | SCTLR_C | SCTLR_I;

/// TCR_EL2 RES1 bits (31 and 23).
pub const TCR_EL2_RES1: u64 = (1 << 31) | (1 << 23);
/// TCR_EL2 / HTCR walk attributes: inner and outer write-back
/// read/write-allocate (IRGN0 = ORGN0 = 0b01), inner shareable (SH0 = 0b11).
pub const TCR_WALK_WBWA_IS: u64 = (1 << 8) | (1 << 10) | (3 << 12);

/// The PS field (and the PA size in bits) for an `ID_AA64MMFR0_EL1.PARange`
/// value, clamped to 48 bits (52-bit PAs need LPA / LPA2, which hvmm does not
/// use with 4 KiB granules).
pub const fn parange_to_ps(parange: u64) -> (u64, u32) {
    match parange & 0xf {
        0 => (0, 32),
        1 => (1, 36),
        2 => (2, 40),
        3 => (3, 42),
        4 => (4, 44),
        _ => (5, 48),
    }
}

/// TCR_EL2: T0SZ = 16 (48-bit VA), 4 KiB granule, write-back inner-shareable
/// walks, PS from `ID_AA64MMFR0_EL1.PARange`.
pub const fn tcr_el2(parange: u64) -> u64 {
    TCR_EL2_RES1 | TCR_WALK_WBWA_IS | (parange_to_ps(parange).0 << 16) | 16
}

/// VTCR_EL2 for a stage-2 format's VTCR value (`hvmm::Stage2Format::vtcr`,
/// or [`hvmm::Table::vtcr`]) on a CPU whose `ID_AA64MMFR0_EL1.PARange` is
/// `parange`: the format's fields, with PS (bits 18:16) lowered to the PA
/// size the CPU implements (and at most 48 bits).
pub const fn vtcr_el2(format_vtcr: u64, parange: u64) -> u64 {
    let ps = parange_to_ps(parange).0;
    let want = (format_vtcr >> 16) & 7;
    let ps = if want < ps { want } else { ps };
    (format_vtcr & !(7 << 16)) | (ps << 16)
}

/// HCR_EL2.VM / HCR.VM: stage-2 translation on for EL1&0.
pub const HCR_VM: u64 = 1 << 0;

/// HTCR: T0SZ = 0 (32-bit VA, L1 root), write-back inner-shareable walks,
/// RES1 bits 31 and 23.
pub const HTCR: u32 = (TCR_EL2_RES1 | TCR_WALK_WBWA_IS) as u32;

/// CPTR_EL2 with nothing trapped (TFP = 0) and its RES1 bits (13:12, 9:0):
/// Rust code on `aarch64-unknown-none` may use the FP/SIMD registers.
pub const CPTR_EL2_NO_TRAPS: u64 = 0x33ff;

/// The index of a CPU from its MPIDR affinity fields, as QEMU's `virt`
/// machine numbers them (clusters of 8 with GICv2: Aff1 × 8 + Aff0; Aff2
/// is folded in the same way for completeness).
pub const fn mpidr_to_cpu(mpidr: u64) -> usize {
    let aff0 = mpidr & 0xff;
    let aff1 = (mpidr >> 8) & 0xff;
    let aff2 = (mpidr >> 16) & 0xff;
    ((aff2 * 8 + aff1) * 8 + aff0) as usize
}

/// Mask of the affinity fields of MPIDR (Aff3 in 39:32 on arm64, Aff2..0).
pub const MPIDR_AFF_MASK: u64 = 0xff_00ff_ffff;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(HMAIR0, 0xeeaa_4400);
        assert_eq!(HMAIR1, 0xff00_0004);
        assert_eq!(tcr_el2(5), 0x8085_3510);
        assert_eq!(tcr_el2(2), 0x8082_3510);
        assert_eq!(tcr_el2(6), 0x8085_3510); // 52 bits clamped to 48
        assert_eq!(HTCR, 0x8080_3500);
        assert_eq!(SCTLR_EL2_BOOT, 0x30c5_183d);
        assert_eq!(HSCTLR_BOOT, 0x30c5_181d);
    }

    #[test]
    fn vtcr_ps_follows_the_cpu() {
        use hvmm::Stage2Format;
        let f = hvmm::Arm64Stage2::<40>::vtcr();
        assert_eq!((f >> 16) & 7, 5, "the format asks for 48 bits");
        // A 40-bit CPU (PARange 2) gets PS = 2, the rest unchanged.
        assert_eq!(vtcr_el2(f, 2), (f & !(7 << 16)) | (2 << 16));
        // A 52-bit CPU gets 48 bits, what the format asks for.
        assert_eq!(vtcr_el2(f, 6), f);
        assert_eq!(vtcr_el2(f, 5), f);
    }

    #[test]
    fn cpu_numbers() {
        assert_eq!(mpidr_to_cpu(0x8000_0000), 0);
        assert_eq!(mpidr_to_cpu(0x8000_0003), 3);
        assert_eq!(mpidr_to_cpu(0x8000_0101), 9);
    }
}
