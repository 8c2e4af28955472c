//! What the boot sequence knows about the hypervisor image: its sections and
//! its static tables, as link-time addresses (linker symbols on hardware, a
//! synthetic layout on the machine model).

use hvmm::{Perm, Vaddr};
use hvmm_xen::layout::{IMAGE_L3_TABLES, XEN_VIRT_START};

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
    /// The boot tables' level-2 table covering VA 0..1 GiB (the image and
    /// the fixmap).
    pub boot_l2: Vaddr,
    /// The head's record of the identity map it made (16 bytes): the VA of
    /// the boot-table entry that holds it (0: none, the image runs at its
    /// load address) and that entry's value. Secondary CPUs need the entry
    /// back while they turn their MMU on.
    pub idmap_record: Vaddr,
    /// Runtime root (arm64 L0, arm32 CPU 0's L1).
    pub root: Vaddr,
    /// Runtime L1 (arm64 only; on arm32 the root is the L1).
    pub l1: Option<Vaddr>,
    /// Runtime L2 covering VA 0..1 GiB.
    pub l2: Vaddr,
    /// The first of the runtime L3 tables mapping the image's VA range
    /// ([`IMAGE_L3_TABLES`] consecutive pages, one per 2 MiB).
    pub image_l3: Vaddr,
    /// The fixmap's L3, shared by the boot and runtime tables.
    pub fixmap_l3: Vaddr,
    /// First byte of the region holding every static table.
    pub first: Vaddr,
    /// One past the last byte of that region.
    pub last: Vaddr,
}

/// The CPUs' boot stacks: `cpus` slots of `slot` bytes from `first`, inside
/// the data section. Each slot is a guard page, left unmapped by the
/// runtime tables (an overflow faults instead of writing what lies below),
/// then the stack, which grows down from the slot's end.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Stacks {
    /// First byte of CPU 0's slot (its guard page).
    pub first: Vaddr,
    /// Bytes per CPU: one guard page and the stack.
    pub slot: u64,
    /// Number of slots.
    pub cpus: usize,
}

impl Stacks {
    /// The guard page of CPU `cpu`'s stack.
    pub const fn guard(&self, cpu: usize) -> Vaddr {
        Vaddr(self.first.0 + cpu as u64 * self.slot)
    }
    /// One past the last slot.
    pub const fn end(&self) -> Vaddr {
        Vaddr(self.first.0 + self.cpus as u64 * self.slot)
    }
    /// Whether the page at `va` is a guard page.
    pub const fn is_guard(&self, va: Vaddr) -> bool {
        va.0 >= self.first.0
            && va.0 < self.end().0
            && (va.0 - self.first.0) % self.slot < hvmm::PAGE_SIZE
    }
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
    /// The CPUs' boot stacks and their guard pages.
    pub stacks: Stacks,
}

impl ImageLayout {
    /// Size in bytes.
    pub const fn size(&self) -> u64 {
        self.end.0 - self.start.0
    }

    /// Builds the layout from the link-time addresses (linker symbols), in
    /// address order: text (RX), rodata (RO), init (RX, freed at the end of
    /// boot), data + BSS + tables + stacks (RW, but for the stacks' guard
    /// pages) up to `end`.
    pub const fn from_bounds(
        start: Vaddr,
        text_end: Vaddr,
        rodata_end: Vaddr,
        init_end: Vaddr,
        end: Vaddr,
        tables: StaticTables,
        stacks: Stacks,
    ) -> ImageLayout {
        ImageLayout {
            start,
            end,
            sections: [
                Section {
                    name: "text",
                    start,
                    end: text_end,
                    perm: Perm::Rx,
                },
                Section {
                    name: "rodata",
                    start: text_end,
                    end: rodata_end,
                    perm: Perm::Ro,
                },
                Section {
                    name: "init",
                    start: rodata_end,
                    end: init_end,
                    perm: Perm::Rx,
                },
                Section {
                    name: "data",
                    start: init_end,
                    end,
                    perm: Perm::Rw,
                },
            ],
            init: 2,
            tables,
            stacks,
        }
    }

