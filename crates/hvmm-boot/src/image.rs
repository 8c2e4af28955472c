//! What the boot sequence knows about the hypervisor image: its sections and
//! its static tables, as link-time addresses (linker symbols on hardware, a
//! synthetic layout on the machine model).

use hvmm::layout::XEN_VIRT_START;
use hvmm::{Perm, Vaddr};

/// A page-aligned range of the image with one permission.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// Name shown in logs.
    pub name: &'static str,
    /// First byte.
    pub start: Vaddr,
    /// One past the last byte (page aligned).
    pub end: Vaddr,
    /// Runtime permission.
    pub perm: Perm,
}

/// The static translation tables inside the image (each one page, in BSS).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StaticTables {
    /// The boot tables' root, built by the head.
    pub boot_root: Vaddr,
    /// Runtime root (arm64 L0, arm32 CPU 0's L1).
    pub root: Vaddr,
    /// Runtime L1 (arm64 only; on arm32 the root is the L1).
    pub l1: Option<Vaddr>,
    /// Runtime L2 covering VA 0..1 GiB.
    pub l2: Vaddr,
    /// Runtime L3 mapping the image.
    pub image_l3: Vaddr,
    /// The fixmap's L3, shared by the boot and runtime tables.
    pub fixmap_l3: Vaddr,
    /// First byte of the region holding every static table.
    pub first: Vaddr,
    /// One past the last byte of that region.
    pub last: Vaddr,
}

/// The image's layout.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ImageLayout {
    /// `_start`: the link address.
    pub start: Vaddr,
    /// `_end` (page aligned; itself not mapped).
    pub end: Vaddr,
    /// Sections in address order: text, rodata, init, data (with BSS).
    pub sections: [Section; 4],
    /// Index in `sections` of the init section, freed at the end of boot.
    pub init: usize,
    /// The static tables.
    pub tables: StaticTables,
}

impl ImageLayout {
    /// Size in bytes.
    pub const fn size(&self) -> u64 {
        self.end.0 - self.start.0
    }

    /// The layout the machine model uses: the same section order and static
    /// tables as the bare-metal image, with fixed sizes.
    pub const fn model() -> ImageLayout {
        const fn va(off: u64) -> Vaddr {
            Vaddr(XEN_VIRT_START.0 + off)
        }
        let text_end = 0x3c000;
        let rodata_end = 0x4c000;
        let init_end = 0x54000;
        let data_end = 0x70000;
        let bss_tables = 0x58000;
        ImageLayout {
            start: XEN_VIRT_START,
            end: va(data_end),
            sections: [
                Section {
                    name: "text",
                    start: va(0),
                    end: va(text_end),
                    perm: Perm::Rx,
                },
                Section {
                    name: "rodata",
                    start: va(text_end),
                    end: va(rodata_end),
                    perm: Perm::Ro,
                },
                Section {
                    name: "init",
                    start: va(rodata_end),
                    end: va(init_end),
                    perm: Perm::Rx,
                },
                Section {
                    name: "data",
                    start: va(init_end),
                    end: va(data_end),
                    perm: Perm::Rw,
                },
            ],
            init: 2,
            tables: StaticTables {
                boot_root: va(bss_tables),
                root: va(bss_tables + 0x8000),
                l1: Some(va(bss_tables + 0x9000)),
                l2: va(bss_tables + 0xa000),
                image_l3: va(bss_tables + 0xb000),
                fixmap_l3: va(bss_tables + 0xc000),
                first: va(bss_tables),
                last: va(bss_tables + 0xd000),
            },
        }
    }
}
