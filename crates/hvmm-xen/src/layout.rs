//! The hypervisor's virtual layout (Xen 4.13 shaped, with Xen 4.18's 8 MiB
//! image) for both architectures.
//!
//! The image may be loaded at any 4 KiB-aligned physical address: its boot
//! tables hold only the image at its link address and, for the few
//! instructions that turn the MMU on, an identity map of one page. That
//! page is the image's first page, or its last when the load address lies
//! just above the link address, so the identity page never falls on a page
//! the image mapping uses. The runtime tables never hold an identity map, so
//! nothing in this layout constrains where the image is loaded.

use hvmm::addr::Vaddr;
use hvmm::format::{Arm32, Arm64};

/// Where the image is linked.
pub const XEN_VIRT_START: Vaddr = Vaddr(0x0020_0000);
/// The image must fit in this many bytes (as Xen 4.18+: 8 MiB, four L3
/// tables' worth; the boot tables map exactly the image).
pub const XEN_VIRT_SIZE: u64 = 8 << 20;
/// Number of level-3 tables that map the image's VA range.
pub const IMAGE_L3_TABLES: usize = (XEN_VIRT_SIZE >> 21) as usize;
/// Start of the fixmap: one L3 table, static in the image.
pub const FIXMAP_ADDR: Vaddr = Vaddr(0x00a0_0000);
/// Fixmap slot of the console UART.
pub const FIXMAP_CONSOLE: usize = 0;
/// Fixmap slot used by `copy_from_paddr` and other short-lived mappings.
pub const FIXMAP_MISC: usize = 1;
/// First PMAP slot.
pub const FIXMAP_PMAP_BEGIN: usize = 2;
/// Number of PMAP slots.
pub const NUM_PMAP: usize = 8;
/// First ACPI slot (after the PMAP slots).
pub const FIXMAP_ACPI_BEGIN: usize = FIXMAP_PMAP_BEGIN + NUM_PMAP;
/// Number of fixmap slots in use (the rest of the L3 table is free).
pub const FIXMAP_SLOTS: usize = FIXMAP_ACPI_BEGIN + 4;
/// Where the DTB is mapped in early boot (4 MiB: a DTB of up to 2 MiB may straddle a 2 MiB boundary).
pub const BOOT_FDT_VIRT_START: Vaddr = Vaddr(0x00c0_0000);
/// Size of the early FDT window.
pub const BOOT_FDT_VIRT_SIZE: u64 = 4 << 20;
/// Largest DTB accepted.
pub const MAX_FDT_SIZE: u64 = 2 << 20;
/// Boot relocation area.
pub const BOOT_RELOC_VIRT_START: Vaddr = Vaddr(0x0100_0000);

/// VA of a fixmap slot.
pub const fn fixmap_va(slot: usize) -> Vaddr {
    Vaddr(FIXMAP_ADDR.0 + (slot as u64) * 4096)
}

/// A named region of the virtual layout.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// Name shown in logs.
    pub name: &'static str,
    /// First address.
    pub start: Vaddr,
    /// Size in bytes.
    pub size: u64,
}

impl Region {
    /// One past the last address.
    pub const fn end(&self) -> u64 {
        self.start.0 + self.size
    }
    /// Whether `va` is inside.
    pub const fn contains(&self, va: Vaddr) -> bool {
        va.0 >= self.start.0 && va.0 - self.start.0 < self.size
    }
}

/// The layout of one architecture.
#[derive(Copy, Clone, Debug)]
pub struct Layout {
    /// Frametable (one page-info structure per frame).
    pub frametable: Region,
    /// vmap area.
    pub vmap: Region,
    /// arm32 xenheap, always mapped with 2 MiB contiguous blocks.
    pub xenheap: Option<Region>,
    /// arm32 domheap: per-CPU 2 MiB `map_domain_page` slots.
    pub domheap: Option<Region>,
    /// arm64 direct map of all RAM (the default mode; absent in the
    /// secret-free mode).
    pub directmap: Option<Region>,
    /// arm64 per-CPU mapcache of the secret-free mode: 4 KiB slots at the
    /// same VA in every CPU's root, each CPU's own (see [`MAPCACHE_L0_SLOT`]).
    pub mapcache: Option<Region>,
}

