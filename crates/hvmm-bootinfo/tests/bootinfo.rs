//! Behaviour of `BootInfo::parse` and `BootInfo::free_ranges`, one
//! behaviour per test.

use hvmm::Paddr;
use hvmm_bootinfo::builder::VirtBoard;
use hvmm_bootinfo::*;
use std::collections::HashMap;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const RAM: u64 = 0x4000_0000;
const IMAGE: (Paddr, u64) = (Paddr(0x4020_0000), 2 * MIB);
const DTB_AT: (Paddr, u64) = (Paddr(0x4800_0000), 0x10_0000);

fn params() -> ParseParams {
    ParseParams {
        pa_bits: 48,
        image: IMAGE,
        dtb: DTB_AT,
    }
}

fn parse(dtb: &[u8]) -> Result<BootInfo<'_>, BootInfoError> {
    BootInfo::parse(dtb, &params(), &mut NoReader)
}

fn err(dtb: &[u8]) -> BootInfoError {
    match parse(dtb) {
        Ok(info) => panic!("expected an error, parsed {info:?}"),
        Err(e) => e,
    }
}

fn range(base: u64, size: u64) -> MemRange {
    MemRange::new(Paddr(base), size).expect("valid range")
}

fn rsv(range: MemRange, source: ReservedSource, no_map: bool) -> Reserved {
    Reserved {
        range,
        source,
        no_map,
    }
}

/// A reader over a few fake memory words that records every read.
#[derive(Default)]
struct FakeMemory {
    words: HashMap<u64, [u8; 4]>,
    reads: Vec<Paddr>,
}

impl FakeMemory {
    fn with_xsm_at(addrs: &[u64]) -> Self {
        let mut m = FakeMemory::default();
        for &a in addrs {
            m.words.insert(a, XSM_MAGIC.to_le_bytes());
        }
        m
    }
}

impl ModuleReader for FakeMemory {
    type Error = &'static str;
    fn read(&mut self, pa: Paddr, buf: &mut [u8]) -> Result<(), &'static str> {
        self.reads.push(pa);
        let w = self
            .words
            .get(&pa.0)
            .copied()
            .unwrap_or([0x1f, 0x8b, 0x08, 0x00]);
        buf.copy_from_slice(&w[..buf.len()]);
        Ok(())
    }
}

struct FailingReader;
impl ModuleReader for FailingReader {
    type Error = &'static str;
    fn read(&mut self, _pa: Paddr, _buf: &mut [u8]) -> Result<(), &'static str> {
        Err("fixmap slot busy")
    }
}

// ---------------------------------------------------------------- QEMU's own

#[test]
fn qemu_arm64_virt_dtb_has_one_gib_at_0x4000_0000_and_nothing_else() {
    let dtb = include_bytes!("data/virt-arm64.dtb");
    let info = parse(dtb).expect("QEMU's arm64 virt DTB parses");
    assert_eq!(
        info.ram_banks().iter().copied().collect::<Vec<_>>(),
        [range(RAM, GIB)]
    );
    assert!(info.modules().is_empty());
    assert!(info.reserved().is_empty());
    assert_eq!(info.bootargs(), None);
}

#[test]
fn qemu_arm32_virt_dtb_parses_with_40_bit_pa() {
    let dtb = include_bytes!("data/virt-arm32.dtb");
    let p = ParseParams {
        pa_bits: 40,
        image: (Paddr(0x4001_0000), MIB),
        dtb: DTB_AT,
    };
    let info = BootInfo::parse(dtb, &p, &mut NoReader).expect("QEMU's arm32 virt DTB parses");
    assert_eq!(
        info.ram_banks().iter().copied().collect::<Vec<_>>(),
        [range(RAM, GIB)]
    );
    assert_eq!(info.total_ram(), GIB);
}

