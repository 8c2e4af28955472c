//! Stage-2 configuration: VTCR_EL2 (arm64) / VTCR (arm32 LPAE) decoded as
//! the Arm architecture defines them (4 KiB granule only).

use crate::machine::Regime;
use crate::walk::level_shift;
use std::fmt;

/// VTCR_EL2.VS (bit 19): 16-bit VMIDs.
pub(crate) const VTCR_VS: u64 = 1 << 19;

/// The largest physical address size the model implements for stage 2
/// (ID_AA64MMFR0_EL1.PARange): 48 bits on arm64, 40 on arm32.
pub(crate) const fn pa_max(arm64: bool) -> u8 {
    if arm64 {
        48
    } else {
        40
    }
}

/// A VTCR value the model cannot use: the architecture makes every stage-2
/// walk under it a translation fault (level 0 on arm64, level 1 on arm32),
/// or it asks for something the model does not implement (a granule other
/// than 4 KiB).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct VtcrError {
    /// The register value.
    pub vtcr: u64,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for VtcrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VTCR {:#x}: {}", self.vtcr, self.reason)
    }
}

impl std::error::Error for VtcrError {}

/// A stage-2 translation configuration (4 KiB granule): what VTCR_EL2 /
/// VTCR say.
///
/// | | arm64 VTCR_EL2 | arm32 VTCR |
/// |---|---|---|
/// | input (IPA) size | `64 - T0SZ[5:0]`, 25..=48 | `32 - T0SZ[3:0]` (signed, `S` = bit 4 must equal `T0SZ[3]`), 25..=40 |
/// | start level | `SL0[7:6]`: 0 → 2, 1 → 1, 2 → 0 | `SL0[7:6]`: 0 → 2, 1 → 1 |
/// | output size | `PS[18:16]`: 32, 36, 40, 42, 44, 48 bits (52 and reserved → 48) | 40 bits |
/// | VMID | `VS[19]`: 16 bits, else 8 | 8 bits |
///
/// The start level must be consistent with the input size: the initial
/// table has at least 2 entries and at most 16 concatenated pages
/// (ARM DDI 0487 `AArch64.TranslationTableWalk`, "startsizecheck").
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Stage2 {
    /// IPA size in bits.
    pub ipa_bits: u8,
    /// Initial lookup level.
    pub start_level: u8,
    /// Output (physical) address size in bits.
    pub oa_bits: u8,
    /// VMID size: 8 or 16 (arm64 with VTCR_EL2.VS).
    pub vmid_bits: u8,
}

impl Stage2 {
    /// An arm64 stage 2 of `ipa_bits` (25..=48) with the start level Xen's
    /// p2m uses (level 1 up to 42 bits, level 0 above; for fewer than 31
    /// bits, level 2), 48-bit output, 8-bit VMIDs.
    pub fn arm64(ipa_bits: u8) -> Stage2 {
        let start_level = if ipa_bits > 42 {
            0
        } else if ipa_bits >= 31 {
            1
        } else {
            2
        };
        Stage2 {
            ipa_bits,
            start_level,
            oa_bits: 48,
            vmid_bits: 8,
        }
    }

    /// The arm32 stage 2 Xen uses: 40-bit IPA (T0SZ = -8) from level 1 with
    /// two concatenated root pages, 40-bit output, 8-bit VMIDs.
    pub fn arm32() -> Stage2 {
        Stage2 {
            ipa_bits: 40,
            start_level: 1,
            oa_bits: 40,
            vmid_bits: 8,
        }
    }

    /// The same configuration with 16-bit VMIDs (arm64 VTCR_EL2.VS).
    pub fn with_vmid16(self) -> Stage2 {
        Stage2 {
            vmid_bits: 16,
            ..self
        }
    }

    /// Entries at the initial lookup level, over all concatenated tables.
    pub fn root_entries(&self) -> u64 {
        1u64 << (u32::from(self.ipa_bits).saturating_sub(level_shift(self.start_level)))
    }

    /// Root pages: more than one when the root is concatenated. They are
    /// consecutive and aligned to their total size.
    pub fn root_tables(&self) -> u64 {
        (self.root_entries() / 512).max(1)
    }

    /// Bytes the root's base address must be aligned to (its size): VTTBR
    /// bits below it are ignored.
    pub fn root_align(&self) -> u64 {
        self.root_entries() * 8
    }

