//! What the image does once Rust runs, and the seam for the shared boot
//! sequence.
//!
//! [`BootParams`] is everything the head knows, found the way SPEC §5 wants
//! it: the image's physical range by hardware translation of `_start` and
//! `_end - 1`, never from a stored `PA - VA` offset. [`rust_main`] is where
//! `hvmm-boot`'s sequence will be called; for now it runs this image's own
//! checks (AT verification of the boot mapping, the FDT's bootargs and
//! modules, the deliberate fault, the secondary CPUs) and exits.

use crate::arch;
use crate::exit::{exit, EXIT_FAIL, EXIT_OK};
use crate::fdt;
use crate::layout::{self, XEN_VIRT_START};
use hvmm::{Arch, CpuOps, FaultKind, LinearRange, Paddr, Vaddr, PAGE_SIZE};
use hvmm_boot::BootConfig;
use hvmm_boot::ImageLayout;

/// What the head hands to the boot sequence.
#[derive(Debug, Clone, Copy)]
pub struct BootParams {
    /// The device tree blob's physical address, as the loader passed it.
    pub dtb_pa: Paddr,
    /// The image: VA `XEN_VIRT_START`.. ↔ the PA it was loaded at.
    pub image: LinearRange,
    /// The boot CPU's index.
    pub cpu: usize,
    /// The image's sections and static tables (link addresses).
    pub layout: ImageLayout,
}

impl BootParams {
    /// Builds the parameters: the image's physical range comes from `AT` of
    /// `_start` and `_end - 1` (`_end` itself is unmapped).
    pub fn discover(dtb_pa: u64, cpu: usize) -> Self {
        let mut hw = arch::hw();
        let start = layout::image_start();
        let end = layout::image_end();
        let first = match hw.hw_translate(start, false) {
            Ok(r) => r.pa,
            Err(e) => fail(format_args!("AT of _start failed: {e}")),
        };
        let last = match hw.hw_translate(Vaddr(end.0 - 1), false) {
            Ok(r) => r.pa,
            Err(e) => fail(format_args!("AT of _end - 1 failed: {e}")),
        };
        let size = end.0 - start.0;
        if last.0.wrapping_sub(first.0) != size - 1 {
            fail(format_args!(
                "image not physically contiguous: _start at {first}, _end - 1 at {last}"
            ));
        }
        let Some(image) = LinearRange::new(start, first, size) else {
            fail(format_args!("image range {first} + {size:#x} overflows"))
        };
        let image_layout = layout::image_layout();
        if let Err(why) = image_layout.check() {
            fail(format_args!("image layout: {why}"));
        }
        BootParams {
            dtb_pa: Paddr(dtb_pa),
            image,
            cpu,
            layout: image_layout,
        }
    }
}

fn fail(args: core::fmt::Arguments<'_>) -> ! {
    println!("hvmm: FAILED: {args}");
    exit(EXIT_FAIL)
}