#[test]
fn qemu_dtb_with_uboot_style_typed_modules_is_parsed() {
    let dtb = include_bytes!("data/virt-arm64-typed.dtb");
    let mut mem = FakeMemory::default();
    let info = BootInfo::parse(dtb, &params(), &mut mem).expect("typed QEMU DTB parses");
    let got: Vec<_> = info
        .modules()
        .iter()
        .map(|m| (m.kind, m.source, m.range, m.bootargs))
        .collect();
    assert_eq!(
        got,
        [
            (
                ModuleKind::Kernel,
                KindSource::Typed,
                range(0x4900_0000, 8 * MIB),
                Some("console=hvc0 root=/dev/vda")
            ),
            (
                ModuleKind::Ramdisk,
                KindSource::Typed,
                range(0x4a00_0000, 4 * MIB),
                None
            ),
        ]
    );
    assert!(mem.reads.is_empty());
    assert_eq!(info.bootargs(), Some("console=ttyAMA0 earlycon"));
    assert_eq!(info.hypervisor_cmdline(), Some("dom0_mem=512M loglvl=all"));
}

#[test]
fn dtb_longer_than_its_totalsize_is_read_up_to_totalsize() {
    let mut dtb = include_bytes!("data/virt-arm64.dtb").to_vec();
    assert_eq!(dtb::total_size(&dtb), Ok(dtb.len()));
    dtb.extend_from_slice(&[0xff; 4096]);
    assert!(parse(&dtb).is_ok());
}

// ------------------------------------------------------------ RAM banks

#[test]
fn builder_board_like_qemu_is_parsed() {
    let dtb = VirtBoard::qemu_default()
        .bootargs("console=ttyAMA0")
        .cpus(4)
        .build();
    let info = parse(&dtb).unwrap();
    assert_eq!(info.ram_banks().len(), 1);
    assert_eq!(*info.ram_banks().get(0).unwrap(), range(RAM, GIB));
    assert_eq!(info.bootargs(), Some("console=ttyAMA0"));
    assert_eq!(info.hypervisor_cmdline(), Some("console=ttyAMA0"));
}

#[test]
fn several_banks_from_several_nodes_and_several_reg_entries() {
    let dtb = VirtBoard::new()
        .memory_node(&[(RAM, GIB), (0x8_8000_0000, 2 * GIB)])
        .ram(0x80_0000_0000, 4 * GIB)
        .build();
    let info = parse(&dtb).unwrap();
    let banks: Vec<_> = info.ram_banks().iter().copied().collect();
    assert_eq!(
        banks,
        [
            range(RAM, GIB),
            range(0x8_8000_0000, 2 * GIB),
            range(0x80_0000_0000, 4 * GIB)
        ]
    );
    assert_eq!(info.total_ram(), 7 * GIB);
}

#[test]
fn root_cell_sizes_are_honoured() {
    let dtb = VirtBoard::new().root_cells(1, 1).ram(RAM, GIB).build();
    let info = parse(&dtb).unwrap();
    assert_eq!(*info.ram_banks().get(0).unwrap(), range(RAM, GIB));
}

// ------------------------------------------------------------ reserved

#[test]
fn reserved_memory_children_and_memreserve_entries_are_recorded() {
    let dtb = VirtBoard::qemu_default()
        .memreserve(0x4100_0000, 0x1000)
        .reserved_memory(0x5000_0000, 16 * MIB)
        .reserved_memory(0x6000_0000, MIB)
        .build();
    let info = parse(&dtb).unwrap();
    let got: Vec<_> = info
        .reserved()
        .iter()
        .map(|r| (r.range, r.source))
        .collect();
    assert_eq!(
        got,
        [
            (range(0x4100_0000, 0x1000), ReservedSource::MemReserve),
            (range(0x5000_0000, 16 * MIB), ReservedSource::ReservedMemory),
            (range(0x6000_0000, MIB), ReservedSource::ReservedMemory),
        ]
    );
}

// ------------------------------------------------------------ bootargs

#[test]
fn xen_bootargs_is_the_hypervisor_command_line_when_present() {
    let dtb = VirtBoard::qemu_default()
        .bootargs("console=hvc0")
        .xen_bootargs("loglvl=all")
        .build();
    let info = parse(&dtb).unwrap();
    assert_eq!(info.bootargs(), Some("console=hvc0"));
    assert_eq!(info.xen_bootargs(), Some("loglvl=all"));
    assert_eq!(info.hypervisor_cmdline(), Some("loglvl=all"));
}

