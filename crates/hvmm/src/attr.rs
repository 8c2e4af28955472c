//! Memory types (MAIR indices), permissions and mapping flags.
//!
//! Permissions are an enum of the three a hypervisor may use: read-only,
//! read-execute and read-write. Read-write-execute has no variant, so it cannot
//! be requested by accident; [`Perm::from_rwx`] refuses it by name when a
//! caller holds separate bits.

use core::fmt;

/// A stage-1 memory type. Which MAIR index holds it is the table's
/// [`MairMap`]; [`MemType::index`] is its index in Xen's layout
/// ([`MairMap::XEN`], the default), kept so that page-table dumps compare
/// with Xen's.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MemType {
    /// Device-nGnRnE (MAIR byte 0x00); Xen index 0.
    DeviceNgnrne = 0,
    /// Normal non-cacheable, used for write-combine (MAIR byte 0x44); Xen index 1.
    NormalNc = 1,
    /// Normal write-through (MAIR byte 0xaa); Xen index 2.
    NormalWt = 2,
    /// Normal write-back, no write-allocate (MAIR byte 0xee); Xen index 3.
    NormalWb = 3,
    /// Device-nGnRE (MAIR byte 0x04); Xen index 4.
    DeviceNgnre = 4,
    /// Normal write-back read/write-allocate (MAIR byte 0xff); Xen index 7:
    /// the hypervisor's own memory.
    Normal = 7,
}

/// Every [`MemType`], in a fixed order (the order of [`MemType::ordinal`]).
const MEM_TYPES: [MemType; 6] = [
    MemType::DeviceNgnrne,
    MemType::NormalNc,
    MemType::NormalWt,
    MemType::NormalWb,
    MemType::DeviceNgnre,
    MemType::Normal,
];

impl MemType {
    /// The index of this type in Xen's MAIR layout ([`MairMap::XEN`]).
    pub const fn index(self) -> u8 {
        self as u8
    }
    /// The memory type at `i` in Xen's MAIR layout, if it has one there.
    pub const fn from_index(i: u8) -> Option<MemType> {
        MairMap::XEN.mem_at(i)
    }
    /// The MAIR attribute byte of this type.
    pub const fn mair_byte(self) -> u8 {
        match self {
            MemType::DeviceNgnrne => 0x00,
            MemType::NormalNc => 0x44,
            MemType::NormalWt => 0xaa,
            MemType::NormalWb => 0xee,
            MemType::DeviceNgnre => 0x04,
            MemType::Normal => 0xff,
        }
    }
    /// Position in [`MEM_TYPES`].
    #[inline(always)]
    const fn ordinal(self) -> usize {
        match self {
            MemType::DeviceNgnrne => 0,
            MemType::NormalNc => 1,
            MemType::NormalWt => 2,
            MemType::NormalWb => 3,
            MemType::DeviceNgnre => 4,
            MemType::Normal => 5,
        }
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

impl fmt::Display for MemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemType::DeviceNgnrne => "Device-nGnRnE",
            MemType::NormalNc => "Normal-NC",
            MemType::NormalWt => "Normal-WT",
            MemType::NormalWb => "Normal-WB",
            MemType::DeviceNgnre => "Device-nGnRE",
            MemType::Normal => "Normal",
        })
    }
}

/// Which MAIR index holds which [`MemType`] for a stage-1 table, and the MAIR
/// value (MAIR_EL2, or HMAIR1:HMAIR0 on arm32) that goes with it. The CPU's
/// MAIR register must hold [`MairMap::value`] while the table is live.
///
/// Xen's layout is the default ([`MairMap::XEN`]); [`MairMap::new`] builds
/// another one. Types a map leaves out cannot be mapped through it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct MairMap {
    /// Index of each type (by ordinal), 0xff when absent.
    index: [u8; 6],
}

/// Marks a type absent from a [`MairMap`].
const ABSENT: u8 = 0xff;

impl MairMap {
    /// Xen's layout: 0 Device-nGnRnE, 1 Normal-NC, 2 Normal-WT, 3 Normal-WB,
    /// 4 Device-nGnRE, 7 Normal (write-back, read/write-allocate).
    pub const XEN: MairMap = MairMap {
        index: [0, 1, 2, 3, 4, 7],
    };

