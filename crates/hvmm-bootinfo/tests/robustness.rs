//! No input makes parsing panic: arbitrary bytes, truncations and mutations
//! of valid trees give `Ok` or a named error.

use hvmm::Paddr;
use hvmm_bootinfo::builder::VirtBoard;
use hvmm_bootinfo::*;
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

fn params() -> ParseParams {
    ParseParams {
        pa_bits: 48,
        image: (Paddr(0x4020_0000), 2 * MIB),
        dtb: (Paddr(0x4800_0000), MIB),
    }
}

/// Answers every read with the XSM magic, so both guess paths run.
struct AnyMemory;
impl ModuleReader for AnyMemory {
    type Error = ();
    fn read(&mut self, pa: Paddr, buf: &mut [u8]) -> Result<(), ()> {
        let w = if pa.0 & 0x10_0000 != 0 {
            XSM_MAGIC.to_le_bytes()
        } else {
            [0; 4]
        };
        buf.copy_from_slice(&w[..buf.len()]);
        Ok(())
    }
}

/// Parses and, on success, exercises every accessor and `free_ranges`.
fn exercise(bytes: &[u8]) {
    if let Ok(info) = BootInfo::parse(bytes, &params(), &mut AnyMemory) {
        let _ = info.total_ram();
        let _ = info.hypervisor_cmdline();
        let _ = info.free_ranges(&[]);
        for m in info.modules().iter() {
            let _ = (m.range.end(), m.bootargs, m.name);
        }
    }
    // The raw reader too, walking every node and property.
    if let Ok(tree) = Dtb::new(bytes) {
        let _ = tree.reservations().count();
        walk(tree.root(), 0);
    }
}

fn walk(node: dtb::Node<'_>, depth: usize) {
    assert!(depth <= dtb::MAX_DEPTH);
    for p in node.properties() {
        let _ = (p.as_str(), p.as_u32(), p.strings().count());
    }
    for c in node.children() {
        walk(c, depth + 1);
    }
}

fn rich_board() -> Vec<u8> {
    VirtBoard::qemu_default()
        .ram(0x1_0000_0000, 1 << 30)
        .bootargs("console=hvc0")
        .xen_bootargs("loglvl=all")
        .memreserve(0x4100_0000, 0x1000)
        .reserved_memory(0x5000_0000, MIB)
        .module_with(
            0x7000_0000,
            MIB,
            &["multiboot,module"],
            Some("root=/dev/vda"),
        )
        .module(0x7010_0000, MIB, "multiboot,module")
        .module(0x7020_0000, MIB, "multiboot,module")
        .cpus(2)
        .build()
}

#[test]
fn every_single_byte_corruption_of_a_valid_tree_is_handled() {
    let dtb = rich_board();
    assert!(BootInfo::parse(&dtb, &params(), &mut AnyMemory).is_ok());
    for i in 0..dtb.len() {
        for v in [0x00, 0xff, dtb[i].wrapping_add(1), dtb[i] ^ 0x80] {
            let mut bad = dtb.clone();
            bad[i] = v;
            exercise(&bad);
        }
    }
}

#[test]
fn every_truncation_of_qemus_own_dtbs_is_refused() {
    for dtb in [
        &include_bytes!("data/virt-arm64.dtb")[..],
        &include_bytes!("data/virt-arm32.dtb")[..],
    ] {
        for len in 0..dtb.len() {
            assert!(BootInfo::parse(&dtb[..len], &params(), &mut AnyMemory).is_err());
        }
    }
}

#[test]
fn a_header_whose_blocks_wrap_past_4_gib_is_a_named_error() {
    // The input that makes the `fdt` crate (0.2.0-alpha3) panic.
    let mut dtb = include_bytes!("data/virt-arm64.dtb").to_vec();
    dtb[12..16].copy_from_slice(&0xffff_ff00u32.to_be_bytes()); // off_dt_strings
    dtb[32..36].copy_from_slice(&0x1000u32.to_be_bytes()); // size_dt_strings
    let e = BootInfo::parse(&dtb, &params(), &mut AnyMemory).unwrap_err();
    assert!(
        matches!(
            e,
            BootInfoError::Dtb(DtbError::BadBlock {
                block: "strings",
                ..
            })
        ),
        "{e:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_header_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        words in proptest::collection::vec(any::<u32>(), 8),
    ) {
        // A header with the right magic and totalsize but random offsets.
        let total = (40 + body.len()) as u32;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0xd00d_feedu32.to_be_bytes());
        bytes.extend_from_slice(&total.to_be_bytes());
        for w in &words {
            bytes.extend_from_slice(&(w % (total + 8)).to_be_bytes());
        }
        bytes.extend_from_slice(&body);
        exercise(&bytes);
    }

    #[test]
    fn mutated_valid_trees_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut dtb = rich_board();
        for (at, v) in edits {
            let i = at.index(dtb.len());
            dtb[i] = v;
        }
        if truncate {
            let n = cut.index(dtb.len());
            dtb.truncate(n);
        }
        exercise(&dtb);
    }

    #[test]
    fn parsed_boards_round_trip_their_banks_and_modules(
        nbanks in 1usize..6,
        nmods in 0usize..6,
        cpus in 1u32..8,
    ) {
        let mut b = VirtBoard::new().cpus(cpus);
        for i in 0..nbanks as u64 {
            b = b.ram(0x4000_0000 + i * 0x1_0000_0000, 1 << 30);
        }
        for i in 0..nmods as u64 {
            b = b.typed_module(0x5000_0000 + i * 2 * MIB, MIB, "multiboot,ramdisk");
        }
        let dtb = b.build();
        let info = BootInfo::parse(&dtb, &params(), &mut AnyMemory).unwrap();
        prop_assert_eq!(info.ram_banks().len(), nbanks);
        prop_assert_eq!(info.modules().len(), nmods);
        let free = info.free_ranges(&[]).unwrap();
        let free_total: u64 = free.iter().map(|r| r.size()).sum();
        prop_assert_eq!(free_total, info.total_ram() - 3 * MIB - nmods as u64 * MIB);
    }
}