#[test]
fn bootargs_that_are_not_terminated_utf8_are_refused() {
    let dtb = VirtBoard::qemu_default()
        .chosen_raw_property("bootargs", &[0xff, 0xfe, 0])
        .build();
    assert_eq!(
        err(&dtb),
        BootInfoError::BadString {
            node: "/chosen",
            property: "bootargs"
        }
    );
}

// ------------------------------------------------------------ modules

#[test]
fn typed_modules_are_taken_as_given_without_reading() {
    let dtb = VirtBoard::qemu_default()
        .module_with(
            0x4900_0000,
            8 * MIB,
            &["xen,linux-zimage", "xen,multiboot-module"],
            Some("root=/dev/vda"),
        )
        .typed_module(0x4a00_0000, 4 * MIB, "multiboot,ramdisk")
        .typed_module(0x4b00_0000, 0x1000, "xen,xsm-policy")
        .typed_module(0x4c00_0000, MIB, "multiboot,kernel")
        .typed_module(0x4d00_0000, MIB, "xen,linux-initrd")
        .build();
    let mut mem = FakeMemory::default();
    let info = BootInfo::parse(&dtb, &params(), &mut mem).unwrap();
    let kinds: Vec<_> = info.modules().iter().map(|m| (m.kind, m.source)).collect();
    use ModuleKind::*;
    assert_eq!(
        kinds,
        [Kernel, Ramdisk, XsmPolicy, Kernel, Ramdisk].map(|k| (k, KindSource::Typed))
    );
    assert!(mem.reads.is_empty(), "typed modules are never read");
    let kernel = info.module(Kernel).unwrap();
    assert_eq!(kernel.range, range(0x4900_0000, 8 * MIB));
    assert_eq!(kernel.bootargs, Some("root=/dev/vda"));
    assert_eq!(kernel.name, "module@49000000");
}

#[test]
fn grub_untyped_modules_are_guessed_reading_all_but_the_first() {
    let (k, r, x) = (0x7000_0000, 0x7100_0000, 0x7200_0000);
    let dtb = VirtBoard::qemu_default()
        .module_with(k, 8 * MIB, &["multiboot,module"], Some("console=hvc0"))
        .module(r, 4 * MIB, "multiboot,module")
        .module(x, 0x4000, "multiboot,module")
        .build();
    let mut mem = FakeMemory::with_xsm_at(&[x]);
    let info = BootInfo::parse(&dtb, &params(), &mut mem).unwrap();
    let kinds: Vec<_> = info.modules().iter().map(|m| (m.kind, m.source)).collect();
    assert_eq!(
        kinds,
        [
            (ModuleKind::Kernel, KindSource::Guessed { read: false }),
            (ModuleKind::Ramdisk, KindSource::Guessed { read: true }),
            (ModuleKind::XsmPolicy, KindSource::Guessed { read: true }),
        ]
    );
    assert_eq!(
        mem.reads,
        [Paddr(r), Paddr(x)],
        "the reader is called for the 2nd and 3rd module only"
    );
}

/// The kinds `board`'s modules are given when the words at `xsm_at` hold
/// the XSM magic, and the addresses read to find out.
fn guess(board: VirtBoard, xsm_at: &[u64]) -> (Vec<ModuleKind>, Vec<Paddr>) {
    let dtb = board.build();
    let mut mem = FakeMemory::with_xsm_at(xsm_at);
    let info = BootInfo::parse(&dtb, &params(), &mut mem).unwrap();
    let kinds = info.modules().iter().map(|m| m.kind).collect();
    (kinds, mem.reads)
}

/// QEMU's board with an untyped module of 1 MiB at each of `addrs`.
fn untyped(addrs: &[u64]) -> VirtBoard {
    then_untyped(VirtBoard::qemu_default(), addrs)
}

/// `board` with an untyped module of 1 MiB at each of `addrs` after its own.
fn then_untyped(board: VirtBoard, addrs: &[u64]) -> VirtBoard {
    addrs
        .iter()
        .fold(board, |b, &a| b.module(a, MIB, "multiboot,module"))
}

