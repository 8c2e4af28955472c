//! Memory types (MAIR indices), permissions and mapping flags.
//!
//! Permissions are an enum of the three a hypervisor may use: read-only,
//! read-execute and read-write. Read-write-execute has no variant, so it cannot
//! be requested by accident; [`Perm::from_rwx`] refuses it by name when a
//! caller holds separate bits.

use core::fmt;

/// Memory type, encoded as the MAIR index Xen uses (so page-table dumps compare).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MemType {
    /// Device-nGnRnE (MAIR 0x00), index 0.
    DeviceNgnrne = 0,
    /// Normal non-cacheable, used for write-combine (MAIR 0x44), index 1.
    NormalNc = 1,
    /// Normal write-through (MAIR 0xaa), index 2.
    NormalWt = 2,
    /// Normal write-back (MAIR 0xee), index 3.
    NormalWb = 3,
    /// Device-nGnRE (MAIR 0x04), index 4.
    DeviceNgnre = 4,
    /// Normal write-back read/write-allocate (MAIR 0xff), index 7: the
    /// hypervisor's own memory.
    Normal = 7,
}

impl MemType {
    /// The AttrIndx value.
    pub const fn index(self) -> u8 {
        self as u8
    }
    /// The memory type for an AttrIndx value, if it is one of ours.
    pub const fn from_index(i: u8) -> Option<MemType> {
        Some(match i {
            0 => MemType::DeviceNgnrne,
            1 => MemType::NormalNc,
            2 => MemType::NormalWt,
            3 => MemType::NormalWb,
            4 => MemType::DeviceNgnre,
            7 => MemType::Normal,
            _ => return None,
        })
    }
    /// Whether this is a device type (or write-combine): never executable.
    pub const fn must_be_xn(self) -> bool {
        matches!(
            self,
            MemType::DeviceNgnrne | MemType::DeviceNgnre | MemType::NormalNc
        )
    }
    /// Whether this is a device memory type.
    pub const fn is_device(self) -> bool {
        matches!(self, MemType::DeviceNgnrne | MemType::DeviceNgnre)
    }
}

/// The MAIR value (MAIR_EL2, or HMAIR1:HMAIR0 on arm32) matching [`MemType`].
pub const MAIR_VALUE: u64 = 0xff00_0004_eeaa_4400;

/// Hypervisor access permissions. There is deliberately no read-write-execute.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Perm {
    /// Read-only, never executable.
    Ro,
    /// Read and execute.
    Rx,
    /// Read and write, never executable.
    Rw,
}

impl Perm {
    /// Builds a permission from separate bits; write+execute is refused.
    pub const fn from_rwx(write: bool, exec: bool) -> Result<Perm, crate::Error> {
        match (write, exec) {
            (false, false) => Ok(Perm::Ro),
            (false, true) => Ok(Perm::Rx),
            (true, false) => Ok(Perm::Rw),
            (true, true) => Err(crate::Error::WritableAndExecutable),
        }
    }
    /// Whether writes are allowed.
    pub const fn writable(self) -> bool {
        matches!(self, Perm::Rw)
    }
    /// Whether instruction fetches are allowed.
    pub const fn executable(self) -> bool {
        matches!(self, Perm::Rx)
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Perm::Ro => "RO",
            Perm::Rx => "RX",
            Perm::Rw => "RW",
        })
    }
}

/// The attributes of a leaf mapping: memory type and permission. Construct
/// with [`Attrs::new`], which refuses executable device or write-combine
/// memory, or with the named constructors.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attrs {
    mem: MemType,
    perm: Perm,
}

