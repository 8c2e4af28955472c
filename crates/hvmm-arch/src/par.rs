//! Decoding of the 64-bit `PAR` (`PAR_EL1` on arm64, the LPAE `PAR` on arm32)
//! that an address-translation instruction leaves behind.
//!
//! Both architectures use the same layout when the translation regime uses
//! long descriptors (always the case at EL2 / in HYP mode):
//!
//! | bits | F = 0 (success) | F = 1 (fault) |
//! |---|---|---|
//! | 0 | F | F |
//! | 6:1 | – | FST, the fault status code |
//! | 8 | – | PTW (fault on a stage-2 walk) |
//! | 9 | – | S (stage) |
//! | 11 | LPAE (arm32) | LPAE (arm32) |
//! | 47:12 | PA (arm32: 39:12) | – |
//! | 63:56 | ATTR, the MAIR byte | – |

use hvmm::{AccessKind, AtResult, FaultKind, MemFault, Paddr, Vaddr};

/// PAR.F: the translation failed.
pub const PAR_F: u64 = 1;

/// Decodes the fault status code (`FST` / `DFSC`, long-descriptor encoding)
/// into a kind and a level. `None` for codes hvmm does not expect from a
/// stage-1 EL2 walk (TLB conflict, alignment, parity…).
pub const fn decode_fsc(fsc: u32) -> Option<(FaultKind, u8)> {
    let level = (fsc & 3) as u8;
    match fsc & 0x3c {
        0x00 => Some((FaultKind::AddressSize, level)),
        0x04 => Some((FaultKind::Translation, level)),
        0x08 => Some((FaultKind::AccessFlag, level)),
        0x0c => Some((FaultKind::Permission, level)),
        // 0b0100LL / 0b0101LL: synchronous external abort (on a walk at
        // level LL for 0b0101LL); 0b010000 is "not on a walk".
        0x10 if fsc == 0x10 => Some((FaultKind::External, 0)),
        0x14 => Some((FaultKind::External, level)),
        _ => None,
    }
}

/// Turns a `PAR` value read after `AT` of `va` into the translation result.
///
/// `pa_bits` is the output-address size (48 on arm64, 40 on arm32). A fault
/// code hvmm does not know is reported as an external abort at level 0.
pub fn decode_par(par: u64, va: Vaddr, write: bool, pa_bits: u32) -> Result<AtResult, MemFault> {
    if par & PAR_F != 0 {
        let fst = ((par >> 1) & 0x3f) as u32;
        let (kind, level) = decode_fsc(fst).unwrap_or((FaultKind::External, 0));
        return Err(MemFault {
            va,
            access: if write {
                AccessKind::Write
            } else {
                AccessKind::Read
            },
            kind,
            level,
        });
    }
    let mask = ((1u64 << pa_bits) - 1) & !0xfff;
    Ok(AtResult {
        pa: Paddr((par & mask) | va.page_offset()),
        mair_attr: (par >> 56) as u8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_keeps_the_page_offset_and_attribute() {
        let r = decode_par(0xff00_0000_4020_1800, Vaddr(0x20_1234), false, 48).unwrap();
        assert_eq!(r.pa, Paddr(0x4020_1234));
        assert_eq!(r.mair_attr, 0xff);
        // arm32: LPAE bit 11 is not part of the address, PA is 40 bits.
        let r = decode_par(0x0400_00ff_ffff_f800, Vaddr(0x40_0008), false, 40).unwrap();
        assert_eq!(r.pa, Paddr(0xff_ffff_f008));
        assert_eq!(r.mair_attr, 0x04);
    }

    #[test]
    fn faults_decode_kind_level_and_access() {
        // Translation fault, level 2, read.
        let e = decode_par(1 | (0x06 << 1), Vaddr(0x1000), false, 48).unwrap_err();
        assert_eq!(
            (e.kind, e.level, e.access),
            (FaultKind::Translation, 2, AccessKind::Read)
        );
        // Permission fault, level 3, write: what AT S1E2W says of image text.
        let e = decode_par(1 | (0x0f << 1), Vaddr(0x20_0000), true, 48).unwrap_err();
        assert_eq!(
            (e.kind, e.level, e.access),
            (FaultKind::Permission, 3, AccessKind::Write)
        );
        assert_eq!(e.syndrome(), 0x9600_004f);
        let e = decode_par(1 | (0x10 << 1), Vaddr(0), false, 48).unwrap_err();
        assert_eq!(e.kind, FaultKind::External);
    }

    #[test]
    fn fsc_table() {
        assert_eq!(decode_fsc(0x07), Some((FaultKind::Translation, 3)));
        assert_eq!(decode_fsc(0x0b), Some((FaultKind::AccessFlag, 3)));
        assert_eq!(decode_fsc(0x01), Some((FaultKind::AddressSize, 1)));
        assert_eq!(decode_fsc(0x15), Some((FaultKind::External, 1)));
        assert_eq!(decode_fsc(0x21), None); // alignment fault
    }
}