#[test]
fn a_policy_in_second_place_leaves_no_ramdisk_as_in_xen() {
    // Xen's rule: the second untyped module is the ramdisk unless it is a
    // policy; the third is a policy or nothing. A ramdisk placed after the
    // policy is not one (GRUB users must put the initrd second).
    let addrs = [0x7000_0000, 0x7100_0000, 0x7200_0000];
    let (kinds, _) = guess(untyped(&addrs), &[0x7100_0000]);
    use ModuleKind::*;
    assert_eq!(kinds, [Kernel, XsmPolicy, Unknown]);
}

#[test]
fn later_untyped_modules_are_policies_only_by_their_magic() {
    // Kernel, ramdisk, then: policy, unknown, policy (by magic, anywhere
    // from the second on); the first is never read, even with the magic.
    let addrs = [
        0x7000_0000u64,
        0x7100_0000,
        0x7200_0000,
        0x7300_0000,
        0x7400_0000,
    ];
    let (kinds, reads) = guess(untyped(&addrs), &[addrs[0], addrs[2], addrs[4]]);
    use ModuleKind::*;
    assert_eq!(kinds, [Kernel, Ramdisk, XsmPolicy, Unknown, XsmPolicy]);
    assert_eq!(
        reads,
        addrs[1..].iter().map(|&a| Paddr(a)).collect::<Vec<_>>()
    );
}

#[test]
fn typed_modules_do_not_count_in_the_untyped_order() {
    // A typed kernel first: the first *untyped* module is still guessed a
    // kernel, the second a ramdisk (Xen counts untyped modules only).
    let typed = VirtBoard::qemu_default().typed_module(0x6000_0000, MIB, "multiboot,kernel");
    let board = then_untyped(typed, &[0x7000_0000, 0x7100_0000]);
    let (kinds, _) = guess(board, &[]);
    use ModuleKind::*;
    assert_eq!(kinds, [Kernel, Kernel, Ramdisk]);
}

#[test]
fn kind_compatibles_take_xens_precedence_and_guest_dtbs_are_typed() {
    // Kernel before ramdisk whatever the order in the list; a guest device
    // tree and microcode are typed (not guessed, not counted).
    let dtb = VirtBoard::qemu_default()
        .module_with(
            0x6000_0000,
            MIB,
            &["multiboot,ramdisk", "multiboot,kernel", "multiboot,module"],
            None,
        )
        .typed_module(0x6100_0000, MIB, "multiboot,device-tree")
        .typed_module(0x6200_0000, MIB, "multiboot,microcode")
        .module(0x7000_0000, MIB, "multiboot,module")
        .build();
    let mut mem = FakeMemory::default();
    let info = BootInfo::parse(&dtb, &params(), &mut mem).unwrap();
    let kinds: Vec<_> = info.modules().iter().map(|m| (m.kind, m.source)).collect();
    use ModuleKind::*;
    assert_eq!(
        kinds,
        [
            (Kernel, KindSource::Typed),
            (GuestDtb, KindSource::Typed),
            (Microcode, KindSource::Typed),
            (Kernel, KindSource::Guessed { read: false }),
        ]
    );
    assert!(mem.reads.is_empty());
}

#[test]
fn a_kind_compatible_without_multiboot_module_is_refused() {
    // Xen skips such a node without a word; hvmm names it.
    let dtb = VirtBoard::qemu_default()
        .typed_module(0x6000_0000, MIB, "multiboot,kernel")
        .module(0x7000_0000, MIB, "multiboot,ramdisk")
        .build();
    assert_eq!(
        err(&dtb),
        BootInfoError::NotAMultibootModule {
            index: 1,
            kind: ModuleKind::Ramdisk
        }
    );
}

#[test]
fn a_second_untyped_non_policy_after_the_ramdisk_is_unknown() {
    let (kinds, _) = guess(untyped(&[0x7000_0000, 0x7100_0000, 0x7200_0000]), &[]);
    assert_eq!(
        kinds,
        [ModuleKind::Kernel, ModuleKind::Ramdisk, ModuleKind::Unknown]
    );
}