    /// A map from `(index, type)` pairs: each index below 8 and used once,
    /// each type placed once.
    pub const fn new(entries: &[(u8, MemType)]) -> Result<MairMap, crate::Error> {
        let mut index = [ABSENT; 6];
        let mut used = [false; 8];
        let mut i = 0;
        while i < entries.len() {
            let (idx, mem) = entries[i];
            if idx >= 8 {
                return Err(crate::Error::BadMairMap { index: idx });
            }
            if used[idx as usize] || index[mem.ordinal()] != ABSENT {
                return Err(crate::Error::BadMairMap { index: idx });
            }
            used[idx as usize] = true;
            index[mem.ordinal()] = idx;
            i += 1;
        }
        Ok(MairMap { index })
    }

    /// The index that holds `mem`, if the map has it.
    #[inline(always)]
    pub const fn index_of(&self, mem: MemType) -> Option<u8> {
        match self.index[mem.ordinal()] {
            ABSENT => None,
            i => Some(i),
        }
    }

    /// The type at index `i`, if any.
    pub const fn mem_at(&self, i: u8) -> Option<MemType> {
        if i >= 8 {
            return None;
        }
        let mut k = 0;
        while k < MEM_TYPES.len() {
            if self.index[k] == i {
                return Some(MEM_TYPES[k]);
            }
            k += 1;
        }
        None
    }

    /// The MAIR register value: each present type's attribute byte at its
    /// index, zero (Device-nGnRnE) elsewhere.
    pub const fn value(&self) -> u64 {
        let mut v = 0u64;
        let mut k = 0;
        while k < MEM_TYPES.len() {
            if self.index[k] != ABSENT {
                v |= (MEM_TYPES[k].mair_byte() as u64) << (8 * self.index[k] as u32);
            }
            k += 1;
        }
        v
    }
}

impl Default for MairMap {
    fn default() -> Self {
        MairMap::XEN
    }
}

/// The MAIR value of Xen's layout ([`MairMap::XEN`]).
pub const MAIR_VALUE: u64 = MairMap::XEN.value();

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

/// The attributes of a leaf of some translation regime: stage-1 [`Attrs`]
/// or stage-2 [`S2Attrs`]. A table's format names the one it takes
/// ([`crate::Format::Attrs`]), so one cannot be handed to a table of the
/// other stage.
pub trait LeafAttrs:
    Copy + PartialEq + Eq + fmt::Debug + fmt::Display + Send + Sync + 'static
{
    /// The descriptor bits that carry these attributes: everything but the
    /// valid and type bits, the output address and the contiguous hint.
    /// A stage-1 memory type that `mair` does not hold is refused.
    fn leaf_bits(self, mair: &MairMap) -> Result<u64, crate::Error>;
    /// The attributes a leaf descriptor carries, if they are ones this type
    /// can express.
    fn from_leaf_bits(pte: u64, mair: &MairMap) -> Option<Self>;
    /// The bits a permission change ([`crate::Op::Modify`]) rewrites.
    const PERM_MASK: u64;
    /// The bits that name the memory type (a Modify must keep them).
    const MEM_MASK: u64;
}

/// Shareability and access-flag bits of a leaf (bits \[9:8\] and 10).
const SH_INNER: u64 = 3 << 8;
const SH_OUTER: u64 = 2 << 8;
const AF: u64 = 1 << 10;
/// Execute-never (bit 54), in both stages.
const XN: u64 = 1 << 54;