impl Layout {
    /// The fixed low regions shared by both architectures.
    pub const COMMON: [Region; 4] = [
        Region {
            name: "xen",
            start: XEN_VIRT_START,
            size: XEN_VIRT_SIZE,
        },
        Region {
            name: "fixmap",
            start: FIXMAP_ADDR,
            size: 2 << 20,
        },
        Region {
            name: "early-fdt",
            start: BOOT_FDT_VIRT_START,
            size: BOOT_FDT_VIRT_SIZE,
        },
        Region {
            name: "boot-reloc",
            start: BOOT_RELOC_VIRT_START,
            size: 2 << 20,
        },
    ];
}

/// Number of 2 MiB entries covering the arm32 domheap area: two level-2
/// tables per CPU.
pub const DOMHEAP_ENTRIES: usize = 1024;
/// The domheap entry that links each CPU's window table instead of
/// mapping a slot: the last one. Through it the CPU reaches its own two
/// domheap level-2 tables (and the window table itself), so that writing a
/// slot needs no other mapping of them — none in the xenheap.
pub const DOMHEAP_WINDOW: usize = DOMHEAP_ENTRIES - 1;
/// Domain-page slots per CPU on arm32: every domheap entry but the window's.
pub const DOMHEAP_SLOTS: usize = DOMHEAP_WINDOW;
/// Entries of the window table (level 3, at the window entry's 2 MiB): the
/// two domheap level-2 tables, then the window table itself.
pub const DOMHEAP_WINDOW_PAGES: usize = 3;

/// The VA at which a CPU reads and writes its 1024 domheap entries: the
/// window entry's 2 MiB, whose first two pages map the two level-2 tables
/// (`domheap_start` is the domheap area's first VA).
pub const fn domheap_window_va(domheap_start: Vaddr) -> Vaddr {
    Vaddr(domheap_start.0 + ((DOMHEAP_WINDOW as u64) << 21))
}

/// The arm32 layout.
pub const ARM32_LAYOUT: Layout = Layout {
    frametable: Region {
        name: "frametable",
        start: Vaddr(0x0200_0000),
        size: 0x0e00_0000,
    },
    vmap: Region {
        name: "vmap",
        start: Vaddr(0x1000_0000),
        size: 0x3000_0000,
    },
    xenheap: Some(Region {
        name: "xenheap",
        start: Vaddr(0x4000_0000),
        size: 0x4000_0000,
    }),
    domheap: Some(Region {
        name: "domheap",
        start: Vaddr(0x8000_0000),
        size: 0x8000_0000,
    }),
    directmap: None,
    mapcache: None,
};

/// First L0 slot of the arm64 direct map.
pub const DIRECTMAP_SLOT: u64 = 256;
/// Number of 512 GiB L0 slots of the arm64 direct map: the whole upper half
/// of the 48-bit space, 128 TiB. Banks are packed into it (the holes between
/// them take no VA), so up to 128 TiB of RAM anywhere in the PA space is
/// reachable (Xen's direct map is 5 TiB, with PDX compressing the holes).
pub const DIRECTMAP_SLOTS: u64 = 256;

/// The arm64 layout.
pub const ARM64_LAYOUT: Layout = Layout {
    // Two L0 slots: 32 bytes per frame for 128 TiB of RAM, built per bank.
    frametable: Region {
        name: "frametable",
        start: Vaddr(1 << 39),
        size: 1 << 40,
    },
    vmap: Region {
        name: "vmap",
        start: Vaddr(1 << 30),
        size: 1 << 30,
    },
    xenheap: None,
    domheap: None,
    directmap: Some(Region {
        name: "directmap",
        start: Vaddr(DIRECTMAP_SLOT << 39),
        size: DIRECTMAP_SLOTS << 39,
    }),
    mapcache: Some(Region {
        name: "mapcache",
        start: Vaddr((MAPCACHE_L0_SLOT as u64) << 39),
        size: (MAPCACHE_ENTRIES as u64) << 12,
    }),
};