#[test]
fn chosen_children_without_a_module_compatible_are_not_modules() {
    let dtb = VirtBoard::qemu_default()
        .module(0x7000_0000, MIB, "xen,domain")
        .typed_module(0x7100_0000, MIB, "multiboot,kernel")
        .build();
    let info = parse(&dtb).unwrap();
    assert_eq!(info.modules().len(), 1);
    assert_eq!(info.modules().get(0).unwrap().kind, ModuleKind::Kernel);
}

#[test]
fn module_regs_use_chosen_default_cells_when_chosen_has_none() {
    let dtb = VirtBoard::qemu_default()
        .chosen_cells(None)
        .typed_module(0x7000_0000, MIB, "multiboot,kernel")
        .build();
    let info = parse(&dtb).unwrap();
    assert_eq!(
        info.modules().get(0).unwrap().range,
        range(0x7000_0000, MIB)
    );
}

#[test]
fn a_failing_read_is_reported_with_the_module_index_and_address() {
    let dtb = VirtBoard::qemu_default()
        .module(0x7000_0000, MIB, "multiboot,module")
        .module(0x7100_0000, MIB, "multiboot,module")
        .build();
    let e = BootInfo::parse(&dtb, &params(), &mut FailingReader).unwrap_err();
    assert_eq!(
        e,
        BootInfoError::ModuleRead {
            index: 1,
            addr: Paddr(0x7100_0000)
        }
    );
}

#[test]
fn a_module_spanning_two_adjacent_banks_is_inside_ram() {
    let dtb = VirtBoard::new()
        .ram(RAM, GIB)
        .ram(RAM + GIB, GIB)
        .typed_module(RAM + GIB - MIB, 2 * MIB, "multiboot,kernel")
        .build();
    assert!(parse(&dtb).is_ok());
}

// ------------------------------------------------------------ bad inputs

#[test]
fn no_memory_node_is_refused() {
    assert_eq!(err(&VirtBoard::new().build()), BootInfoError::NoMemory);
}

#[test]
fn a_memory_node_with_an_empty_reg_is_no_ram() {
    assert_eq!(
        err(&VirtBoard::new().memory_node(&[]).build()),
        BootInfoError::NoMemory
    );
}

#[test]
fn a_zero_sized_bank_is_skipped_as_xen_does() {
    let dtb = VirtBoard::qemu_default().ram(0x1_0000_0000, 0).build();
    let info = parse(&dtb).unwrap();
    assert_eq!(
        info.ram_banks().iter().copied().collect::<Vec<_>>(),
        [range(RAM, GIB)]
    );
    assert_eq!(info.memory().empty_banks(), 1);
}

#[test]
fn only_empty_banks_are_no_ram() {
    let dtb = VirtBoard::new()
        .memory_node(&[(0, 0), (0x8000_0000, 0)])
        .build();
    assert_eq!(err(&dtb), BootInfoError::NoMemory);
    let map = MemoryMap::parse(&dtb, 48).expect("no RAM is not an error for the map");
    assert!(map.ram_banks().is_empty());
    assert_eq!(map.empty_banks(), 2);
}

#[test]
fn a_bank_wrapping_past_64_bits_is_refused() {
    let dtb = VirtBoard::new().ram(u64::MAX - 0xfff, 0x2000).build();
    assert_eq!(
        err(&dtb),
        BootInfoError::BankOverflow {
            base: Paddr(u64::MAX - 0xfff),
            size: 0x2000
        }
    );
}

#[test]
fn a_bank_beyond_the_pa_size_is_refused() {
    let dtb = VirtBoard::qemu_default()
        .ram(0xff_c000_0000, 2 * GIB)
        .build();
    let p = ParseParams {
        pa_bits: 40,
        ..params()
    };
    let e = BootInfo::parse(&dtb, &p, &mut NoReader).unwrap_err();
    assert_eq!(
        e,
        BootInfoError::BankBeyondPaSize {
            bank: range(0xff_c000_0000, 2 * GIB),
            pa_bits: 40
        }
    );
    // The same bank is fine with 48 bits.
    assert!(parse(&dtb).is_ok());
}

#[test]
fn overlapping_banks_are_refused() {
    let dtb = VirtBoard::qemu_default().ram(RAM + GIB - MIB, GIB).build();
    assert_eq!(
        err(&dtb),
        BootInfoError::BanksOverlap {
            first: range(RAM, GIB),
            second: range(RAM + GIB - MIB, GIB)
        }
    );
}