    /// Checks the configuration as the architecture checks VTCR for
    /// `regime` (`vtcr` is only quoted in the error).
    fn check(&self, regime: Regime, vtcr: u64) -> Result<(), VtcrError> {
        let err = |reason| Err(VtcrError { vtcr, reason });
        let arm64 = regime.is_arm64();
        let max_in = if arm64 { 48 } else { 40 };
        if !(25..=max_in).contains(&self.ipa_bits) {
            return err("input size (T0SZ) out of range");
        }
        if self.start_level > 2 || (!arm64 && self.start_level == 0) {
            return err("reserved start level (SL0)");
        }
        // Level 0 needs an implemented PA size above 42 bits.
        if self.start_level == 0 && pa_max(arm64) <= 42 {
            return err("start level 0 needs PAMax > 42");
        }
        // Between 2 entries and 16 pages at the initial level.
        let entries_log2 = i32::from(self.ipa_bits) - level_shift(self.start_level) as i32;
        if !(1..=13).contains(&entries_log2) {
            return err("start level (SL0) inconsistent with the input size (T0SZ)");
        }
        if !(32..=pa_max(arm64)).contains(&self.oa_bits) {
            return err("output size (PS) out of range");
        }
        if self.vmid_bits != 8 && !(arm64 && self.vmid_bits == 16) {
            return err("VMID size");
        }
        Ok(())
    }

    /// Decodes VTCR_EL2 (arm64) or VTCR (arm32).
    pub fn from_vtcr(regime: Regime, vtcr: u64) -> Result<Stage2, VtcrError> {
        let err = |reason| Err(VtcrError { vtcr, reason });
        let sl0 = ((vtcr >> 6) & 3) as u8;
        let s = if regime.is_arm64() {
            if (vtcr >> 14) & 3 != 0 {
                return err("granule (TG0) other than 4 KiB is not modelled");
            }
            let t0sz = (vtcr & 0x3f) as u8;
            if sl0 == 3 {
                return err("reserved start level (SL0 = 3)");
            }
            let oa_bits = match (vtcr >> 16) & 7 {
                0 => 32,
                1 => 36,
                2 => 40,
                3 => 42,
                4 => 44,
                _ => 48,
            };
            Stage2 {
                ipa_bits: 64u8.saturating_sub(t0sz),
                start_level: 2 - sl0,
                oa_bits: oa_bits.min(pa_max(true)),
                vmid_bits: if vtcr & VTCR_VS != 0 { 16 } else { 8 },
            }
        } else {
            let t0sz = (vtcr & 0xf) as i8;
            let t0sz = if t0sz & 8 != 0 { t0sz - 16 } else { t0sz };
            let sign = (vtcr >> 4) & 1;
            if sign != (vtcr >> 3) & 1 {
                return err("VTCR.S differs from T0SZ[3]");
            }
            if sl0 >= 2 {
                return err("reserved start level (SL0)");
            }
            Stage2 {
                ipa_bits: (32 - i16::from(t0sz)) as u8,
                start_level: 2 - sl0,
                oa_bits: 40,
                vmid_bits: 8,
            }
        };
        s.check(regime, vtcr)?;
        Ok(s)
    }

    /// The VTCR value for this configuration on `regime`: arm64 T0SZ, SL0,
    /// inner-shareable write-back walks, TG0 = 4 KiB, PS, VS, RES1 bit 31;
    /// arm32 T0SZ (signed) with S, SL0, inner-shareable write-back walks,
    /// RES1 bit 31.
    pub fn vtcr(&self, regime: Regime) -> Result<u64, VtcrError> {
        let walks = (1 << 8) | (1 << 10) | (3 << 12) | (1 << 31);
        let sl0 = u64::from(2 - self.start_level.min(2));
        let v = if regime.is_arm64() {
            let ps: u64 = match self.oa_bits {
                32 => 0,
                36 => 1,
                40 => 2,
                42 => 3,
                44 => 4,
                _ => 5,
            };
            let vs = if self.vmid_bits == 16 { VTCR_VS } else { 0 };
            u64::from(64 - self.ipa_bits.min(64)) | (sl0 << 6) | walks | (ps << 16) | vs
        } else {
            let t0sz = (32 - i16::from(self.ipa_bits)) as u64 & 0xf;
            let s = (t0sz >> 3) & 1;
            t0sz | (s << 4) | (sl0 << 6) | walks
        };
        self.check(regime, v)?;
        Ok(v)
    }
}