impl LeafAttrs for Attrs {
    #[inline(always)]
    fn leaf_bits(self, mair: &MairMap) -> Result<u64, crate::Error> {
        let Some(idx) = mair.index_of(self.mem) else {
            return Err(crate::Error::MemTypeNotInMair(self.mem));
        };
        // AP[1] is RES1 at EL2 / HYP.
        let mut v = AF | (1 << 6) | (u64::from(idx) << 2);
        v |= if self.mem.is_device() {
            SH_OUTER
        } else {
            SH_INNER
        };
        v |= match self.perm {
            Perm::Ro => (1 << 7) | XN,
            Perm::Rx => 1 << 7,
            Perm::Rw => XN,
        };
        Ok(v)
    }
    #[inline]
    fn from_leaf_bits(pte: u64, mair: &MairMap) -> Option<Self> {
        let mem = mair.mem_at(((pte >> 2) & 7) as u8)?;
        let perm = match (pte & (1 << 7) != 0, pte & XN != 0) {
            (true, true) => Perm::Ro,
            (true, false) => Perm::Rx,
            (false, true) => Perm::Rw,
            (false, false) => return None,
        };
        Attrs::new(mem, perm).ok()
    }
    const PERM_MASK: u64 = (1 << 7) | XN;
    const MEM_MASK: u64 = 7 << 2;
}

/// Stage-2 access permission (S2AP, descriptor bits \[7:6\]): what the guest
/// may do with the page.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum S2Access {
    /// No access (S2AP = 0b00): the entry is valid, every access faults.
    None,
    /// Read only (0b01).
    Ro,
    /// Write only (0b10).
    Wo,
    /// Read and write (0b11).
    Rw,
}

impl S2Access {
    /// The S2AP field value.
    pub const fn bits(self) -> u64 {
        match self {
            S2Access::None => 0,
            S2Access::Ro => 1,
            S2Access::Wo => 2,
            S2Access::Rw => 3,
        }
    }
    /// The access for an S2AP field value.
    pub const fn from_bits(b: u64) -> S2Access {
        match b & 3 {
            0 => S2Access::None,
            1 => S2Access::Ro,
            2 => S2Access::Wo,
            _ => S2Access::Rw,
        }
    }
    /// Whether reads are allowed.
    pub const fn readable(self) -> bool {
        matches!(self, S2Access::Ro | S2Access::Rw)
    }
    /// Whether writes are allowed.
    pub const fn writable(self) -> bool {
        matches!(self, S2Access::Wo | S2Access::Rw)
    }
}

/// Stage-2 memory type, in the stage-2 MemAttr encoding (descriptor bits
/// \[5:2\], without FEAT_S2FWB): the guest's own stage-1 attributes combine
/// with it, the stronger type winning.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum S2MemType {
    /// Device-nGnRnE (MemAttr 0b0000).
    DeviceNgnrne,
    /// Device-nGnRE (MemAttr 0b0001).
    DeviceNgnre,
    /// Normal, outer and inner non-cacheable (0b0101).
    NormalNc,
    /// Normal, outer and inner write-through (0b1010).
    NormalWt,
    /// Normal, outer and inner write-back (0b1111): guest RAM.
    NormalWb,
}

impl S2MemType {
    /// The MemAttr field value.
    pub const fn bits(self) -> u64 {
        match self {
            S2MemType::DeviceNgnrne => 0b0000,
            S2MemType::DeviceNgnre => 0b0001,
            S2MemType::NormalNc => 0b0101,
            S2MemType::NormalWt => 0b1010,
            S2MemType::NormalWb => 0b1111,
        }
    }
    /// The type for a MemAttr field value, if it is one of these.
    pub const fn from_bits(b: u64) -> Option<S2MemType> {
        Some(match b & 0xf {
            0b0000 => S2MemType::DeviceNgnrne,
            0b0001 => S2MemType::DeviceNgnre,
            0b0101 => S2MemType::NormalNc,
            0b1010 => S2MemType::NormalWt,
            0b1111 => S2MemType::NormalWb,
            _ => return None,
        })
    }
    /// Whether this is a device type.
    pub const fn is_device(self) -> bool {
        matches!(self, S2MemType::DeviceNgnrne | S2MemType::DeviceNgnre)
    }
}

/// The attributes of a stage-2 (guest) leaf: memory type, access and
/// whether the guest may execute from it. Built with [`S2Attrs::new`], which
/// refuses executable device memory, or the named constants. Writable and
/// executable together is allowed here: it is the guest's own stage 1 that
/// decides W^X for the guest.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct S2Attrs {
    mem: S2MemType,
    access: S2Access,
    exec: bool,
}