/// The level-0 slot (512 GiB) of the arm64 mapcache. In the secret-free
/// mode every CPU has its own root; this entry is the only one that
/// differs between them: each CPU's points at its own level-1, level-2 and
/// level-3 tables, so a slot's translation can be walked — and cached —
/// by that CPU alone. Every other level-0 entry is a copy of CPU 0's.
pub const MAPCACHE_L0_SLOT: usize = 3;
/// Entries of a CPU's mapcache level-3 table (4 KiB each).
pub const MAPCACHE_ENTRIES: usize = 512;
/// The entry of a CPU's mapcache level-3 table that maps that table
/// itself (read-write, never executable): the one permanent writable
/// mapping of a table page in the secret-free mode, and how the slots are
/// written.
pub const MAPCACHE_SELF: usize = MAPCACHE_ENTRIES - 1;
/// Slots a CPU can map frames into at once.
pub const MAPCACHE_SLOTS: usize = MAPCACHE_SELF;
/// Level-0 slots whose entries the secret-free mode shares between the
/// CPUs' roots (everything the layout maps below the mapcache: the image,
/// fixmap, early FDT and vmap in slot 0, the frametable in slots 1 and 2).
pub const SHARED_L0_SLOTS: usize = MAPCACHE_L0_SLOT;

/// A format together with its layout.
pub trait HasLayout: hvmm::format::Stage1Format {
    /// The layout.
    const LAYOUT: Layout;
    /// The stage-2 format of this architecture's guests (arm64: a 40-bit
    /// IPA space, as Xen's p2m on a 40-bit machine; arm32: LPAE's 40 bits).
    type Guest: hvmm::format::Stage2Format;
}

impl HasLayout for Arm64 {
    const LAYOUT: Layout = ARM64_LAYOUT;
    type Guest = hvmm::format::Arm64Stage2<40>;
}

impl HasLayout for Arm32 {
    const LAYOUT: Layout = ARM32_LAYOUT;
    type Guest = hvmm::format::Arm32Stage2;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_do_not_overlap() {
        for l in [ARM32_LAYOUT, ARM64_LAYOUT] {
            let mut all: std::vec::Vec<Region> = Layout::COMMON.to_vec();
            all.push(l.frametable);
            all.push(l.vmap);
            all.extend(l.xenheap);
            all.extend(l.domheap);
            all.extend(l.directmap);
            all.extend(l.mapcache);
            for (i, a) in all.iter().enumerate() {
                for b in &all[i + 1..] {
                    assert!(
                        a.end() <= b.start.0 || b.end() <= a.start.0,
                        "{a:?} overlaps {b:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn arm32_layout_fits_32_bits() {
        assert_eq!(ARM32_LAYOUT.domheap.unwrap().end(), 1 << 32);
        assert_eq!(
            ARM32_LAYOUT.domheap.unwrap().size,
            DOMHEAP_ENTRIES as u64 * (2 << 20)
        );
    }

    #[test]
    fn the_image_range_is_whole_level_3_tables_before_the_fixmap() {
        assert_eq!(XEN_VIRT_START.0 % (2 << 20), 0);
        assert_eq!(XEN_VIRT_SIZE % (2 << 20), 0);
        assert_eq!(XEN_VIRT_START.0 + XEN_VIRT_SIZE, FIXMAP_ADDR.0);
        assert_eq!(IMAGE_L3_TABLES, 4);
    }

    #[test]
    fn the_mapcache_has_its_own_level_0_slot_above_the_shared_ones() {
        let mc = ARM64_LAYOUT.mapcache.unwrap();
        assert_eq!(hvmm::format::table_index(mc.start.0, 0), MAPCACHE_L0_SLOT);
        assert_eq!(
            hvmm::format::table_index(mc.end() - 1, 0),
            MAPCACHE_L0_SLOT,
            "the mapcache lies in one level-0 slot"
        );
        assert_eq!(mc.size, 2 << 20, "one level-3 table of slots");
        for r in Layout::COMMON
            .iter()
            .chain([&ARM64_LAYOUT.frametable, &ARM64_LAYOUT.vmap])
        {
            assert!(
                hvmm::format::table_index(r.end() - 1, 0) < SHARED_L0_SLOTS,
                "{} lies below the mapcache's level-0 slot",
                r.name
            );
        }
    }

    #[test]
    fn fixmap_slots_fit_one_table() {
        const { assert!(FIXMAP_SLOTS <= 512) };
        assert_eq!(fixmap_va(FIXMAP_PMAP_BEGIN), Vaddr(0xa0_2000));
    }
}
