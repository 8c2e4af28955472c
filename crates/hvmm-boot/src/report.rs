//! The facts a boot produces, for the log, `--json` and tests.

use crate::mm::PhaseCounts;
use hvmm::{MemFault, Paddr, SystemState, Vaddr};
use hvmm_bootinfo::{KindSource, ModuleKind, ReservedSource};
use hvmm_bootinfo::{MAX_MODULES, MAX_RAM_BANKS, MAX_RESERVED};

/// Most regions a boot maps and verifies: a direct-map region per RAM bank
/// (arm64: at most 8 today) or the xenheap (arm32), the frametable, and the
/// image's sections — 12 at most today. A boot with more fails its
/// verification by name rather than skip any. (Not [`MAX_RAM_BANKS`] + 8:
/// every entry costs the image's boot stack.)
pub const MAX_REGIONS: usize = 24;
/// Most `copy_from_paddr` calls recorded (one per module read in early
/// boot, and the few after).
pub const MAX_COPIES: usize = MAX_MODULES;

/// A reserved range as the boot found it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ReservedFact {
    /// Physical start.
    pub start: Paddr,
    /// Size in bytes.
    pub size: u64,
    /// Where it came from.
    pub source: ReservedSource,
    /// Whether it is `no-map`.
    pub no_map: bool,
    /// Whether RAM holds all of it (a range outside RAM reserves nothing).
    pub in_ram: bool,
}

/// A boot module as the boot found it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ModuleFact {
    /// Physical start.
    pub start: Paddr,
    /// Size in bytes.
    pub size: u64,
    /// Kind.
    pub kind: ModuleKind,
    /// How the kind was decided.
    pub source: KindSource,
}

/// A mapping the boot made and verified at the end.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RegionFact {
    /// Name.
    pub name: &'static str,
    /// First VA.
    pub va: Vaddr,
    /// PA that `va` maps to.
    pub pa: Paddr,
    /// Size in bytes.
    pub size: u64,
    /// Whether writes are allowed.
    pub writable: bool,
    /// MAIR attribute byte expected.
    pub mair_attr: u8,
}

/// Everything a boot reports.
#[derive(Clone, Debug, Default)]
pub struct BootSummary {
    /// Architecture name.
    pub arch: &'static str,
    /// Physical address the image was found at (by AT).
    pub image_pa: Option<Paddr>,
    /// Image size.
    pub image_size: u64,
    /// The DTB's physical address.
    pub dtb_pa: Paddr,
    /// RAM banks (start, size).
    pub banks: heapless_list::List<(Paddr, u64), MAX_RAM_BANKS>,
    /// RAM banks of size zero the device tree had (skipped).
    pub empty_banks: usize,
    /// Reserved ranges.
    pub reserved: heapless_list::List<ReservedFact, MAX_RESERVED>,
    /// Modules.
    pub modules: heapless_list::List<ModuleFact, MAX_MODULES>,
    /// Regions mapped and verified.
    pub regions: heapless_list::List<RegionFact, MAX_REGIONS>,
    /// Counts per state (EarlyBoot, Boot, SmpBoot, Active).
    pub phases: [PhaseCounts; 4],
    /// `copy_from_paddr` calls in early boot: (PA, state, maps via image, maps via PMAP).
    pub early_copies: heapless_list::List<(Paddr, SystemState, u64, u64), MAX_COPIES>,
    /// CPUs up.
    pub cpus: usize,
    /// The highest physical address of a page-table page allocated at run time.
    pub highest_table: Paddr,
    /// Page-table pages allocated and still in use at the end.
    pub table_pages: u64,
    /// Pages verified by hardware translation at the end.
    pub verified_pages: u64,
    /// The state reached.
    pub state: Option<SystemState>,
    /// Free pages left in the page allocator.
    pub free_pages: u64,
    /// How many fault-injection points of each kind the boot passed.
    pub injection_points: InjectionPoints,
    /// PMAP slots still held (must be 0 whenever the boot stops).
    pub pmap_in_use: u32,
    /// Domain 0, when the boot built one.
    pub dom0: Option<Dom0Fact>,
    /// The arm64 secret-free mode (no direct map, per-CPU roots and
    /// mapcache slots).
    pub secret_free: bool,
    /// The end-of-boot audit's counts (also when it failed).
    pub audit: Option<crate::audit::AuditReport>,
}

/// What was built for domain 0.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Dom0Fact {
    /// Its RAM bank (IPA == PA): base, size.
    pub ram: (Paddr, u64),
    /// The kernel: IPA, size.
    pub kernel: (Paddr, u64),
    /// The entry point (IPA).
    pub entry: Paddr,
    /// The device tree: IPA, size.
    pub dtb: (Paddr, u64),
    /// The initrd: IPA, size (0 when there is none).
    pub initrd: (Paddr, u64),
    /// Device ranges mapped: how many.
    pub devices: usize,
    /// The stage-2 root.
    pub p2m_root: Paddr,
    /// Its VMID.
    pub vmid: u16,
    /// Stage-2 pool pages used / in all.
    pub pool_used: u64,
    /// Stage-2 pool size in pages.
    pub pool_pages: u64,
    /// Stage-2 leaves written.
    pub leaves: u64,
    /// Guest pages checked after the build (IPA == PA, attributes).
    pub checked_pages: u64,
}