#[test]
fn a_reg_that_is_not_a_whole_number_of_entries_is_refused() {
    let dtb = VirtBoard::new().memory_node(&[(RAM, GIB)]).build();
    let ragged = patch_reg_len(&dtb, 12);
    assert_eq!(
        err(&ragged),
        BootInfoError::BadReg {
            node: "memory",
            index: 0
        }
    );
}

/// Shrinks the first 16-byte `reg` property to `len` bytes (keeping the
/// blob's layout by padding with a NOP).
fn patch_reg_len(dtb: &[u8], len: u32) -> Vec<u8> {
    let mut out = dtb.to_vec();
    // PROP token, len 16: 00000003 00000010
    let needle = [0, 0, 0, 3, 0, 0, 0, 16];
    let at = out
        .windows(8)
        .position(|w| w == needle)
        .expect("a 16-byte property");
    out[at + 4..at + 8].copy_from_slice(&len.to_be_bytes());
    // The value's last (16 - len) bytes become NOP tokens.
    let value = at + 12;
    for off in (value + len as usize..value + 16).step_by(4) {
        out[off..off + 4].copy_from_slice(&4u32.to_be_bytes());
    }
    out
}

#[test]
fn a_zero_sized_module_is_refused() {
    let dtb = VirtBoard::qemu_default()
        .typed_module(0x7000_0000, 0, "multiboot,kernel")
        .build();
    assert_eq!(
        err(&dtb),
        BootInfoError::ZeroSizedModule {
            index: 0,
            base: Paddr(0x7000_0000)
        }
    );
}

#[test]
fn overlapping_modules_are_refused() {
    let dtb = VirtBoard::qemu_default()
        .typed_module(0x7000_0000, 2 * MIB, "multiboot,kernel")
        .typed_module(0x7010_0000, MIB, "multiboot,ramdisk")
        .build();
    assert_eq!(
        err(&dtb),
        BootInfoError::ModulesOverlap {
            first: 0,
            second: 1,
            first_range: range(0x7000_0000, 2 * MIB),
            second_range: range(0x7010_0000, MIB),
        }
    );
}

#[test]
fn a_module_over_the_image_is_refused() {
    let dtb = VirtBoard::qemu_default()
        .typed_module(0x4030_0000, 2 * MIB, "multiboot,kernel")
        .build();
    assert_eq!(
        err(&dtb),
        BootInfoError::ModuleOverlapsImage {
            index: 0,
            module: range(0x4030_0000, 2 * MIB),
            image: range(IMAGE.0 .0, IMAGE.1),
        }
    );
}

#[test]
fn a_module_not_wholly_inside_ram_is_refused() {
    let dtb = VirtBoard::qemu_default()
        .typed_module(RAM + GIB - MIB, 2 * MIB, "multiboot,kernel")
        .build();
    assert_eq!(
        err(&dtb),
        BootInfoError::ModuleOutsideRam {
            index: 0,
            module: range(RAM + GIB - MIB, 2 * MIB)
        }
    );
}

#[test]
fn the_dtb_overlapping_a_module_is_refused() {
    let dtb = VirtBoard::qemu_default()
        .typed_module(0x4800_8000, MIB, "multiboot,kernel")
        .build();
    assert_eq!(
        err(&dtb),
        BootInfoError::DtbOverlapsModule {
            index: 0,
            module: range(0x4800_8000, MIB),
            dtb: range(DTB_AT.0 .0, DTB_AT.1),
        }
    );
}

#[test]
fn too_many_banks_is_a_named_error() {
    let banks: Vec<_> = (0..=MAX_RAM_BANKS as u64)
        .map(|i| (RAM + i * GIB, GIB))
        .collect();
    let dtb = VirtBoard::new().memory_node(&banks).build();
    assert_eq!(
        err(&dtb),
        BootInfoError::TooManyBanks { max: MAX_RAM_BANKS }
    );
}

