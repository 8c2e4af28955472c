//! The image's own virtual layout (SPEC §3) and the linker symbols.

use hvmm::Vaddr;

/// Where the image is linked.
pub const XEN_VIRT_START: u64 = 0x0020_0000;
/// The fixmap: one L3 table (512 slots of 4 KiB) in the image.
pub const FIXMAP_VA: u64 = 0x0040_0000;
/// Physical address of the PL011 on QEMU's `virt` machine.
pub const UART_PA: u64 = 0x0900_0000;
/// The deliberate-fault mode reads this address: inside the unmapped first
/// 2 MiB, so the walk stops at level 2 (no L3 table there).
pub const FAULT_VA: u64 = 0x0010_0bac;

extern "C" {
    static _start: u8;
    static _etext: u8;
    static _erodata: u8;
    static __init_begin: u8;
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
    static boot_idmap_slot: u8;
    static boot_idmap_val: u8;
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
    /// Start of the init section (page aligned).
    init_begin, __init_begin);
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
    /// The head's record of the identity-map entry: its VA (0: none).
    idmap_slot, boot_idmap_slot);
sym_va!(
    /// The head's record of the identity-map entry: its value.
    idmap_val, boot_idmap_val);
sym_va!(
    /// The secondary CPUs' entry point (runs at its physical address).
    secondary_entry_va, secondary_entry);

sym_va!(
    /// The CPUs' boot stacks (`STACK_SIZE` each, CPU 0 first).
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
    /// The runtime L3 table mapping the image.
    runtime_l3_table, runtime_l3);

/// Every link-time address the shared boot sequence needs about the image
/// (what `hvmm_boot::ImageLayout` holds): section bounds, in address order
/// text (RX), rodata (RO), init (RX, freed at the end of boot), data + BSS +
/// tables (RW); and the static tables, one page each, in
/// `[tables_first, tables_last)`.
#[derive(Debug, Clone, Copy)]
pub struct ImageSymbols {
    /// `_start` (the link address).
    pub start: Vaddr,
    /// `_etext`.
    pub text_end: Vaddr,
    /// `_erodata`.
    pub rodata_end: Vaddr,
    /// `__init_begin` (= `_erodata`).
    pub init_begin: Vaddr,
    /// `__init_end`.
    pub init_end: Vaddr,
    /// `_end` (unmapped).
    pub end: Vaddr,
    /// The head's boot root table.
    pub boot_root: Vaddr,
    /// The runtime root.
    pub root: Vaddr,
    /// The runtime L1 (arm64 only).
    pub l1: Option<Vaddr>,
    /// The runtime L2 (VA 0–1 GiB).
    pub l2: Vaddr,
    /// The runtime L3 of the image.
    pub image_l3: Vaddr,
    /// The fixmap L3 (shared by boot and runtime tables).
    pub fixmap_l3: Vaddr,
    /// First byte of the tables region.
    pub tables_first: Vaddr,
    /// One past its last byte.
    pub tables_last: Vaddr,
}

impl ImageSymbols {
    /// Checks the order and alignment the boot sequence relies on.
    pub fn check(&self) -> Result<(), &'static str> {
        let page = |v: Vaddr| v.is_aligned(hvmm::PAGE_SIZE);
        let order = [
            self.start,
            self.text_end,
            self.rodata_end,
            self.init_end,
            self.tables_first,
            self.tables_last,
            self.end,
        ];
        if order.windows(2).any(|w| w[0] > w[1]) || self.init_begin != self.rodata_end {
            return Err("sections out of order");
        }
        if !order.iter().all(|&v| page(v)) {
            return Err("section bound not page aligned");
        }
        let tables = [
            Some(self.boot_root),
            Some(self.root),
            self.l1,
            Some(self.l2),
            Some(self.image_l3),
            Some(self.fixmap_l3),
        ];
        for t in tables.into_iter().flatten() {
            if !page(t) || t < self.tables_first || t.0 + hvmm::PAGE_SIZE > self.tables_last.0 {
                return Err("static table outside the tables region or misaligned");
            }
        }
        Ok(())
    }

    /// Reads the linker symbols.
    pub fn get() -> Self {
        #[cfg(target_arch = "aarch64")]
        let l1 = Some(runtime_l1_table());
        #[cfg(not(target_arch = "aarch64"))]
        let l1 = None;
        ImageSymbols {
            start: image_start(),
            text_end: text_end(),
            rodata_end: rodata_end(),
            init_begin: init_begin(),
            init_end: init_end(),
            end: image_end(),
            boot_root: boot_root_table(),
            root: runtime_root_table(),
            l1,
            l2: runtime_l2_table(),
            image_l3: runtime_l3_table(),
            fixmap_l3: fixmap_l3(),
            tables_first: tables_first(),
            tables_last: tables_last(),
        }
    }
}