/// The boot sequence. This is the seam: the shared sequence
/// (`hvmm-boot`) will be called from here with `params` and the hardware
/// back end ([`arch::hw`]).
pub fn rust_main(params: &BootParams) -> ! {
    println!(
        "hvmm: {} on CPU {}, image at PA {:#x}-{:#x} linked at {:#x}, DTB at {:#x}",
        arch::MODE,
        params.cpu,
        params.image.pa.0,
        params.image.pa.0 + params.image.size - 1,
        XEN_VIRT_START,
        params.dtb_pa.0
    );
    let l = &params.layout;
    println!(
        "hvmm: sections text {}-{} rodata -{} init -{} data -{}; tables {}-{} (boot root {}, runtime root {})",
        l.start,
        l.sections[0].end,
        l.sections[1].end,
        l.sections[2].end,
        l.end,
        l.tables.first,
        l.tables.last,
        l.tables.boot_root,
        l.tables.root
    );
    let v = verify_image(params);
    println!(
        "hvmm: AT verified {} pages of the boot mapping (text RX {}, rodata RO {}, init RX {}, data RW {})",
        v.text + v.rodata + v.init + v.data,
        v.text,
        v.rodata,
        v.init,
        v.data
    );

    if let Err(why) = crate::selfcheck::run() {
        fail(format_args!("back-end self-check: {why}"));
    }
    println!(
        "hvmm: back end checked: root {} matches AT, remap with TLBI VA (IS), zero_page, level-3 faults",
        arch::hw().root()
    );

    let info = match fdt::scan(params.dtb_pa.0) {
        Ok(i) => i,
        Err(e) => fail(format_args!(
            "cannot read the DTB at {}: {e}",
            params.dtb_pa
        )),
    };
    println!(
        "hvmm: DTB: {} bytes, {} CPU node(s)",
        info.total_size, info.n_cpus
    );
    if let Some(b) = &info.bootargs {
        println!("hvmm: bootargs: \"{}\"", b.as_str());
    }

    if info.has_bootarg("hvmm.fault=1") {
        deliberate_fault();
    }

    // The shared boot sequence: the same code the machine model runs.
    let layout = params.layout;
    let mut mpidrs = [None; crate::MAX_CPUS];
    let me = arch::mpidr();
    for (slot, m) in mpidrs
        .iter_mut()
        .zip(info.cpus.iter().flatten().filter(|&&m| m != me))
    {
        *slot = Some(*m);
    }
    // Entered through the EFI stub: the UEFI memory map decides which DT RAM
    // the firmware and GRUB still hold.
    let mut firmware_reserved = [None; 8];
    if let Some(map) = crate::efi::memory_map() {
        let mut banks = [(0u64, 0u64); fdt::BANKS_MAX];
        let mut n = 0;
        for b in info.memory.iter().flatten() {
            banks[n] = *b;
            n += 1;
        }
        let all = info.has_bootarg("hvmm.efi-map");
        let c = crate::efi::cross_check(&map, &banks[..n], all);
        for (slot, r) in firmware_reserved.iter_mut().zip(c.reserved.iter()) {
            *slot = r.map(|(b, s)| (Paddr(b), s));
        }
    }
    // `hvmm.dom0` builds domain 0 from the boot modules after Active and
    // runs it; `hvmm.dom0=test` also passes the test guest its arguments.
    let dom0 = (info.has_bootarg("hvmm.dom0") || info.has_bootarg("hvmm.dom0=test")).then(|| {
        hvmm_boot::domain::Dom0Config {
            test_args: info.has_bootarg("hvmm.dom0=test"),
            mem: info
                .bootarg_number("hvmm.dom0-mem")
                .unwrap_or(hvmm_boot::domain::Dom0Config::default().mem),
            ..Default::default()
        }
    });
    // `hvmm.audit-plant=NAME`: a violation planted before the end-of-boot
    // audit, to see the audit catch it on hardware.
    let plant = match info.bootarg_value("hvmm.audit-plant") {
        None => None,
        Some(name) => match hvmm_boot::audit::Plant::from_name(name) {
            Some(p) => Some(p),
            None => fail(format_args!(
                "hvmm.audit-plant={name}: not a violation the audit knows ({})",
                hvmm_boot::audit::PlantNames
            )),
        },
    };
    let cfg = BootConfig {
        audit: hvmm_boot::AuditConfig {
            plant,
            ..Default::default()
        },
        dom0,
        firmware_reserved,
        cpus: info.n_cpus.clamp(1, crate::MAX_CPUS),
        pa_bits: <arch::Fmt as hvmm::Format>::PA_BITS,
        // QEMU 7.2's arm32 walker truncates table addresses to 32 bits.
        table_limit: info
            .has_bootarg("hvmm.tables-below-4g")
            .then_some(Paddr(1 << 32)),
        // arm64's secret-free mode: no direct map, per-CPU roots and
        // mapcache slots (arm32 refuses it by name).
        directmap: !info.has_bootarg("hvmm.directmap=off"),
        ..BootConfig::default()
    };
    let mut platform = crate::platform::HwPlatform::new(mpidrs);
    let mut log = crate::console::Console;
    // The console the head and `console::init` mapped at fixmap slot 0: the
    // one device the audit allows.
    let console = crate::console::mapped_page().map(|pa| hvmm_boot::audit::PlatformDevice {
        name: "console",
        va: hvmm_xen::layout::fixmap_va(hvmm_xen::layout::FIXMAP_CONSOLE),
        pa,
        size: PAGE_SIZE,
    });
    let boot_params = hvmm_boot::BootParams {
        dtb: params.dtb_pa,
        image: layout,
        devices: [console, None],
    };
    match hvmm_boot::boot_keep::<arch::Fmt, _>(&mut platform, &boot_params, &cfg, &mut log) {
        Ok((summary, mm)) => {
            println!(
                "hvmm: AT verified {} pages in {} regions after boot; {} CPU(s) up",
                summary.verified_pages,
                summary.regions.len(),
                summary.cpus
            );
            if let Some(mc) = mm.mapcache(0).filter(|_| !mm.image_tables_writable()) {
                // The image's tables are read-only now: a CPU started later
                // (a guest's CPU_ON) has its boot-table entry written
                // through the starting CPU's slots.
                crate::smp::tables_sealed(mc.base());
                match mc.held(&mut arch::hw()) {
                    Ok(0) if mm.secret_free() => println!(
                        "hvmm: secret-free: no direct map, {} CPU roots, CPU 0 holds no mapcache slot",
                        mm.cpu_roots().count()
                    ),
                    Ok(0) => println!(
                        "hvmm: tables through mapcache slots, from a pool outside the direct map: {} CPU roots, CPU 0 holds no mapcache slot",
                        mm.cpu_roots().count()
                    ),
                    other => {
                        println!("hvmm: FAILED: CPU 0's mapcache still holds slots: {other:?}");
                        exit(EXIT_FAIL)
                    }
                }
            }
            if let Some(dp) = mm.domain_page(0).filter(|_| !mm.image_tables_writable()) {
                // arm32: the same, through domain-page slots.
                let base = hvmm_xen::layout::ARM32_LAYOUT
                    .domheap
                    .map_or(Vaddr(0), |d| d.start);
                crate::smp::tables_sealed_domain_page(base);
                match dp.held(&mut arch::hw()) {
                    Ok(0) => println!(
                        "hvmm: tables through domain-page slots, from a pool outside the xenheap: {} CPU roots, CPU 0 holds no domain-page reference",
                        mm.cpu_roots().count()
                    ),
                    other => {
                        println!("hvmm: FAILED: CPU 0's domain-page slots are still held: {other:?}");
                        exit(EXIT_FAIL)
                    }
                }
            }
            if info.has_bootarg("hvmm.fault=active") {
                deliberate_fault();
            }
            if info.has_bootarg("hvmm.fault=stack") {
                println!("hvmm: deliberate stack overflow: recursing into the guard page");
                overflow(0);
            }
            let mm = match info.bootarg_number("hvmm.stress") {
                Some(n) => {
                    let shared = hvmm_boot::stress::Shared::new(mm);
                    if let Err(e) = crate::stress::run(shared, summary.cpus, n) {
                        println!("(XEN) SMP stress FAILED: {e}");
                        exit(EXIT_FAIL)
                    }
                    None
                }
                None => {
                    crate::stress::release_secondaries();
                    Some(mm)
                }
            };
            if !crate::stack::report() {
                println!("hvmm: FAILED: the boot stack is nearly exhausted");
                exit(EXIT_FAIL)
            }
            println!("hvmm: boot checks passed");
            if let Some(mm) = mm.filter(|mm| mm.dom0.is_some()) {
                run_dom0(mm, summary.cpus);
            }
            exit(EXIT_OK)
        }
        Err(failed) => {
            println!("hvmm: FAILED: {}", failed.error);
            exit(EXIT_FAIL)
        }
    }
}