impl S2Attrs {
    /// Checked constructor: device memory must not be executable.
    pub const fn new(
        mem: S2MemType,
        access: S2Access,
        exec: bool,
    ) -> Result<S2Attrs, crate::Error> {
        if mem.is_device() && exec {
            return Err(crate::Error::ExecutableDevice);
        }
        Ok(S2Attrs { mem, access, exec })
    }
    /// Guest RAM: write-back, read-write, executable.
    pub const RAM: S2Attrs = S2Attrs {
        mem: S2MemType::NormalWb,
        access: S2Access::Rw,
        exec: true,
    };
    /// Guest RAM made read-only (dirty tracking, write protection), executable.
    pub const RAM_RO: S2Attrs = S2Attrs {
        mem: S2MemType::NormalWb,
        access: S2Access::Ro,
        exec: true,
    };
    /// A device given to the guest: Device-nGnRE, read-write, never executable.
    pub const DEVICE: S2Attrs = S2Attrs {
        mem: S2MemType::DeviceNgnre,
        access: S2Access::Rw,
        exec: false,
    };
    /// The memory type.
    pub const fn mem(self) -> S2MemType {
        self.mem
    }
    /// The access permission.
    pub const fn access(self) -> S2Access {
        self.access
    }
    /// Whether the guest may execute from it.
    pub const fn executable(self) -> bool {
        self.exec
    }
    /// The same memory type with another access and execute permission
    /// (checked like [`S2Attrs::new`]).
    pub const fn with_access(self, access: S2Access, exec: bool) -> Result<S2Attrs, crate::Error> {
        S2Attrs::new(self.mem, access, exec)
    }
}

impl fmt::Display for S2Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let access = match self.access {
            S2Access::None => "--",
            S2Access::Ro => "R-",
            S2Access::Wo => "-W",
            S2Access::Rw => "RW",
        };
        let x = if self.exec { "X" } else { "-" };
        write!(f, "{access}{x} {:?}", self.mem)
    }
}

impl LeafAttrs for S2Attrs {
    #[inline(always)]
    fn leaf_bits(self, _mair: &MairMap) -> Result<u64, crate::Error> {
        let sh = if self.mem.is_device() { 0 } else { SH_INNER };
        let xn = if self.exec { 0 } else { XN };
        Ok(AF | sh | (self.access.bits() << 6) | (self.mem.bits() << 2) | xn)
    }
    #[inline]
    fn from_leaf_bits(pte: u64, _mair: &MairMap) -> Option<Self> {
        let mem = S2MemType::from_bits(pte >> 2)?;
        S2Attrs::new(mem, S2Access::from_bits(pte >> 6), pte & XN == 0).ok()
    }
    const PERM_MASK: u64 = (3 << 6) | XN;
    const MEM_MASK: u64 = 0xf << 2;
}

/// What the caller allows the engine to use when it maps, and whether it may
/// merge. The flags say what *new* mappings may use; Modify and Remove act on
/// whatever is mapped, at whatever level, and split what they cover in part.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct MapFlags {
    /// Insert: use 1 GiB / 2 MiB block entries where `va` and `pa` are
    /// aligned and enough pages remain. Merge: the block sizes it may make.
    pub blocks: bool,
    /// Insert: set the contiguous hint on runs of 16 entries aligned to 16 ×
    /// the entry size.
    pub contiguous: bool,
    /// With `blocks`: 2 MiB blocks only, never 1 GiB (Xen's arm32 xenheap).
    pub no_gib_blocks: bool,
    /// With `blocks`: after the update, a table the update went through whose
    /// whole span now maps one aligned, physically contiguous range with one
    /// set of attributes is replaced by a block (break-before-make; the
    /// table is freed after the invalidation).
    pub merge: bool,
}