#[test]
fn too_many_modules_is_a_named_error() {
    let mut b = VirtBoard::qemu_default();
    for i in 0..=MAX_MODULES as u64 {
        b = b.typed_module(0x6000_0000 + i * MIB, 0x1000, "multiboot,ramdisk");
    }
    assert_eq!(
        err(&b.build()),
        BootInfoError::TooManyModules { max: MAX_MODULES }
    );
}

#[test]
fn too_many_reserved_ranges_is_a_named_error() {
    let mut b = VirtBoard::qemu_default();
    for i in 0..=MAX_RESERVED as u64 {
        b = b.reserved_memory(0x6000_0000 + i * MIB, 0x1000);
    }
    assert_eq!(
        err(&b.build()),
        BootInfoError::TooManyReserved { max: MAX_RESERVED }
    );
}

#[test]
fn an_unsupported_pa_size_is_refused() {
    let dtb = VirtBoard::qemu_default().build();
    let p = ParseParams {
        pa_bits: 64,
        ..params()
    };
    assert_eq!(
        BootInfo::parse(&dtb, &p, &mut NoReader).unwrap_err(),
        BootInfoError::BadPaBits { pa_bits: 64 }
    );
}

#[test]
fn a_blob_without_the_fdt_magic_is_refused() {
    let mut dtb = VirtBoard::qemu_default().build();
    dtb[0] = 0;
    assert_eq!(
        err(&dtb),
        BootInfoError::Dtb(DtbError::BadMagic { found: 0x000d_feed })
    );
}

#[test]
fn truncated_dtbs_are_refused_at_every_length() {
    let dtb = VirtBoard::qemu_default()
        .typed_module(0x7000_0000, MIB, "multiboot,kernel")
        .build();
    for len in 0..dtb.len() {
        match parse(&dtb[..len]) {
            Err(BootInfoError::Dtb(_)) => {}
            other => panic!("truncated to {len}: {other:?}"),
        }
    }
}

#[test]
fn a_truncated_structure_block_is_refused_even_with_a_consistent_header() {
    // Shrink size_dt_struct so the block ends inside the tree.
    let dtb = VirtBoard::qemu_default().build();
    for cut in [4u32, 8, 40, 100] {
        let mut bad = dtb.clone();
        let size = u32::from_be_bytes(bad[36..40].try_into().unwrap());
        bad[36..40].copy_from_slice(&(size - cut).to_be_bytes());
        assert!(
            matches!(err(&bad), BootInfoError::Dtb(_)),
            "struct block cut by {cut}"
        );
    }
}

#[test]
fn every_error_says_what_is_wrong_in_a_sentence() {
    let r = range(0x1000, 0x1000);
    let all = [
        BootInfoError::Dtb(DtbError::TooShort { len: 3 }),
        BootInfoError::BadPaBits { pa_bits: 7 },
        BootInfoError::BadParam {
            what: "image",
            base: Paddr(0),
            size: 0,
        },
        BootInfoError::BadCells { node: "/" },
        BootInfoError::BadReg {
            node: "memory",
            index: 0,
        },
        BootInfoError::BadString {
            node: "/chosen",
            property: "bootargs",
        },
        BootInfoError::NoMemory,
        BootInfoError::BankOverflow {
            base: Paddr(0),
            size: 0,
        },
        BootInfoError::BankBeyondPaSize {
            bank: r,
            pa_bits: 40,
        },
        BootInfoError::BanksOverlap {
            first: r,
            second: r,
        },
        BootInfoError::ReservedOverflow {
            base: Paddr(0),
            size: 0,
        },
        BootInfoError::ZeroSizedModule {
            index: 0,
            base: Paddr(0),
        },
        BootInfoError::ModuleOverflow {
            index: 0,
            base: Paddr(0),
            size: 0,
        },
        BootInfoError::ModulesOverlap {
            first: 0,
            second: 1,
            first_range: r,
            second_range: r,
        },
        BootInfoError::ModuleOverlapsImage {
            index: 0,
            module: r,
            image: r,
        },
        BootInfoError::ModuleOutsideRam {
            index: 0,
            module: r,
        },
        BootInfoError::DtbOverlapsModule {
            index: 0,
            module: r,
            dtb: r,
        },
        BootInfoError::TooManyBanks { max: 1 },
        BootInfoError::TooManyReserved { max: 1 },
        BootInfoError::TooManyModules { max: 1 },
        BootInfoError::TooManyFreeRanges { max: 1 },
        BootInfoError::ModuleRead {
            index: 0,
            addr: Paddr(0),
        },
        BootInfoError::ReservedOverlap {
            first: rsv(r, ReservedSource::MemReserve, false),
            second: rsv(r, ReservedSource::ReservedMemory, true),
        },
        BootInfoError::InReserved {
            item: Placed::Module(0),
            range: r,
            reserved: rsv(r, ReservedSource::ReservedMemory, true),
        },
        BootInfoError::NotAMultibootModule {
            index: 0,
            kind: ModuleKind::Kernel,
        },
    ];
    let texts: Vec<String> = all.iter().map(|e| e.to_string()).collect();
    for (e, t) in all.iter().zip(&texts) {
        assert!(t.len() > 15, "{e:?} → {t:?}");
    }
    let mut dedup = texts.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), texts.len(), "messages are distinct");
}