impl Attrs {
    /// Checked constructor: device and write-combine memory must not be executable.
    pub const fn new(mem: MemType, perm: Perm) -> Result<Attrs, crate::Error> {
        if mem.must_be_xn() && perm.executable() {
            return Err(crate::Error::ExecutableDevice);
        }
        Ok(Attrs { mem, perm })
    }
    /// Normal memory, read-write, never executable (Xen's `PAGE_HYPERVISOR_RW`).
    pub const RW: Attrs = Attrs {
        mem: MemType::Normal,
        perm: Perm::Rw,
    };
    /// Normal memory, read-only (Xen's `PAGE_HYPERVISOR_RO`).
    pub const RO: Attrs = Attrs {
        mem: MemType::Normal,
        perm: Perm::Ro,
    };
    /// Normal memory, read-execute (Xen's `PAGE_HYPERVISOR_RX`).
    pub const RX: Attrs = Attrs {
        mem: MemType::Normal,
        perm: Perm::Rx,
    };
    /// Device-nGnRE, read-write, never executable (`PAGE_HYPERVISOR_NOCACHE`).
    pub const DEVICE: Attrs = Attrs {
        mem: MemType::DeviceNgnre,
        perm: Perm::Rw,
    };
    /// Normal non-cacheable, read-write, never executable (`PAGE_HYPERVISOR_WC`).
    pub const WC: Attrs = Attrs {
        mem: MemType::NormalNc,
        perm: Perm::Rw,
    };

    /// The memory type.
    pub const fn mem(self) -> MemType {
        self.mem
    }
    /// The permission.
    pub const fn perm(self) -> Perm {
        self.perm
    }
    /// The same memory type with another permission (checked like [`Attrs::new`]).
    pub const fn with_perm(self, perm: Perm) -> Result<Attrs, crate::Error> {
        Attrs::new(self.mem, perm)
    }
}

impl fmt::Display for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.perm, self.mem)
    }
}

/// What the caller allows the engine to use when it maps.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct MapFlags {
    /// Use 1 GiB / 2 MiB block entries where `va` and `pa` are aligned and
    /// enough pages remain. For Modify and Remove it selects the target level
    /// the same way (Xen's behaviour): without it the target is always a page.
    pub blocks: bool,
    /// Set the contiguous hint on runs of 16 entries aligned to 16 × the entry size.
    pub contiguous: bool,
    /// With `blocks`: 2 MiB blocks only, never 1 GiB (Xen's arm32 xenheap).
    pub no_gib_blocks: bool,
}

impl MapFlags {
    /// Pages only, no contiguous hint.
    pub const PAGES: MapFlags = MapFlags {
        blocks: false,
        contiguous: false,
        no_gib_blocks: false,
    };
    /// Blocks allowed, no contiguous hint.
    pub const BLOCKS: MapFlags = MapFlags {
        blocks: true,
        contiguous: false,
        no_gib_blocks: false,
    };
    /// Blocks and the contiguous hint allowed.
    pub const BLOCKS_CONTIG: MapFlags = MapFlags {
        blocks: true,
        contiguous: true,
        no_gib_blocks: false,
    };
    /// 2 MiB blocks with the contiguous hint, no 1 GiB blocks: the arm32
    /// xenheap's shape.
    pub const BLOCKS_2M_CONTIG: MapFlags = MapFlags {
        blocks: true,
        contiguous: true,
        no_gib_blocks: true,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rwx_is_refused() {
        assert_eq!(
            Perm::from_rwx(true, true),
            Err(crate::Error::WritableAndExecutable)
        );
        assert_eq!(Perm::from_rwx(true, false), Ok(Perm::Rw));
    }

    #[test]
    fn executable_device_is_refused() {
        assert_eq!(
            Attrs::new(MemType::DeviceNgnre, Perm::Rx),
            Err(crate::Error::ExecutableDevice)
        );
        assert_eq!(
            Attrs::new(MemType::NormalNc, Perm::Rx),
            Err(crate::Error::ExecutableDevice)
        );
        assert!(Attrs::new(MemType::Normal, Perm::Rx).is_ok());
    }

    #[test]
    fn mair_value_matches_the_index_table() {
        let byte = |i: u8| (MAIR_VALUE >> (8 * i)) as u8;
        assert_eq!(byte(0), 0x00);
        assert_eq!(byte(1), 0x44);
        assert_eq!(byte(2), 0xaa);
        assert_eq!(byte(3), 0xee);
        assert_eq!(byte(4), 0x04);
        assert_eq!(byte(7), 0xff);
    }
}