impl MapFlags {
    /// Pages only, no contiguous hint.
    pub const PAGES: MapFlags = MapFlags {
        blocks: false,
        contiguous: false,
        no_gib_blocks: false,
        merge: false,
    };
    /// Blocks allowed, no contiguous hint.
    pub const BLOCKS: MapFlags = MapFlags {
        blocks: true,
        contiguous: false,
        no_gib_blocks: false,
        merge: false,
    };
    /// Blocks and the contiguous hint allowed.
    pub const BLOCKS_CONTIG: MapFlags = MapFlags {
        blocks: true,
        contiguous: true,
        no_gib_blocks: false,
        merge: false,
    };
    /// 2 MiB blocks with the contiguous hint, no 1 GiB blocks: the arm32
    /// xenheap's shape.
    pub const BLOCKS_2M_CONTIG: MapFlags = MapFlags {
        blocks: true,
        contiguous: true,
        no_gib_blocks: true,
        merge: false,
    };
    /// Blocks allowed, and uniform tables merged back into blocks.
    pub const BLOCKS_MERGE: MapFlags = MapFlags {
        blocks: true,
        contiguous: false,
        no_gib_blocks: false,
        merge: true,
    };

    /// Whether a block may be made at `level` (1 GiB at 1, 2 MiB at 2).
    pub const fn block_at(self, level: u8) -> bool {
        self.blocks && (level == 2 || (level == 1 && !self.no_gib_blocks))
    }
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

    #[test]
    fn a_custom_mair_map_places_types_where_it_says() {
        let map = MairMap::new(&[(0, MemType::Normal), (1, MemType::DeviceNgnre)]).unwrap();
        assert_eq!(map.value(), 0x04ff);
        assert_eq!(map.index_of(MemType::Normal), Some(0));
        assert_eq!(map.index_of(MemType::NormalWt), None);
        assert_eq!(map.mem_at(1), Some(MemType::DeviceNgnre));
        assert_eq!(map.mem_at(2), None);
        let rw = Attrs::RW.leaf_bits(&map).unwrap();
        assert_eq!((rw >> 2) & 7, 0);
        assert_eq!(Attrs::from_leaf_bits(rw, &map), Some(Attrs::RW));
        assert_eq!(
            Attrs::WC.leaf_bits(&map),
            Err(crate::Error::MemTypeNotInMair(MemType::NormalNc))
        );
    }

    #[test]
    fn a_mair_map_refuses_a_reused_index_or_type_and_indices_past_7() {
        let bad = crate::Error::BadMairMap { index: 0 };
        assert_eq!(
            MairMap::new(&[(0, MemType::Normal), (0, MemType::NormalWb)]),
            Err(bad)
        );
        assert_eq!(
            MairMap::new(&[(1, MemType::Normal), (0, MemType::Normal)]),
            Err(bad)
        );
        assert_eq!(
            MairMap::new(&[(8, MemType::Normal)]),
            Err(crate::Error::BadMairMap { index: 8 })
        );
    }

    #[test]
    fn stage2_encodings_follow_the_architecture() {
        // Normal WB (MemAttr 0b1111), S2AP RW, AF, inner shareable, XN clear.
        let ram = S2Attrs::RAM.leaf_bits(&MairMap::XEN).unwrap();
        assert_eq!(ram, (0b1111 << 2) | (3 << 6) | (3 << 8) | (1 << 10));
        let ro = S2Attrs::RAM_RO.leaf_bits(&MairMap::XEN).unwrap();
        assert_eq!((ro >> 6) & 3, 0b01, "read-only is S2AP 01, never 11");
        let dev = S2Attrs::DEVICE.leaf_bits(&MairMap::XEN).unwrap();
        assert_eq!((dev >> 2) & 0xf, 0b0001);
        assert_ne!(dev & (1 << 54), 0);
        for access in [S2Access::None, S2Access::Ro, S2Access::Wo, S2Access::Rw] {
            let a = S2Attrs::new(S2MemType::NormalWb, access, false).unwrap();
            let bits = a.leaf_bits(&MairMap::XEN).unwrap();
            assert_eq!(S2Attrs::from_leaf_bits(bits, &MairMap::XEN), Some(a));
        }
        assert_eq!(
            S2Attrs::new(S2MemType::DeviceNgnrne, S2Access::Ro, true),
            Err(crate::Error::ExecutableDevice)
        );
    }
}