// ------------------------------------------------------------ free ranges

#[test]
fn free_ranges_exclude_image_dtb_modules_reserved_and_firmware_ranges() {
    let dtb = VirtBoard::new()
        .ram(0x1_0000_0000, GIB)
        .ram(RAM, GIB)
        .memreserve(0x4100_0800, 0x100) // partial page: whole page goes
        .reserved_memory(0x5000_0000, MIB)
        .typed_module(0x6000_0000, 0x1800, "multiboot,kernel") // ends mid-page
        .typed_module(0x7000_0000, MIB, "multiboot,ramdisk")
        .build();
    let info = parse(&dtb).unwrap();
    let firmware = [range(0x1_2000_0000, MIB)];
    let free = info.free_ranges(&firmware).unwrap();
    let got: Vec<_> = free.iter().copied().collect();
    let b = |s: u64, e: u64| MemRange::from_bounds(Paddr(s), Paddr(e)).unwrap();
    assert_eq!(
        got,
        [
            b(RAM, 0x4020_0000),
            b(0x4040_0000, 0x4100_0000),
            b(0x4100_1000, 0x4800_0000),
            b(0x4810_0000, 0x5000_0000),
            b(0x5010_0000, 0x6000_0000),
            b(0x6000_2000, 0x7000_0000),
            b(0x7010_0000, 0x8000_0000),
            b(0x1_0000_0000, 0x1_2000_0000),
            b(0x1_2010_0000, 0x1_4000_0000),
        ]
    );
    for r in free.iter() {
        assert!(
            r.base().is_aligned(4096) && r.end().is_aligned(4096),
            "{r:?} page aligned"
        );
    }
    for w in got.windows(2) {
        assert!(w[0].end() <= w[1].base(), "sorted and disjoint");
    }
    let holes = [info.image(), info.dtb()]
        .into_iter()
        .chain(info.modules().iter().map(|m| m.range))
        .chain(info.reserved().iter().map(|r| r.range))
        .chain(firmware);
    for hole in holes {
        assert!(got.iter().all(|r| !r.overlaps(&hole)), "{hole:?} excluded");
    }
}

#[test]
fn free_ranges_of_a_plain_board_are_ram_minus_image_and_dtb() {
    let info_dtb = VirtBoard::qemu_default().build();
    let info = parse(&info_dtb).unwrap();
    let free = info.free_ranges(&[]).unwrap();
    let total: u64 = free.iter().map(|r| r.size()).sum();
    assert_eq!(total, GIB - IMAGE.1 - DTB_AT.1);
}

#[test]
fn free_ranges_overflowing_their_capacity_is_a_named_error() {
    let info_dtb = VirtBoard::qemu_default().build();
    let info = parse(&info_dtb).unwrap();
    let holes: Vec<_> = (0..MAX_FREE_RANGES as u64 + 1)
        .map(|i| range(0x5000_0000 + i * 0x10_000, 0x1000))
        .collect();
    assert_eq!(
        info.free_ranges(&holes).unwrap_err(),
        BootInfoError::TooManyFreeRanges {
            max: MAX_FREE_RANGES
        }
    );
}