/// Counts of the requests that fault injection can fail.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct InjectionPoints {
    /// Allocator requests (allocations and reservations).
    pub alloc: u64,
    /// PMAP slot acquisitions.
    pub pmap: u64,
    /// Fixmap slot acquisitions.
    pub fixmap: u64,
}

/// Where a failed boot stopped.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BootStep {
    /// Finding the image by hardware translation.
    ImageDiscovery,
    /// Building the runtime tables and switching to them.
    SetupPagetables,
    /// Mapping the DTB at the early FDT slot.
    EarlyFdtMap,
    /// Reading memory, reserved ranges and modules from the DTB.
    BootFdtInfo,
    /// Direct map (arm64) or xenheap (arm32), boot allocator.
    SetupMm,
    /// Frametable.
    Frametable,
    /// Handing the boot allocator over.
    EndBootAllocator,
    /// Populating the vmap area.
    Vmap,
    /// Starting secondary CPUs.
    SmpBringUp,
    /// Freeing init memory.
    FreeInitMem,
    /// Checking every mapping by hardware translation.
    Verify,
    /// Checking every leaf of every root against the declared layout.
    Audit,
    /// Building domain 0 from the boot modules.
    Dom0,
}

impl BootStep {
    /// Name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            BootStep::ImageDiscovery => "image discovery",
            BootStep::SetupPagetables => "setup_pagetables",
            BootStep::EarlyFdtMap => "early FDT map",
            BootStep::BootFdtInfo => "boot_fdt_info",
            BootStep::SetupMm => "setup_mm",
            BootStep::Frametable => "setup_frametable_mappings",
            BootStep::EndBootAllocator => "end_boot_allocator",
            BootStep::Vmap => "vm_init",
            BootStep::SmpBringUp => "smp bring-up",
            BootStep::FreeInitMem => "free_init_memory",
            BootStep::Verify => "verify mappings",
            BootStep::Audit => "address-space audit",
            BootStep::Dom0 => "construct_dom0",
        }
    }
}

/// Why a boot failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootError {
    /// The step.
    pub step: BootStep,
    /// The state the system was in.
    pub state: SystemState,
    /// What went wrong, as a sentence.
    pub message: heapless_list::Text,
    /// The hardware fault, if it was one.
    pub fault: Option<MemFault>,
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "boot failed in {} ({}): {}",
            self.step.name(),
            self.state,
            self.message.as_str()
        )
    }
}

impl core::error::Error for BootError {}

/// Fixed-capacity containers (no heap on hardware).
pub mod heapless_list {
    use core::fmt;

    /// A list of at most `N` items. Each list of a [`super::BootSummary`]
    /// holds as many as its source can have (the boot information's own
    /// capacities), so nothing is dropped; a push past `N` would be
    /// counted in `dropped`, not kept.
    #[derive(Clone, Debug)]
    pub struct List<T: Copy, const N: usize> {
        items: [Option<T>; N],
        len: usize,
        /// Items that did not fit.
        pub dropped: usize,
    }

    impl<T: Copy, const N: usize> Default for List<T, N> {
        fn default() -> Self {
            List {
                items: [None; N],
                len: 0,
                dropped: 0,
            }
        }
    }

    impl<T: Copy, const N: usize> List<T, N> {
        /// Appends, or counts the item as dropped when full.
        pub fn push(&mut self, t: T) {
            if self.len < N {
                self.items[self.len] = Some(t);
                self.len += 1;
            } else {
                self.dropped += 1;
            }
        }
        /// The items kept.
        pub fn iter(&self) -> impl Iterator<Item = &T> + Clone {
            self.items[..self.len].iter().flatten()
        }
        /// Number kept.
        pub fn len(&self) -> usize {
            self.len
        }
        /// Whether empty.
        pub fn is_empty(&self) -> bool {
            self.len == 0
        }
    }

    /// A short message in a fixed buffer (truncated at 240 bytes).
    #[derive(Clone, PartialEq, Eq)]
    pub struct Text {
        buf: [u8; 240],
        len: usize,
    }

    impl Default for Text {
        fn default() -> Self {
            Text {
                buf: [0; 240],
                len: 0,
            }
        }
    }

    impl Text {
        /// Formats `args` into a new text.
        pub fn from_fmt(args: fmt::Arguments<'_>) -> Self {
            let mut t = Text::default();
            let _ = fmt::write(&mut t, args);
            t
        }
        /// The text.
        pub fn as_str(&self) -> &str {
            match core::str::from_utf8(&self.buf[..self.len]) {
                Ok(s) => s,
                // Truncation can split a character: keep the valid prefix.
                Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
            }
        }
    }

    impl fmt::Write for Text {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let n = s.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            Ok(())
        }
    }

    impl fmt::Debug for Text {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            fmt::Debug::fmt(self.as_str(), f)
        }
    }
}
