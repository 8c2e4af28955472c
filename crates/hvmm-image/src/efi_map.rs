//! The UEFI memory map, cross-checked against the device tree's `/memory`
//! (pure logic: no hardware access, no dependencies beyond `core`, so xtask
//! also compiles this file for host unit tests).
//!
//! After `ExitBootServices` these kinds of RAM are free for the hypervisor:
//! `EfiConventionalMemory`, `EfiBootServicesCode/Data` (the firmware's own
//! boot-time memory, dead once boot services are gone) and
//! `EfiLoaderCode/Data` (what GRUB and this image's loader allocated: GRUB's
//! code and heap — GRUB 2.06 takes a quarter of RAM for it —, the FDT it
//! built and the modules). Of the loader's memory only the FDT, the modules
//! and this image are still in use, and the boot information keeps exactly
//! those out of the boot allocator; treating the rest as reserved would
//! waste a quarter of RAM. Everything else inside a DT memory bank stays
//! out: runtime services code and data (the firmware still owns them),
//! reserved, ACPI, unusable, PAL code and persistent memory, and DT RAM the
//! UEFI map does not describe at all. UEFI memory outside the DT banks is
//! only reported (the boot allocator takes RAM from the DT banks alone).

// arm32 has no EFI entry: only the cross-check types are used there.
#![cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]

/// Most ranges handed to the boot sequence (`BootConfig::firmware_reserved`).
pub const MAX_RESERVED: usize = 8;
/// Most DT memory banks considered.
pub const MAX_BANKS: usize = 8;

/// `EFI_MEMORY_DESCRIPTOR` fields this code uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    /// `Type`.
    pub ty: u32,
    /// `PhysicalStart`.
    pub base: u64,
    /// `NumberOfPages` (4 KiB).
    pub pages: u64,
}

impl Desc {
    /// One past the last byte (saturating).
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.pages.saturating_mul(4096))
    }
}

