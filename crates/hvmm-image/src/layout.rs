//! The image's own virtual layout (SPEC §3) and the linker symbols.

use hvmm::Vaddr;

/// Where the image is linked.
pub const XEN_VIRT_START: u64 = 0x0020_0000;
/// The fixmap: one L3 table (512 slots of 4 KiB) in the image.
pub const FIXMAP_VA: u64 = hvmm_xen::layout::FIXMAP_ADDR.0;
/// Byte offset in the boot L2 table of the entry that links the fixmap.
pub const FIXMAP_L2_OFF: usize = hvmm::format::table_index(FIXMAP_VA, 2) * 8;
/// Physical address of the PL011 on QEMU's `virt` machine.
pub const UART_PA: u64 = 0x0900_0000;
/// The deliberate-fault mode reads this address: inside the unmapped first
/// 2 MiB, so the walk stops at level 2 (no L3 table there).
pub const FAULT_VA: u64 = 0x0010_0bac;

extern "C" {
    static _start: u8;
    static _etext: u8;
    static _erodata: u8;
    static __init_end: u8;
    static __pgtables_start: u8;
    static __pgtables_end: u8;
    static runtime_root: u8;
    #[cfg(target_arch = "aarch64")]
    static runtime_l1: u8;
    static runtime_l2: u8;
    static runtime_l3: u8;
    static _end: u8;
    static boot_fixmap_l3: u8;
    static boot_root: u8;
    static boot_l2: u8;
    static boot_idmap: u8;
    static secondary_entry: u8;
    static boot_stacks: u8;
}

macro_rules! sym_va {
    ($(#[$m:meta])* $f:ident, $s:ident) => {
        $(#[$m])*
        pub fn $f() -> Vaddr {
            // Only the symbol's address is taken; nothing is read through it.
            // `black_box`: linker symbols may share an address (an empty
            // section), which the compiler would otherwise assume impossible
            // for distinct statics and fold comparisons accordingly.
            Vaddr(core::hint::black_box(&raw const $s) as usize as u64)
        }
    };
}

sym_va!(
    /// First byte of the image.
    image_start, _start);
sym_va!(
    /// End of text (page aligned).
    text_end, _etext);
sym_va!(
    /// End of read-only data (page aligned).
    rodata_end, _erodata);
sym_va!(
    /// End of the init section (page aligned).
    init_end, __init_end);
sym_va!(
    /// End of the image, BSS included (page aligned; itself unmapped).
    image_end, _end);
sym_va!(
    /// The fixmap's L3 table (in the image: written directly).
    fixmap_l3, boot_fixmap_l3);
sym_va!(
    /// The boot root table (TTBR0_EL2 / HTTBR points at it).
    boot_root_table, boot_root);
sym_va!(
    /// The boot tables' L2 table covering VA 0–1 GiB.
    boot_l2_table, boot_l2);
sym_va!(
    /// The head's record of the identity map: the link VA of its entry in
    /// the boot tables (0: none), that entry's value, the PA of the
    /// MMU-enable code.
    idmap_record, boot_idmap);
sym_va!(
    /// The secondary CPUs' entry point (runs at its physical address).
    secondary_entry_va, secondary_entry);

sym_va!(
    /// The CPUs' boot stack slots (`STACK_SIZE` each, CPU 0 first; each
    /// begins with its guard page).
    boot_stacks_va, boot_stacks);
sym_va!(
    /// First byte of the static tables region.
    tables_first, __pgtables_start);
sym_va!(
    /// One past the static tables region.
    tables_last, __pgtables_end);
sym_va!(
    /// The runtime root table (arm64 L0, arm32 CPU 0's L1), in the image.
    runtime_root_table, runtime_root);
#[cfg(target_arch = "aarch64")]
sym_va!(
    /// The runtime L1 table (arm64 only).
    runtime_l1_table, runtime_l1);
sym_va!(
    /// The runtime L2 table covering VA 0–1 GiB.
    runtime_l2_table, runtime_l2);
sym_va!(
    /// The first of the runtime L3 tables mapping the image's VA range.
    runtime_l3_table, runtime_l3);

/// The image's layout, as the shared boot sequence sees it, from the linker
/// symbols.
pub fn image_layout() -> hvmm_boot::ImageLayout {
    #[cfg(target_arch = "aarch64")]
    let l1 = Some(runtime_l1_table());
    #[cfg(not(target_arch = "aarch64"))]
    let l1 = None;
    let tables = hvmm_boot::image::StaticTables {
        boot_root: boot_root_table(),
        boot_l2: boot_l2_table(),
        idmap_record: idmap_record(),
        root: runtime_root_table(),
        l1,
        l2: runtime_l2_table(),
        image_l3: runtime_l3_table(),
        fixmap_l3: fixmap_l3(),
        first: tables_first(),
        last: tables_last(),
    };
    let stacks = hvmm_boot::image::Stacks {
        first: boot_stacks_va(),
        slot: crate::STACK_SIZE as u64,
        cpus: crate::MAX_CPUS,
    };
    hvmm_boot::ImageLayout::from_bounds(
        image_start(),
        text_end(),
        rodata_end(),
        init_end(),
        image_end(),
        tables,
        stacks,
    )
}
