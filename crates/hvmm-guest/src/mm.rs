//! The guest's own stage-1 tables: one descriptor format for both
//! architectures (VMSAv8-64 at EL1, LPAE long descriptors at PL1), 4 KiB
//! granule.
//!
//! The head maps the image at [`arch::LINK_VA`] and one identity block so
//! it can turn the MMU on. [`init`] drops that block; from then on the
//! guest's address space is:
//!
//! - the image at `LINK_VA` (4 KiB pages onto the load address);
//! - the DTB at [`DTB_VA`] (read-only use, 4 KiB pages, at most 4 MiB);
//! - [`WINDOWS`] one-page windows at [`WINDOW_VA`], remapped on demand to
//!   reach an IPA the identity map cannot hold;
//! - everything else identity (VA == IPA): RAM with 1 GiB / 2 MiB blocks
//!   where aligned, devices and probe pages with 4 KiB pages.
//!
//! Tables come from a pool in the image (zeroed by the head); they are
//! never freed.

use crate::arch;
use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

/// 4 KiB.
pub const PAGE: u64 = 0x1000;
/// A level-2 block.
pub const BLOCK: u64 = 0x20_0000;
/// A level-1 block.
pub const BLOCK_1G: u64 = 0x4000_0000;
/// Table pages the pool holds.
pub const POOL_PAGES: usize = 32;
/// Where the DTB is mapped.
pub const DTB_VA: usize = arch::LINK_VA + 0x20_0000;
/// The most DTB bytes mapped (page offset included).
pub const DTB_MAX: u64 = 0x40_0000;
/// Where the windows are.
pub const WINDOW_VA: usize = arch::LINK_VA + 0x60_0000;
/// Number of one-page windows.
pub const WINDOWS: usize = 16;

const VALID: u64 = 1;
const TABLE_OR_PAGE: u64 = 2;
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 3 << 8;
const XN: u64 = (1 << 54) | (1 << 53);
const AP_RO: u64 = 1 << 7;
const OA_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Memory type and permissions of a mapping.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Attr {
    /// Normal write-back memory, read/write, executable (MAIR index 1).
    Normal,
    /// Device-nGnRnE, read/write, execute-never (MAIR index 0).
    Device,
}

impl Attr {
    fn bits(self) -> u64 {
        match self {
            Attr::Normal => (1 << 2) | SH_INNER | AF,
            Attr::Device => AF | XN,
        }
    }
}

/// Why a mapping could not be made.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The table pool is exhausted.
    OutOfTables,
    /// The VA is already mapped to another address.
    Clash {
        /// The VA.
        va: usize,
        /// What it maps to.
        to: u64,
    },
    /// Not page aligned.
    Unaligned {
        /// The VA.
        va: usize,
    },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MapError::OutOfTables => write!(f, "out of table pages ({POOL_PAGES} in the pool)"),
            MapError::Clash { va, to } => write!(f, "VA {va:#x} already maps {to:#x}"),
            MapError::Unaligned { va } => write!(f, "VA {va:#x} is not page aligned"),
        }
    }
}

extern "C" {
    static boot_root: u8;
    static table_pool: u8;
    static _start: u8;
    static _end: u8;
}

/// The physical address the image was loaded at.
static LOAD_PA: AtomicUsize = AtomicUsize::new(0);
/// Pool pages handed out.
static USED: AtomicUsize = AtomicUsize::new(0);

fn image_va() -> (usize, usize) {
    (&raw const _start as usize, &raw const _end as usize)
}

/// The image's physical range `[start, end)`.
pub fn image_pa() -> (u64, u64) {
    let (s, e) = image_va();
    let pa = LOAD_PA.load(Ordering::Relaxed) as u64;
    (pa, pa + (e - s) as u64)
}

/// The physical address of a link address inside the image.
pub fn image_symbol_pa(va: usize) -> u64 {
    LOAD_PA.load(Ordering::Relaxed) as u64 + (va - arch::LINK_VA) as u64
}

/// A table page's VA from its PA (every table lives in the image).
fn table_at(pa: u64) -> *mut u64 {
    let load = LOAD_PA.load(Ordering::Relaxed) as u64;
    (arch::LINK_VA + (pa - load) as usize) as *mut u64
}

fn table_pa(va: *mut u64) -> u64 {
    image_symbol_pa(va as usize)
}

fn index(va: u64, level: usize) -> usize {
    ((va >> (12 + 9 * (3 - level))) & 511) as usize
}

