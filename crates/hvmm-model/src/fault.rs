//! Fault kinds as the model reports them (hvmm's [`FaultKind`] plus what it
//! cannot say) and guest (EL1&0) aborts with the syndrome hardware reports
//! to EL2.

use hvmm::{AccessKind, FaultKind, Ipa, MemFault, Stage, Vaddr};
use std::fmt;

/// The fault status (DFSC / IFSC, VMSAv8-64 and AArch32 long-descriptor
/// encodings) of an abort.
///
/// hvmm's [`FaultKind`] lives in the core crate and has no TLB conflict and
/// no "external abort on a table walk"; the model keeps them here. Where an
/// abort must be returned as an [`hvmm::MemFault`] (the [`hvmm::Arch`]
/// methods), [`AbortKind::fault_kind`] maps both to
/// [`FaultKind::External`], and the CPU's syndrome register holds the real
/// status code.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum AbortKind {
    /// Address size fault (`0b0000LL`).
    AddressSize,
    /// Translation fault (`0b0001LL`).
    Translation,
    /// Access flag fault (`0b0010LL`).
    AccessFlag,
    /// Permission fault (`0b0011LL`).
    Permission,
    /// Synchronous external abort, not on a table walk (`0b010000`).
    External,
    /// Synchronous external abort on a translation table walk (`0b0101LL`).
    ExternalOnWalk,
    /// TLB conflict abort (`0b110000`): the TLB would hold two entries of
    /// different sizes for the address.
    TlbConflict,
}

impl AbortKind {
    /// The fault status code for a fault found at `level`.
    pub const fn status_code(self, level: u8) -> u32 {
        let ll = level as u32 & 3;
        match self {
            AbortKind::AddressSize => ll,
            AbortKind::Translation => 0b00_0100 | ll,
            AbortKind::AccessFlag => 0b00_1000 | ll,
            AbortKind::Permission => 0b00_1100 | ll,
            AbortKind::External => 0b01_0000,
            AbortKind::ExternalOnWalk => 0b01_0100 | ll,
            AbortKind::TlbConflict => 0b11_0000,
        }
    }

    /// hvmm's nearest [`FaultKind`]: both kinds of external abort and the
    /// TLB conflict abort become [`FaultKind::External`].
    pub const fn fault_kind(self) -> FaultKind {
        match self {
            AbortKind::AddressSize => FaultKind::AddressSize,
            AbortKind::Translation => FaultKind::Translation,
            AbortKind::AccessFlag => FaultKind::AccessFlag,
            AbortKind::Permission => FaultKind::Permission,
            AbortKind::External | AbortKind::ExternalOnWalk | AbortKind::TlbConflict => {
                FaultKind::External
            }
        }
    }
}

impl From<FaultKind> for AbortKind {
    fn from(k: FaultKind) -> AbortKind {
        match k {
            FaultKind::AddressSize => AbortKind::AddressSize,
            FaultKind::Translation => AbortKind::Translation,
            FaultKind::AccessFlag => AbortKind::AccessFlag,
            FaultKind::Permission => AbortKind::Permission,
            FaultKind::External => AbortKind::External,
        }
    }
}

/// ESR_ELx.IL: set for every abort the model reports (32-bit instructions;
/// data aborts without instruction syndrome).
const IL: u32 = 1 << 25;
/// ISS WnR (bit 6) of a data abort.
const WNR: u32 = 1 << 6;
/// ISS S1PTW (bit 7).
const S1PTW: u32 = 1 << 7;

/// The syndrome of an abort: exception class `ec`, IL, the status code, WnR
/// for data writes not on a stage-1 table walk, S1PTW.
pub(crate) const fn syndrome(ec: u32, access: AccessKind, status: u32, s1ptw: bool) -> u32 {
    let wnr = if matches!(access, AccessKind::Write) && !s1ptw {
        WNR
    } else {
        0
    };
    let ptw = if s1ptw { S1PTW } else { 0 };
    (ec << 26) | IL | wnr | ptw | status
}

/// ESR_EL2 / HSR of an abort taken from EL2 / Hyp mode itself: data abort
/// from the current EL (EC 0x25) or prefetch abort (EC 0x21). For every kind
/// but the TLB conflict this is [`MemFault::syndrome`].
pub(crate) fn el2_syndrome(f: &MemFault, kind: AbortKind) -> u32 {
    let ec = if f.access == AccessKind::Exec {
        0x21
    } else {
        0x25
    };
    syndrome(ec, f.access, kind.status_code(f.level), false)
}

