//! What the EFI stub (`efi_stub` in the arm64 head) left behind when hvmm
//! was started as a UEFI application: the UEFI memory map as it was when
//! boot services exited, and its cross-check against the device tree's
//! memory ([`crate::efi_map`]).

use crate::efi_map::{self, CrossCheck, Desc};

/// Bytes the stub's memory-map buffer holds (`EFI_MMAP_BYTES` in the head).
const MMAP_BYTES: usize = 0x3000;
/// Most descriptors considered.
const MAX_DESCS: usize = MMAP_BYTES / 32;

#[cfg(target_arch = "aarch64")]
extern "C" {
    static efi_booted: u64;
    static efi_mmap_size: u64;
    static efi_desc_size: u64;
    static efi_desc_version: u64;
    static efi_mmap: [u8; MMAP_BYTES];
}

/// The memory map the stub saved.
pub struct EfiMap {
    descs: [Desc; MAX_DESCS],
    n: usize,
    /// `DescriptorSize`.
    pub desc_size: u64,
    /// `DescriptorVersion`.
    pub desc_version: u64,
}

impl EfiMap {
    /// The descriptors.
    pub fn descs(&self) -> &[Desc] {
        &self.descs[..self.n]
    }
}

/// The saved map, when the image was entered through the EFI stub.
#[cfg(target_arch = "aarch64")]
pub fn memory_map() -> Option<EfiMap> {
    // SAFETY: these are the head's .data words, written only by the EFI stub
    // before the MMU came on at the link address (and cleaned to the point
    // of coherency); nothing writes them any more, so plain reads of the
    // statics are race free.
    let (booted, size, desc_size, desc_version) = unsafe {
        (
            core::ptr::read_volatile(&raw const efi_booted),
            core::ptr::read_volatile(&raw const efi_mmap_size),
            core::ptr::read_volatile(&raw const efi_desc_size),
            core::ptr::read_volatile(&raw const efi_desc_version),
        )
    };
    if booted == 0 {
        return None;
    }
    // SAFETY: as above: a read-only view of a buffer nobody writes any more.
    let raw: &[u8; MMAP_BYTES] = unsafe { &efi_mmap };
    let len = (size as usize).min(MMAP_BYTES);
    let mut m = EfiMap {
        descs: [Desc {
            ty: 0,
            base: 0,
            pages: 0,
        }; MAX_DESCS],
        n: 0,
        desc_size,
        desc_version,
    };
    for d in efi_map::descriptors(&raw[..len], desc_size as usize).take(MAX_DESCS) {
        m.descs[m.n] = d;
        m.n += 1;
    }
    Some(m)
}

/// arm32 has no EFI entry.
#[cfg(not(target_arch = "aarch64"))]
pub fn memory_map() -> Option<EfiMap> {
    None
}

/// Cross-checks the UEFI map against the DT memory banks and logs the
/// outcome; returns what the boot allocator must not use.
/// With `all`, every descriptor is printed too.
pub fn cross_check(map: &EfiMap, banks: &[(u64, u64)], all: bool) -> CrossCheck {
    let descs = map.descs();
    let c = efi_map::cross_check(descs, banks);
    println!(
        "hvmm: UEFI memory map at ExitBootServices: {} descriptors ({} bytes each, version {})",
        descs.len(),
        map.desc_size,
        map.desc_version
    );
    if all {
        for d in descs {
            println!(
                "hvmm:   UEFI {:#014x}-{:#014x} {}",
                d.base,
                d.end() - 1,
                efi_map::type_name(d.ty)
            );
        }
    }
    for &(b, s) in banks {
        println!("hvmm:   DT /memory {:#x}-{:#x}", b, b + s - 1);
    }
    for (b, s) in c.reserved.iter().flatten() {
        let ty = efi_map::type_at(descs, *b).map_or("not in the UEFI map", efi_map::type_name);
        println!(
            "hvmm:   not free after ExitBootServices: {:#x}-{:#x} ({} KiB, starts in {})",
            b,
            b + s - 1,
            s >> 10,
            ty
        );
    }
    if c.undescribed_bytes != 0 {
        println!(
            "hvmm:   {} KiB of DT RAM are not in the UEFI map: kept out",
            c.undescribed_bytes >> 10
        );
    }
    if c.outside_dt_bytes != 0 {
        println!(
            "hvmm:   {} KiB of UEFI memory lie outside the DT banks: ignored",
            c.outside_dt_bytes >> 10
        );
    }
    println!(
        "hvmm: UEFI cross-check removed {} ranges ({} KiB) from the boot allocator ({} found, merged into {} slots at most)",
        c.reserved.iter().flatten().count(),
        c.reserved_bytes >> 10,
        c.found,
        efi_map::MAX_RESERVED
    );
    c
}