fn level_size(level: usize) -> u64 {
    1 << (12 + 9 * (3 - level))
}

fn read(entry: *mut u64) -> u64 {
    // SAFETY: `entry` points into one of the image's table pages, which
    // only this module writes (one CPU at a time: the primary).
    unsafe { core::ptr::read_volatile(entry) }
}

fn write(entry: *mut u64, value: u64) {
    // SAFETY: as for `read`; the value is a well-formed descriptor.
    unsafe { arch::write_desc(entry, value) }
}

fn alloc_table() -> Result<*mut u64, MapError> {
    let n = USED.fetch_add(1, Ordering::Relaxed);
    if n >= POOL_PAGES {
        USED.store(POOL_PAGES, Ordering::Relaxed);
        return Err(MapError::OutOfTables);
    }
    // Page `n` of the pool was zeroed by the head and is handed out once.
    let base = &raw const table_pool as usize;
    Ok((base + n * PAGE as usize) as *mut u64)
}

/// Where a walk for one VA ended.
enum Slot {
    /// The descriptor slot at the level asked for.
    Entry(*mut u64),
    /// A block at a higher level already maps the VA, to this address.
    Covered(u64),
    /// Nothing maps it (only when not allocating).
    Absent,
}

/// Walks to `level` for `va`, allocating missing tables when `alloc`.
fn walk(va: u64, level: usize, alloc: bool) -> Result<Slot, MapError> {
    let mut table = &raw const boot_root as *mut u64;
    for l in arch::START_LEVEL..level {
        // SAFETY: the index is below 512, inside the table page.
        let entry = unsafe { table.add(index(va, l)) };
        let d = read(entry);
        if d & VALID == 0 {
            if !alloc {
                return Ok(Slot::Absent);
            }
            let t = alloc_table()?;
            write(entry, table_pa(t) | VALID | TABLE_OR_PAGE);
            table = t;
        } else if d & TABLE_OR_PAGE != 0 {
            table = table_at(d & OA_MASK);
        } else {
            let size = level_size(l);
            return Ok(Slot::Covered(
                (d & OA_MASK & !(size - 1)) + (va & (size - 1)),
            ));
        }
    }
    // SAFETY: as above.
    Ok(Slot::Entry(unsafe { table.add(index(va, level)) }))
}

/// What `va` translates to through these tables, if anything.
pub fn translate(va: usize) -> Option<u64> {
    let va = va as u64;
    for level in arch::START_LEVEL..=3 {
        match walk(va, level, false) {
            Ok(Slot::Entry(e)) => {
                let d = read(e);
                if d & VALID == 0 {
                    return None;
                }
                if level == 3 || d & TABLE_OR_PAGE == 0 {
                    let size = level_size(level);
                    return Some((d & OA_MASK & !(size - 1)) + (va & (size - 1)));
                }
            }
            Ok(Slot::Covered(pa)) => return Some(pa),
            _ => return None,
        }
    }
    None
}

/// Maps one block at `level` (1: 1 GiB, 2: 2 MiB) if the slot is free (or
/// already maps the same thing); `Ok(false)` when the slot holds a table
/// (use smaller mappings).
fn map_block(va: usize, pa: u64, attr: Attr, level: usize) -> Result<bool, MapError> {
    match walk(va as u64, level, true)? {
        Slot::Covered(to) if to == pa => Ok(true),
        Slot::Covered(to) => Err(MapError::Clash { va, to }),
        Slot::Absent => Ok(false),
        Slot::Entry(e) => {
            let d = read(e);
            if d & VALID == 0 {
                write(e, pa | attr.bits() | VALID);
                Ok(true)
            } else if d & TABLE_OR_PAGE != 0 {
                Ok(false)
            } else if d & OA_MASK == pa {
                Ok(true)
            } else {
                Err(MapError::Clash {
                    va,
                    to: d & OA_MASK,
                })
            }
        }
    }
}

fn map_page(va: usize, pa: u64, attr: Attr) -> Result<(), MapError> {
    match walk(va as u64, 3, true)? {
        Slot::Covered(to) if to == pa => Ok(()),
        Slot::Covered(to) => Err(MapError::Clash { va, to }),
        Slot::Absent => Err(MapError::OutOfTables),
        Slot::Entry(e) => {
            let d = read(e);
            if d & VALID == 0 {
                write(e, pa | attr.bits() | VALID | TABLE_OR_PAGE);
                Ok(())
            } else if d & OA_MASK == pa {
                Ok(())
            } else {
                Err(MapError::Clash {
                    va,
                    to: d & OA_MASK,
                })
            }
        }
    }
}