/// An abort on an access by a guest (the EL1&0 regime: stage 1 of EL1
/// through the guest's TTBR0, then stage 2).
///
/// A fault of the guest's own stage 1 (`stage == Stage::One`) is taken to the
/// guest's EL1; a stage-2 fault, a stage-2 fault on a stage-1 table walk
/// (`s1ptw`) and a TLB conflict abort are taken to EL2, and the model writes
/// them into that CPU's ESR_EL2 / HSR, FAR_EL2 / HDFAR / HIFAR and HPFAR_EL2
/// / HPFAR ([`GuestFault::esr`], [`GuestFault::hpfar`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct GuestFault {
    /// The guest virtual address accessed (FAR_EL2 / HDFAR / HIFAR). With
    /// the guest's stage 1 off it is the IPA.
    pub va: Vaddr,
    /// The IPA whose stage-2 translation faulted: the accessed one, or for
    /// an `s1ptw` fault the IPA of the stage-1 descriptor being read (what
    /// HPFAR reports). `None` for stage-1 faults.
    pub ipa: Option<Ipa>,
    /// The access that faulted (a stage-1 table walk is made for it).
    pub access: AccessKind,
    /// Fault status.
    pub kind: AbortKind,
    /// Lookup level the fault was found at (of the stage that faulted).
    pub level: u8,
    /// The stage that faulted: `One` is taken to the guest's EL1, `Two` to
    /// EL2 (TLB conflict aborts are reported as `Two`).
    pub stage: Stage,
    /// The fault is on the stage-2 translation of a stage-1 table read.
    pub s1ptw: bool,
    /// arm64 (ESR_EL2, HPFAR_EL2) or arm32 (HSR, HPFAR) register formats.
    pub arm64: bool,
}

impl GuestFault {
    /// Whether the abort is taken to EL2 / Hyp mode.
    pub fn to_el2(&self) -> bool {
        self.stage == Stage::Two
    }

    /// The syndrome. Taken to EL2: ESR_EL2 / HSR with EC 0x24 (data abort
    /// from a lower exception level) or 0x20 (instruction abort from a
    /// lower level), IL, the DFSC / IFSC, WnR (data writes; 0 for `s1ptw`
    /// faults, whose walk only reads) and S1PTW (bit 7); ISV, EA and FnV are
    /// 0. A stage-1 fault gives the ESR_EL1 an AArch64 EL1 would see (EC
    /// 0x25 / 0x21: from the current level); the model does not keep the
    /// guest's EL1 fault registers.
    pub fn esr(&self) -> u32 {
        let ec = match (self.access, self.to_el2()) {
            (AccessKind::Exec, true) => 0x20,
            (_, true) => 0x24,
            (AccessKind::Exec, false) => 0x21,
            (_, false) => 0x25,
        };
        syndrome(
            ec,
            self.access,
            self.kind.status_code(self.level),
            self.s1ptw,
        )
    }

    /// HPFAR_EL2 (arm64: IPA `[47:12]` in bits `[43:4]`) or HPFAR (arm32:
    /// IPA `[39:12]` in bits `[31:4]`) for [`GuestFault::ipa`]; 0 without
    /// one. (The architecture guarantees HPFAR only for translation, access
    /// flag and address size faults and for `s1ptw` faults; the model
    /// writes it for every stage-2 abort with an IPA.)
    pub fn hpfar(&self) -> u64 {
        let Some(ipa) = self.ipa else { return 0 };
        let frames = if self.arm64 {
            (1u64 << 36) - 1
        } else {
            (1u64 << 28) - 1
        };
        ((ipa.0 >> 12) & frames) << 4
    }

    /// FAR_EL2 / HDFAR / HIFAR: the guest VA.
    pub fn far(&self) -> u64 {
        self.va.0
    }
}

impl fmt::Display for GuestFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.access {
            AccessKind::Exec => "Instruction Abort",
            _ => "Data Abort",
        };
        let stage = match self.stage {
            Stage::One => "stage 1",
            Stage::Two => "stage 2",
        };
        write!(
            f,
            "guest {what} ({stage} {:?}, level {}{}) on {:?} at VA {}",
            self.kind,
            self.level,
            if self.s1ptw {
                ", on a stage-1 walk"
            } else {
                ""
            },
            self.access,
            self.va
        )?;
        if let Some(ipa) = self.ipa {
            write!(f, " IPA {ipa}")?;
        }
        write!(f, ": syndrome {:#010x}", self.esr())
    }
}

impl std::error::Error for GuestFault {}