/// The descriptors in `map` (`desc_size` bytes apart, as GetMemoryMap said).
pub fn descriptors(map: &[u8], desc_size: usize) -> impl Iterator<Item = Desc> + '_ {
    let step = if desc_size >= 32 {
        desc_size
    } else {
        usize::MAX
    };
    let n = if step == usize::MAX {
        0
    } else {
        map.len() / step
    };
    (0..n).map(move |i| {
        let d = &map[i * step..i * step + 32];
        let u32_at = |o: usize| u32::from_le_bytes([d[o], d[o + 1], d[o + 2], d[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
        Desc {
            ty: u32_at(0),
            base: u64_at(8),
            pages: u64_at(24),
        }
    })
}

/// The UEFI name of a memory type.
pub fn type_name(ty: u32) -> &'static str {
    match ty {
        0 => "Reserved",
        1 => "LoaderCode",
        2 => "LoaderData",
        3 => "BootServicesCode",
        4 => "BootServicesData",
        5 => "RuntimeServicesCode",
        6 => "RuntimeServicesData",
        7 => "Conventional",
        8 => "Unusable",
        9 => "ACPIReclaim",
        10 => "ACPINVS",
        11 => "MMIO",
        12 => "MMIOPortSpace",
        13 => "PalCode",
        14 => "Persistent",
        _ => "unknown",
    }
}

/// Whether RAM of this type is free for the hypervisor after
/// `ExitBootServices` (see the module documentation).
pub fn free_after_exit(ty: u32) -> bool {
    matches!(ty, 1 | 2 | 3 | 4 | 7)
}

/// Whether a type describes RAM at all (not MMIO).
fn is_memory(ty: u32) -> bool {
    !matches!(ty, 11 | 12)
}

/// The outcome of the cross-check.
#[derive(Debug, Clone, Copy)]
pub struct CrossCheck {
    /// DT RAM to keep out of the boot allocator, `(base, size)`, sorted,
    /// merged; at most [`MAX_RESERVED`].
    pub reserved: [Option<(u64, u64)>; MAX_RESERVED],
    /// Ranges found before fitting them into [`MAX_RESERVED`] slots.
    pub found: usize,
    /// Bytes kept out (gaps covered by merging included).
    pub reserved_bytes: u64,
    /// Bytes of DT RAM the UEFI map does not describe (kept out).
    pub undescribed_bytes: u64,
    /// Bytes the UEFI map calls memory that no DT bank holds (ignored).
    pub outside_dt_bytes: u64,
}

/// Smallest descriptor start in `(after, before)` among free ones, if any.
fn next_free_start(descs: &[Desc], after: u64, before: u64) -> Option<u64> {
    descs
        .iter()
        .filter(|d| free_after_exit(d.ty) && d.pages > 0 && d.base > after && d.base < before)
        .map(|d| d.base)
        .min()
}

/// Cross-checks the DT memory banks against the UEFI descriptors: every
/// part of a bank that is not free UEFI memory becomes a reserved range.
pub fn cross_check(descs: &[Desc], banks: &[(u64, u64)]) -> CrossCheck {
    let mut sorted = [(0u64, 0u64); MAX_BANKS];
    let mut nb = 0;
    for &(b, s) in banks.iter().filter(|b| b.1 > 0).take(MAX_BANKS) {
        sorted[nb] = (b, b.saturating_add(s));
        nb += 1;
    }
    sorted[..nb].sort_unstable();

    // Reserved ranges, collected in address order; when more than fit are
    // found, the two closest neighbours are merged (covering the gap keeps
    // more memory out, never less).
    let mut out = [(0u64, 0u64); MAX_RESERVED + 1];
    let mut n = 0usize;
    let mut found = 0usize;
    let mut undescribed = 0u64;
    let mut push = |r: (u64, u64), out: &mut [(u64, u64); MAX_RESERVED + 1], n: &mut usize| {
        if *n > 0 && out[*n - 1].1 >= r.0 {
            out[*n - 1].1 = out[*n - 1].1.max(r.1);
            return;
        }
        found += 1;
        out[*n] = r;
        *n += 1;
        if *n > MAX_RESERVED {
            let mut best = 1;
            for i in 2..*n {
                if out[i].0 - out[i - 1].1 < out[best].0 - out[best - 1].1 {
                    best = i;
                }
            }
            out[best - 1].1 = out[best].1;
            for i in best..*n - 1 {
                out[i] = out[i + 1];
            }
            *n -= 1;
        }
    };

    for &(bank_start, bank_end) in &sorted[..nb] {
        let mut cur = bank_start;
        while cur < bank_end {
            // A free descriptor holding `cur`: skip to its end.
            if let Some(end) = descs
                .iter()
                .filter(|d| free_after_exit(d.ty) && d.base <= cur && cur < d.end())
                .map(Desc::end)
                .max()
            {
                cur = end;
                continue;
            }
            // Not free: reserved up to the next free descriptor (or the end).
            let next = next_free_start(descs, cur, bank_end).unwrap_or(bank_end);
            // The part no descriptor describes at all.
            let mut c = cur;
            while c < next {
                match descs
                    .iter()
                    .filter(|d| d.pages > 0 && d.base <= c && c < d.end())
                    .map(Desc::end)
                    .max()
                {
                    Some(e) => c = e.min(next),
                    None => {
                        let e = descs
                            .iter()
                            .filter(|d| d.pages > 0 && d.base > c && d.base < next)
                            .map(|d| d.base)
                            .min()
                            .unwrap_or(next);
                        undescribed += e - c;
                        c = e;
                    }
                }
            }
            push((cur, next), &mut out, &mut n);
            cur = next;
        }
    }

    let mut outside = 0u64;
    for d in descs.iter().filter(|d| is_memory(d.ty) && d.ty != 0) {
        let mut inside = 0u64;
        for &(s, e) in &sorted[..nb] {
            let lo = d.base.max(s);
            let hi = d.end().min(e);
            if hi > lo {
                inside += hi - lo;
            }
        }
        outside += (d.end() - d.base) - inside;
    }

    let mut reserved = [None; MAX_RESERVED];
    let mut bytes = 0;
    for (slot, r) in reserved.iter_mut().zip(&out[..n]) {
        *slot = Some((r.0, r.1 - r.0));
        bytes += r.1 - r.0;
    }
    CrossCheck {
        reserved,
        found,
        reserved_bytes: bytes,
        undescribed_bytes: undescribed,
        outside_dt_bytes: outside,
    }
}

/// The type of the descriptor holding `pa` (for the log), if any.
pub fn type_at(descs: &[Desc], pa: u64) -> Option<u32> {
    descs
        .iter()
        .find(|d| d.base <= pa && pa < d.end())
        .map(|d| d.ty)
}