/// Maps `[va, va + len)` onto `[pa, pa + len)`: 1 GiB and 2 MiB blocks
/// where both are aligned, pages elsewhere. Parts already mapped to the same addresses are
/// left as they are (their attributes too).
pub fn map(va: usize, pa: u64, len: u64, attr: Attr) -> Result<(), MapError> {
    if (va as u64 | pa | len) & (PAGE - 1) != 0 {
        return Err(MapError::Unaligned { va });
    }
    let mut done = 0u64;
    while done < len {
        let (v, p) = (va + done as usize, pa + done);
        let fits = |size: u64| (v as u64 | p) & (size - 1) == 0 && len - done >= size;
        let step = if fits(BLOCK_1G) && map_block(v, p, attr, 1)? {
            BLOCK_1G
        } else if fits(BLOCK) && map_block(v, p, attr, 2)? {
            BLOCK
        } else {
            map_page(v, p, attr)?;
            PAGE
        };
        done += step;
    }
    arch::publish_tables();
    Ok(())
}

/// Whether `[pa, pa + len)` may be identity mapped: below the VA limit and
/// outside the image's and windows' slot.
pub fn identity_possible(pa: u64, len: u64) -> bool {
    pa.checked_add(len).is_some_and(|end| end <= arch::VA_LIMIT)
}

/// Maps the IPA page holding `ipa` into window `slot` and returns the VA of
/// `ipa` there.
pub fn window(slot: usize, ipa: u64, attr: Attr) -> Result<usize, MapError> {
    let va = WINDOW_VA + (slot % WINDOWS) * PAGE as usize;
    let page = ipa & !(PAGE - 1);
    let Slot::Entry(e) = walk(va as u64, 3, true)? else {
        return Err(MapError::OutOfTables);
    };
    let d = read(e);
    let want = page | attr.bits() | VALID | TABLE_OR_PAGE;
    if d != want {
        if d & VALID != 0 {
            write(e, 0);
            arch::tlb_flush_va(va);
        }
        write(e, want);
        arch::publish_tables();
    }
    Ok(va + (ipa & (PAGE - 1)) as usize)
}

/// Unmaps window `slot`.
pub fn unmap_window(slot: usize) {
    let va = WINDOW_VA + (slot % WINDOWS) * PAGE as usize;
    if let Ok(Slot::Entry(e)) = walk(va as u64, 3, false) {
        if read(e) & VALID != 0 {
            write(e, 0);
            arch::tlb_flush_va(va);
        }
    }
}

/// Makes window `slot` read-only (AP[2]) and invalidates its TLB entries:
/// what a hypervisor's stage-2 write-protect does, done at stage 1 (the
/// write-protect check's self-test).
pub fn protect_window(slot: usize) {
    let va = WINDOW_VA + (slot % WINDOWS) * PAGE as usize;
    if let Ok(Slot::Entry(e)) = walk(va as u64, 3, false) {
        let d = read(e);
        if d & VALID != 0 {
            write(e, d | AP_RO);
            arch::tlb_flush_va(va);
        }
    }
}

/// A VA that reaches `ipa`: itself when the identity map holds it, else a
/// window (`slot`) mapped with `attr`.
pub fn reach(slot: usize, ipa: u64, attr: Attr) -> Result<usize, MapError> {
    if identity_possible(ipa, 1) && translate(ipa as usize) == Some(ipa) {
        return Ok(ipa as usize);
    }
    window(slot, ipa, attr)
}

/// First Rust step: records the load address and removes the head's
/// identity block (the code now runs at its link address).
pub fn init(load_pa: usize) {
    LOAD_PA.store(load_pa, Ordering::Relaxed);
    extern "C" {
        static secondary_entry: u8;
    }
    // The head's block covers the GiB of its MMU-enable code, next to
    // `secondary_entry` in the same section.
    let code = image_symbol_pa(&raw const secondary_entry as usize);
    if let Ok(Slot::Entry(e)) = walk(code, 1, false) {
        if read(e) & (VALID | TABLE_OR_PAGE) == VALID {
            write(e, 0);
            arch::tlb_flush_all();
        }
    }
}

/// Pool pages used so far.
pub fn tables_used() -> usize {
    USED.load(Ordering::Relaxed).min(POOL_PAGES)
}