    /// Checks what the boot sequence relies on: sections in order, adjacent
    /// and page aligned, from `start` to `end`, the image within the 8 MiB
    /// it must fit in, every static table a page inside
    /// `[tables.first, tables.last)` inside the image, and the stacks' slots
    /// page aligned, each more than its guard page, inside the data section
    /// and clear of the tables.
    pub fn check(&self) -> Result<(), &'static str> {
        let page = |v: Vaddr| v.is_aligned(hvmm::PAGE_SIZE);
        let mut at = self.start;
        for s in &self.sections {
            if s.start != at || s.end < s.start {
                return Err("sections out of order or not adjacent");
            }
            if !page(s.start) || !page(s.end) {
                return Err("section bound not page aligned");
            }
            at = s.end;
        }
        if at != self.end || self.init >= self.sections.len() {
            return Err("sections do not end at the end of the image");
        }
        if self.size() > hvmm_xen::layout::XEN_VIRT_SIZE {
            return Err("the image does not fit in 8 MiB");
        }
        let t = &self.tables;
        if !page(t.first)
            || !page(t.last)
            || t.first < self.start
            || t.last > self.end
            || t.first > t.last
        {
            return Err("the tables region is misaligned or outside the image");
        }
        let last_l3 = Vaddr(t.image_l3.0 + (IMAGE_L3_TABLES as u64 - 1) * hvmm::PAGE_SIZE);
        let tables = [
            Some(t.boot_root),
            Some(t.boot_l2),
            Some(t.root),
            t.l1,
            Some(t.l2),
            Some(t.image_l3),
            Some(last_l3),
            Some(t.fixmap_l3),
        ];
        for v in tables.into_iter().flatten() {
            if !page(v) || v < t.first || v.0 + hvmm::PAGE_SIZE > t.last.0 {
                return Err("static table outside the tables region or misaligned");
            }
        }
        let r = t.idmap_record;
        if !r.is_aligned(8) || r < t.first || r.0 + 16 > t.last.0 {
            return Err("the identity-map record is outside the tables region or misaligned");
        }
        let st = &self.stacks;
        let data = &self.sections[self.sections.len() - 1];
        if st.cpus == 0
            || !page(st.first)
            || !st.slot.is_multiple_of(hvmm::PAGE_SIZE)
            || st.slot <= hvmm::PAGE_SIZE
        {
            return Err("the stacks' slots are misaligned or hold no more than a guard page");
        }
        let end = st
            .first
            .0
            .checked_add(st.slot.saturating_mul(st.cpus as u64));
        if st.first < data.start || end.is_none_or(|e| e > data.end.0) {
            return Err("the stacks are outside the data section");
        }
        if end.is_some_and(|e| st.first.0 < t.last.0 && t.first.0 < e) {
            return Err("the stacks overlap the tables region");
        }
        Ok(())
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
        let data_end = 0x80000;
        // Boot tables: root, L1, L2, four L3, three identity tables; then
        // the fixmap L3, the runtime root, L1, L2 and four L3; then the
        // identity-map record; then eight stack slots of a guard page and a
        // stack page. The image's last page is the spare page the head may
        // run the MMU-enable code from.
        let bss_tables = 0x58000;
        let stacks = 0x6c000;
        ImageLayout::from_bounds(
            XEN_VIRT_START,
            va(text_end),
            va(rodata_end),
            va(init_end),
            va(data_end),
            StaticTables {
                boot_root: va(bss_tables),
                boot_l2: va(bss_tables + 0x2000),
                fixmap_l3: va(bss_tables + 0xa000),
                root: va(bss_tables + 0xb000),
                l1: Some(va(bss_tables + 0xc000)),
                l2: va(bss_tables + 0xd000),
                image_l3: va(bss_tables + 0xe000),
                idmap_record: va(bss_tables + 0x12000),
                first: va(bss_tables),
                last: va(bss_tables + 0x13000),
            },
            Stacks {
                first: va(stacks),
                slot: 2 * hvmm::PAGE_SIZE,
                cpus: 8,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_layout_is_consistent() {
        assert_eq!(ImageLayout::model().check(), Ok(()));
    }

    #[test]
    fn a_layout_out_of_order_is_refused() {
        let mut l = ImageLayout::model();
        l.sections.swap(0, 1);
        assert!(l.check().is_err());
        let mut l = ImageLayout::model();
        l.tables.root = Vaddr(l.tables.root.0 + 8);
        assert_eq!(
            l.check(),
            Err("static table outside the tables region or misaligned")
        );
    }

    #[test]
    fn stacks_outside_the_data_section_or_on_the_tables_are_refused() {
        let mut l = ImageLayout::model();
        l.stacks.first = l.sections[1].start;
        assert_eq!(l.check(), Err("the stacks are outside the data section"));
        let mut l = ImageLayout::model();
        l.stacks.first = l.tables.first;
        assert_eq!(l.check(), Err("the stacks overlap the tables region"));
        let mut l = ImageLayout::model();
        l.stacks.slot = hvmm::PAGE_SIZE;
        assert_eq!(
            l.check(),
            Err("the stacks' slots are misaligned or hold no more than a guard page")
        );
    }

    #[test]
    fn each_stack_slot_begins_with_its_guard_page() {
        let st = ImageLayout::model().stacks;
        assert!(st.is_guard(st.guard(0)));
        assert!(st.is_guard(st.guard(7)));
        assert!(!st.is_guard(Vaddr(st.guard(0).0 + hvmm::PAGE_SIZE)));
        assert!(!st.is_guard(st.end()));
        assert_eq!(st.guard(1).0 - st.guard(0).0, st.slot);
    }
}