/// Runs domain 0.
fn run_dom0(mm: hvmm_boot::Mm<arch::Fmt>, cpus: usize) -> ! {
    crate::guest::run(mm, cpus)
}

/// Pages checked by [`verify_image`], per permission.
struct Verified {
    text: usize,
    rodata: usize,
    init: usize,
    data: usize,
}

/// Checks every page of the boot mapping with hardware translation: it
/// translates to the expected PA with the hypervisor's memory type, and text
/// and rodata refuse writes (permission fault at level 3).
fn verify_image(params: &BootParams) -> Verified {
    let mut hw = arch::hw();
    let mut v = Verified {
        text: 0,
        rodata: 0,
        init: 0,
        data: 0,
    };
    let text_end = params.layout.sections[0].end.0;
    let rodata_end = params.layout.sections[1].end.0;
    let init_end = params.layout.sections[2].end.0;
    let mut va = params.image.va.0;
    while va < params.image.va.0 + params.image.size {
        let expect = params.image.pa_of(Vaddr(va)).unwrap_or(Paddr(0));
        match hw.hw_translate(Vaddr(va), false) {
            Ok(r) if r.pa == expect && r.mair_attr == 0xff => {}
            Ok(r) => fail(format_args!(
                "VA {va:#x} translates to {} (attr {:#04x}), expected {expect} (attr 0xff)",
                r.pa, r.mair_attr
            )),
            Err(e) => fail(format_args!("VA {va:#x} does not translate: {e}")),
        }
        let writable = hw.hw_translate(Vaddr(va), true);
        if va < init_end {
            match writable {
                Err(e) if e.kind == FaultKind::Permission && e.level == 3 => {}
                Err(e) => fail(format_args!(
                    "AT write of read-only VA {va:#x}: unexpected {e}"
                )),
                Ok(_) => fail(format_args!("read-only VA {va:#x} is writable")),
            }
            if va < text_end {
                v.text += 1;
            } else if va < rodata_end {
                v.rodata += 1;
            } else {
                v.init += 1;
            }
        } else {
            if let Err(e) = writable {
                fail(format_args!("data VA {va:#x} is not writable: {e}"));
            }
            v.data += 1;
        }
        va += PAGE_SIZE;
    }
    v
}

/// `hvmm.fault=1`: read an unmapped VA; the vectors report the Data Abort.
/// Recurses with 1 KiB frames until the stack runs into its guard page
/// (`hvmm.fault=stack`): the write faults, and the vectors must still get
/// their report out, SP being inside the guard.
#[inline(never)]
fn overflow(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth as u8; 1024]);
    if core::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    let below = overflow(depth + 1);
    u64::from(frame[(depth % 1024) as usize]) + core::hint::black_box(below)
}

fn deliberate_fault() -> ! {
    println!(
        "hvmm: deliberate fault: reading unmapped VA {:#x}",
        layout::FAULT_VA
    );
    // SAFETY: not safe by design: the address is unmapped, the read takes a
    // Data Abort (translation fault) to the vectors, which report and exit.
    let v = unsafe { core::ptr::read_volatile(layout::FAULT_VA as usize as *const u32) };
    fail(format_args!(
        "the read of unmapped VA {:#x} returned {v:#x}",
        layout::FAULT_VA
    ))
}
