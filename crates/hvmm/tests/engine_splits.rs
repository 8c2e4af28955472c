//! Live changes at any granularity, on the host back end: splits, merges,
//! contiguous groups, guest stage-2 tables, their TLB scope, and the table
//! lifecycle. (Break-before-make, stale TLB entries and TLB conflicts are
//! checked on the machine model in `hvmm-model`'s engine tests.)

use hvmm::access::{AccessError, AccessPath, TableAccess};
use hvmm::format::check_format;
use hvmm::host::{HostArch, HostIdentity, HostMemory};
use hvmm::{
    Arch, Arm32, Arm32Stage2, Arm64, Arm64Stage2, Attrs, Env, Error, Format, Ipa, MairMap,
    MapFlags, MemFault, MemType, Mfn, Op, Paddr, PageTable, S2Access, S2Attrs, S2MemType, Stage,
    Stage1Format, Stage2Format, Vaddr, Vmid,
};

const MIB2: u64 = 2 << 20;
const PAGE: u64 = 4096;
const GIB: u64 = 1 << 30;

/// Host memory whose tables the engine reaches at VA = PA 0xf0_0000_0000
/// on, far from the VAs these tests map: a split or merge whose break would
/// cover a table page it writes through is refused or skipped (see the
/// bad-input table in `engine_rules.rs`).
fn host(frames: usize) -> HostMemory {
    HostMemory::at(Mfn(0xf0_0000_0000 >> 12), frames)
}

fn setup<F: Stage1Format>(frames: usize) -> (HostMemory, PageTable<F>) {
    let mut mem = host(frames);
    let pt = PageTable::create(&mut mem.env()).expect("root");
    (mem, pt)
}

fn ins(pa: u64, attrs: Attrs) -> Op {
    Op::Insert {
        pa: Paddr(pa),
        attrs,
    }
}

fn modify(attrs: Attrs) -> Op {
    Op::Modify { attrs }
}

fn up<F: Stage1Format>(
    mem: &mut HostMemory,
    pt: &mut PageTable<F>,
    va: u64,
    pages: u64,
    op: Op,
    flags: MapFlags,
) -> Result<hvmm::UpdateReport, Error> {
    pt.update(&mut mem.env(), Vaddr(va), pages, op, flags)
}

fn leaf<F: Stage1Format>(mem: &mut HostMemory, pt: &PageTable<F>, va: u64) -> Option<hvmm::Leaf> {
    pt.lookup(&mut mem.arch, &mut mem.access, Vaddr(va))
        .expect("lookup")
}

/// Every page of `[va, va + pages)` translates to `pa + offset` with the
/// attributes `want(page index)` gives (`None`: unmapped).
fn expect_pages<F: Stage1Format>(
    mem: &mut HostMemory,
    pt: &PageTable<F>,
    va: u64,
    pages: u64,
    pa: u64,
    want: impl Fn(u64) -> Option<Attrs>,
) {
    for i in 0..pages {
        let got = leaf(mem, pt, va + i * PAGE);
        match want(i) {
            None => assert!(got.is_none(), "page {i} mapped: {got:?}"),
            Some(a) => {
                let l = got.unwrap_or_else(|| panic!("page {i} unmapped"));
                assert_eq!(l.pa, Paddr(pa + i * PAGE), "page {i}");
                assert_eq!(l.attrs, Some(a), "page {i}");
            }
        }
    }
}

#[test]
fn modify_of_one_page_inside_a_2mib_block_splits_it() {
    let (mut mem, mut pt) = setup::<Arm64>(16);
    up(
        &mut mem,
        &mut pt,
        GIB,
        512,
        ins(0x8000_0000, Attrs::RW),
        MapFlags::BLOCKS,
    )
    .unwrap();
    assert_eq!(leaf(&mut mem, &pt, GIB).unwrap().level, 2);
    let in_use = mem.frames.in_use();
    let r = up(
        &mut mem,
        &mut pt,
        GIB + 7 * PAGE,
        1,
        modify(Attrs::RO),
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!((r.splits, r.tables_created, r.leaves), (1, 1, 1));
    assert_eq!(mem.frames.in_use(), in_use + 1);
    expect_pages(&mut mem, &pt, GIB, 512, 0x8000_0000, |i| {
        Some(if i == 7 { Attrs::RO } else { Attrs::RW })
    });
    assert_eq!(leaf(&mut mem, &pt, GIB).unwrap().level, 3);
}

#[test]
fn remove_of_one_page_inside_a_1gib_block_splits_two_levels() {
    let (mut mem, mut pt) = setup::<Arm64>(16);
    up(
        &mut mem,
        &mut pt,
        GIB,
        1 << 18,
        ins(GIB, Attrs::RW),
        MapFlags::BLOCKS,
    )
    .unwrap();
    assert_eq!(leaf(&mut mem, &pt, GIB).unwrap().level, 1);
    let at = GIB + 3 * MIB2 + 5 * PAGE;
    let r = up(&mut mem, &mut pt, at, 1, Op::Remove, MapFlags::PAGES).unwrap();
    assert_eq!((r.splits, r.tables_created, r.leaves), (2, 2, 1));
    assert!(leaf(&mut mem, &pt, at).is_none());
    // The rest keeps its translation, as coarse as it can stay.
    let near = leaf(&mut mem, &pt, at + PAGE).unwrap();
    assert_eq!((near.level, near.pa), (3, Paddr(at + PAGE)));
    let far = leaf(&mut mem, &pt, GIB + 100 * MIB2 + 123).unwrap();
    assert_eq!((far.level, far.pa), (2, Paddr(GIB + 100 * MIB2 + 123)));
    assert_eq!(far.attrs, Some(Attrs::RW));
}

#[test]
fn a_range_ending_inside_two_blocks_splits_both() {
    let (mut mem, mut pt) = setup::<Arm64>(16);
    up(
        &mut mem,
        &mut pt,
        GIB,
        4 * 512,
        ins(0x8000_0000, Attrs::RW),
        MapFlags::BLOCKS,
    )
    .unwrap();
    // From the middle of the first block to the middle of the fourth.
    let start = GIB + 256 * PAGE;
    let pages = 3 * 512;
    let r = up(
        &mut mem,
        &mut pt,
        start,
        pages,
        modify(Attrs::RO),
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!(
        r.splits, 2,
        "the two end blocks; the middle ones change in place"
    );
    assert_eq!(r.tables_created, 2);
    expect_pages(&mut mem, &pt, GIB, 4 * 512, 0x8000_0000, |i| {
        Some(if (256..256 + 3 * 512).contains(&i) {
            Attrs::RO
        } else {
            Attrs::RW
        })
    });
    assert_eq!(leaf(&mut mem, &pt, GIB + MIB2).unwrap().level, 2);
}

#[test]
fn whole_blocks_change_in_place_whatever_the_flags_say() {
    let (mut mem, mut pt) = setup::<Arm64>(16);
    up(
        &mut mem,
        &mut pt,
        GIB,
        1024,
        ins(0x8000_0000, Attrs::RW),
        MapFlags::BLOCKS,
    )
    .unwrap();
    let r = up(
        &mut mem,
        &mut pt,
        GIB,
        1024,
        modify(Attrs::RO),
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!((r.splits, r.tables_created, r.leaves), (0, 0, 2));
    assert_eq!(leaf(&mut mem, &pt, GIB + MIB2).unwrap().level, 2);
    let r = up(&mut mem, &mut pt, GIB, 1024, Op::Remove, MapFlags::PAGES).unwrap();
    assert_eq!((r.splits, r.leaves), (0, 2));
    assert!(leaf(&mut mem, &pt, GIB).is_none());
}

#[test]
fn a_modify_that_changes_nothing_splits_nothing() {
    let (mut mem, mut pt) = setup::<Arm64>(16);
    up(
        &mut mem,
        &mut pt,
        GIB,
        512,
        ins(0x8000_0000, Attrs::RW),
        MapFlags::BLOCKS,
    )
    .unwrap();
    let before = mem.arch.snapshot();
    let r = up(
        &mut mem,
        &mut pt,
        GIB + PAGE,
        3,
        modify(Attrs::RW),
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!((r.splits, r.leaves, r.tlb_invalidations), (0, 0, 0));
    assert!(mem.arch.snapshot() == before);
}

#[test]
fn changing_one_member_breaks_the_whole_contiguous_group() {
    let (mut mem, mut pt) = setup::<Arm64>(16);
    let va = 0x100_0000;
    up(
        &mut mem,
        &mut pt,
        va,
        32,
        ins(0x8000_0000, Attrs::RW),
        MapFlags::BLOCKS_CONTIG,
    )
    .unwrap();
    assert!(leaf(&mut mem, &pt, va).unwrap().pte.is_contiguous());
    let r = up(
        &mut mem,
        &mut pt,
        va + 3 * PAGE,
        1,
        modify(Attrs::RO),
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!((r.contiguous_breaks, r.leaves), (1, 1));
    // The first group lost its hint, the second kept it.
    for i in 0..16 {
        assert!(!leaf(&mut mem, &pt, va + i * PAGE)
            .unwrap()
            .pte
            .is_contiguous());
    }
    assert!(leaf(&mut mem, &pt, va + 16 * PAGE)
        .unwrap()
        .pte
        .is_contiguous());
    expect_pages(&mut mem, &pt, va, 32, 0x8000_0000, |i| {
        Some(if i == 3 { Attrs::RO } else { Attrs::RW })
    });
}

#[test]
fn a_modify_of_a_whole_contiguous_group_keeps_its_hint() {
    let (mut mem, mut pt) = setup::<Arm64>(16);
    let va = 0x100_0000;
    up(
        &mut mem,
        &mut pt,
        va,
        16,
        ins(0x8000_0000, Attrs::RW),
        MapFlags::BLOCKS_CONTIG,
    )
    .unwrap();
    let r = up(
        &mut mem,
        &mut pt,
        va,
        16,
        modify(Attrs::RO),
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!((r.contiguous_breaks, r.leaves), (1, 16));
    for i in 0..16 {
        let l = leaf(&mut mem, &pt, va + i * PAGE).unwrap();
        assert!(l.pte.is_contiguous());
        assert_eq!(l.attrs, Some(Attrs::RO));
    }
    let r = up(&mut mem, &mut pt, va, 16, Op::Remove, MapFlags::PAGES).unwrap();
    assert_eq!(r.tables_freed, 3, "the emptied L3, L2 and L1 tables");
    assert_eq!(mem.frames.in_use(), 1);
}

#[test]
fn a_contiguous_2mib_block_inside_a_run_is_split_and_the_run_broken() {
    // The arm32 xenheap's shape: 2 MiB blocks in contiguous groups of 16.
    let (mut mem, mut pt) = setup::<Arm32>(16);
    let va = 0x4000_0000;
    let pa = 0x2_0000_0000;
    up(
        &mut mem,
        &mut pt,
        va,
        16 * 512,
        ins(pa, Attrs::RW),
        MapFlags::BLOCKS_2M_CONTIG,
    )
    .unwrap();
    let r = up(
        &mut mem,
        &mut pt,
        va + 5 * MIB2 + PAGE,
        1,
        Op::Remove,
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!((r.contiguous_breaks, r.splits, r.leaves), (1, 1, 1));
    assert!(leaf(&mut mem, &pt, va + 5 * MIB2 + PAGE).is_none());
    let l = leaf(&mut mem, &pt, va + 9 * MIB2).unwrap();
    assert_eq!(
        (l.level, l.pa, l.pte.is_contiguous()),
        (2, Paddr(pa + 9 * MIB2), false)
    );
    let p = leaf(&mut mem, &pt, va + 5 * MIB2 + 2 * PAGE).unwrap();
    assert_eq!((p.level, p.pa), (3, Paddr(pa + 5 * MIB2 + 2 * PAGE)));
}

#[test]
fn a_split_block_merges_back_when_asked() {
    let (mut mem, mut pt) = setup::<Arm64>(16);
    up(
        &mut mem,
        &mut pt,
        GIB,
        512,
        ins(0x8000_0000, Attrs::RW),
        MapFlags::BLOCKS,
    )
    .unwrap();
    up(
        &mut mem,
        &mut pt,
        GIB + 9 * PAGE,
        1,
        modify(Attrs::RO),
        MapFlags::PAGES,
    )
    .unwrap();
    let in_use = mem.frames.in_use();
    // Without the merge flag the table stays.
    let r = up(
        &mut mem,
        &mut pt,
        GIB + 9 * PAGE,
        1,
        modify(Attrs::RW),
        MapFlags::BLOCKS,
    )
    .unwrap();
    assert_eq!(r.merges, 0);
    assert_eq!(leaf(&mut mem, &pt, GIB).unwrap().level, 3);
    up(
        &mut mem,
        &mut pt,
        GIB + 9 * PAGE,
        1,
        modify(Attrs::RO),
        MapFlags::PAGES,
    )
    .unwrap();
    let r = up(
        &mut mem,
        &mut pt,
        GIB + 9 * PAGE,
        1,
        modify(Attrs::RW),
        MapFlags::BLOCKS_MERGE,
    )
    .unwrap();
    assert_eq!((r.merges, r.tables_freed), (1, 1));
    assert_eq!(mem.frames.in_use(), in_use - 1);
    let l = leaf(&mut mem, &pt, GIB + 9 * PAGE).unwrap();
    assert_eq!(
        (l.level, l.pa, l.attrs),
        (2, Paddr(0x8000_9000), Some(Attrs::RW))
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "maps 1 GiB as pages: minutes under Miri (the 2 MiB merges above run there)"
)]
fn pages_filled_in_one_by_one_merge_into_a_block_and_blocks_into_1gib() {
    let (mut mem, mut pt) = setup::<Arm64>(600);
    up(
        &mut mem,
        &mut pt,
        GIB,
        1 << 18,
        ins(2 * GIB, Attrs::RW),
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!(mem.frames.in_use(), 1 + 1 + 1 + 512);
    // A collapse: nothing changes but the shape.
    let r = up(
        &mut mem,
        &mut pt,
        GIB,
        1 << 18,
        modify(Attrs::RW),
        MapFlags::BLOCKS_MERGE,
    )
    .unwrap();
    assert_eq!((r.leaves, r.merges, r.tables_freed), (0, 513, 513));
    let l = leaf(&mut mem, &pt, GIB + 12345 * PAGE).unwrap();
    assert_eq!((l.level, l.pa), (1, Paddr(2 * GIB + 12345 * PAGE)));
    // No 1 GiB merges when the flags forbid 1 GiB blocks.
    let (mut mem, mut pt) = setup::<Arm64>(600);
    up(
        &mut mem,
        &mut pt,
        GIB,
        1 << 18,
        ins(2 * GIB, Attrs::RW),
        MapFlags::PAGES,
    )
    .unwrap();
    let mut flags = MapFlags::BLOCKS_MERGE;
    flags.no_gib_blocks = true;
    let r = up(&mut mem, &mut pt, GIB, 1 << 18, modify(Attrs::RW), flags).unwrap();
    assert_eq!(r.merges, 512);
    assert_eq!(leaf(&mut mem, &pt, GIB).unwrap().level, 2);
    // The last missing page of a 2 MiB range completes it.
    let (mut mem, mut pt) = setup::<Arm64>(16);
    up(
        &mut mem,
        &mut pt,
        GIB,
        511,
        ins(0x8000_0000, Attrs::RW),
        MapFlags::PAGES,
    )
    .unwrap();
    let last = GIB + 511 * PAGE;
    let r = up(
        &mut mem,
        &mut pt,
        last,
        1,
        ins(0x8000_0000 + 511 * PAGE, Attrs::RW),
        MapFlags::BLOCKS_MERGE,
    )
    .unwrap();
    assert_eq!(r.merges, 1);
    assert_eq!(leaf(&mut mem, &pt, last).unwrap().level, 2);
}

#[test]
fn tables_that_are_not_uniform_are_never_merged() {
    for (what, second_pa, second_attrs) in [
        ("a PA gap", 0x9000_0000, Attrs::RW),
        ("other attributes", 0x8000_0000 + 256 * PAGE, Attrs::RO),
    ] {
        let (mut mem, mut pt) = setup::<Arm64>(16);
        up(
            &mut mem,
            &mut pt,
            GIB,
            256,
            ins(0x8000_0000, Attrs::RW),
            MapFlags::PAGES,
        )
        .unwrap();
        let r = up(
            &mut mem,
            &mut pt,
            GIB + 256 * PAGE,
            256,
            ins(second_pa, second_attrs),
            MapFlags::BLOCKS_MERGE,
        )
        .unwrap();
        assert_eq!(r.merges, 0, "{what}");
    }
    // A first page whose PA is not 2 MiB aligned cannot become a block.
    let (mut mem, mut pt) = setup::<Arm64>(16);
    let r = up(
        &mut mem,
        &mut pt,
        GIB,
        512,
        ins(0x8000_1000, Attrs::RW),
        MapFlags::BLOCKS_MERGE,
    )
    .unwrap();
    assert_eq!(r.merges, 0);
}

// ---- Shortages and provider failures in the split paths change nothing ----

/// A provider that refuses its `fail_at`-th map (1-based).
struct FailingAccess {
    inner: HostIdentity,
    calls: usize,
    fail_at: usize,
    /// Maps made when the last reservation came.
    at_reserve: usize,
    /// A reservation holds: every map must succeed until it ends.
    promised: bool,
}

impl AccessPath for FailingAccess {
    fn name(&self) -> &'static str {
        "failing"
    }
}

impl TableAccess<HostArch> for FailingAccess {
    fn map_table(&mut self, arch: &mut HostArch, mfn: Mfn) -> Result<Vaddr, AccessError> {
        self.calls += 1;
        if self.calls == self.fail_at && !self.promised {
            return Err(AccessError::Unreachable {
                provider: "failing",
            });
        }
        self.inner.map_table(arch, mfn)
    }
    fn unmap_table(&mut self, arch: &mut HostArch, mfn: Mfn, va: Vaddr) {
        self.inner.unmap_table(arch, mfn, va)
    }
    fn reserve(&mut self, _arch: &mut HostArch, _nested: usize) -> Result<(), AccessError> {
        self.at_reserve = self.calls;
        self.promised = true;
        Ok(())
    }
    fn unreserve(&mut self, _arch: &mut HostArch) {
        self.promised = false;
    }
}

/// Blocks to split: a 1 GiB block, 2 MiB blocks, a contiguous group of
/// 2 MiB blocks; and the changes that split them (one page, a range ending
/// inside two blocks, one page inside the group).
fn split_cases() -> Vec<(&'static str, u64, u64, Op)> {
    vec![
        (
            "page in a 1 GiB block",
            GIB + 5 * MIB2 + PAGE,
            1,
            modify(Attrs::RO),
        ),
        ("page in a 2 MiB block", 8 * GIB + 3 * PAGE, 1, Op::Remove),
        (
            "range across blocks",
            8 * GIB + 100 * PAGE,
            700,
            modify(Attrs::RO),
        ),
        (
            "contiguous group of blocks",
            16 * GIB + 3 * MIB2 + PAGE,
            1,
            modify(Attrs::RO),
        ),
    ]
}

fn blocks_mapped(frames: usize) -> (HostMemory, PageTable<Arm64>) {
    let (mut mem, mut pt) = setup::<Arm64>(frames);
    let b = MapFlags::BLOCKS;
    up(&mut mem, &mut pt, GIB, 1 << 18, ins(4 * GIB, Attrs::RW), b).unwrap();
    up(
        &mut mem,
        &mut pt,
        8 * GIB,
        1024,
        ins(0x8000_0000, Attrs::RW),
        b,
    )
    .unwrap();
    // 2 MiB blocks in contiguous groups of 16.
    up(
        &mut mem,
        &mut pt,
        16 * GIB,
        16 * 512,
        ins(0x8000_0000, Attrs::RW),
        MapFlags::BLOCKS_CONTIG,
    )
    .unwrap();
    (mem, pt)
}

#[test]
fn every_frame_shortfall_in_a_split_changes_nothing() {
    for (what, va, pages, op) in split_cases() {
        let (mut mem, mut pt) = blocks_mapped(64);
        let free = mem.frames.available();
        let need = up(&mut mem, &mut pt, va, pages, op, MapFlags::PAGES)
            .unwrap()
            .tables_created as usize;
        assert!(need >= 1, "{what}");
        for avail in 0..need {
            let (mut mem, mut pt) = blocks_mapped(64);
            // Leave exactly `avail` frames.
            let mut hog = Vec::new();
            while mem.frames.available() > avail {
                hog.push(mem.frames.alloc_zeroed(&mut mem.arch).unwrap());
            }
            assert_eq!(free - hog.len(), avail);
            let snap = mem.arch.snapshot();
            let err = up(&mut mem, &mut pt, va, pages, op, MapFlags::PAGES).unwrap_err();
            assert_eq!(
                err,
                Error::OutOfMemory {
                    needed: need,
                    available: avail
                },
                "{what}"
            );
            assert!(mem.arch.snapshot() == snap, "{what}: tables changed");
            assert_eq!(mem.frames.available(), avail, "{what}: frames leaked");
        }
    }
}

#[test]
fn a_map_failure_anywhere_before_a_split_commits_changes_nothing() {
    let mut points = 0;
    for (what, va, pages, op) in split_cases() {
        let run = |fail_at: usize| {
            let (mut mem, mut pt) = blocks_mapped(64);
            let snap = mem.arch.snapshot();
            let in_use = mem.frames.in_use();
            let mut acc = FailingAccess {
                inner: HostIdentity::default(),
                calls: 0,
                fail_at,
                at_reserve: 0,
                promised: false,
            };
            let env = &mut Env::new(&mut mem.arch, &mut acc, &mut mem.frames);
            let res = pt.update(env, Vaddr(va), pages, op, MapFlags::PAGES);
            let unchanged = mem.arch.snapshot() == snap && mem.frames.in_use() == in_use;
            (res, unchanged, acc.at_reserve)
        };
        let (ok, _, maps) = run(usize::MAX);
        ok.unwrap();
        // Every map outside a reservation may fail: nothing changes. (Maps
        // of the one-walk fast path happen under its own reservation.)
        for fail_at in 1..=maps {
            match run(fail_at) {
                (Err(err), unchanged, _) => {
                    assert!(matches!(err, Error::TableAccess { .. }), "{what}: {err}");
                    assert!(unchanged, "{what}: map {fail_at} failed and tables changed");
                    points += 1;
                }
                (Ok(_), _, _) => {}
            }
        }
    }
    assert!(points >= 8, "only {points} injection points");
}

// ---- Guest stage-2 tables ----

fn s2_ins(pa: u64, attrs: S2Attrs) -> Op<S2Attrs> {
    Op::Insert {
        pa: Paddr(pa),
        attrs,
    }
}

fn s2_table<F: Stage2Format>(mem: &mut HostMemory, vmid: u16) -> PageTable<F> {
    PageTable::create_stage2(&mut mem.env(), Vmid(vmid)).expect("stage-2 root")
}

/// Reads the raw descriptor mapping `ipa` (through lookup).
fn s2_leaf<F: Stage2Format>(
    mem: &mut HostMemory,
    pt: &PageTable<F>,
    ipa: u64,
) -> Option<hvmm::Leaf<S2Attrs>> {
    pt.lookup(&mut mem.arch, &mut mem.access, Ipa(ipa))
        .expect("lookup")
}

#[test]
fn stage2_roots_have_the_architectures_start_level_and_concatenation() {
    fn shape<F: Format>() -> (u8, usize, usize) {
        (F::ROOT_LEVEL, F::ROOT_ENTRIES, F::ROOT_TABLES)
    }
    assert_eq!(shape::<Arm64Stage2<32>>(), (1, 4, 1));
    assert_eq!(shape::<Arm64Stage2<36>>(), (1, 64, 1));
    assert_eq!(shape::<Arm64Stage2<39>>(), (1, 512, 1));
    assert_eq!(shape::<Arm64Stage2<40>>(), (1, 1024, 2));
    assert_eq!(shape::<Arm64Stage2<42>>(), (1, 4096, 8));
    assert_eq!(shape::<Arm64Stage2<43>>(), (0, 16, 1));
    assert_eq!(shape::<Arm64Stage2<44>>(), (0, 32, 1));
    assert_eq!(shape::<Arm64Stage2<48>>(), (0, 512, 1));
    assert_eq!(shape::<Arm32Stage2>(), (1, 1024, 2));
    assert_eq!(Arm32Stage2::STAGE, Stage::Two);
    // VTCR: T0SZ = 64 - IPA bits, SL0 = 1 for level 1, 2 for level 0.
    assert_eq!(Arm64Stage2::<40>::vtcr() & 0x3f, 24);
    assert_eq!((Arm64Stage2::<40>::vtcr() >> 6) & 3, 1);
    assert_eq!((Arm64Stage2::<48>::vtcr() >> 6) & 3, 2);
    // arm32: T0SZ = -8 (4-bit two's complement with the sign in bit 4).
    assert_eq!(Arm32Stage2::vtcr() & 0x1f, 0b11000);
}

#[test]
fn a_concatenated_root_is_aligned_and_no_ipa_aliases_another() {
    let mut mem = HostMemory::new(64);
    // Take one frame first so that an unaligned pair would be next.
    let _ = mem.frames.alloc_zeroed(&mut mem.arch).unwrap();
    let mut pt: PageTable<Arm64Stage2<40>> = s2_table(&mut mem, 1);
    assert_eq!(pt.root().0 % 2, 0, "two root pages aligned to 8 KiB");
    let top = 0xff_ffff_f000;
    let low = 0x7f_ffff_f000;
    let env = &mut mem.env();
    pt.update(
        env,
        Ipa(top),
        1,
        s2_ins(0x8000_0000, S2Attrs::RAM),
        MapFlags::PAGES,
    )
    .unwrap();
    pt.update(
        env,
        Ipa(low),
        1,
        s2_ins(0x9000_0000, S2Attrs::RAM_RO),
        MapFlags::PAGES,
    )
    .unwrap();
    let t = s2_leaf(&mut mem, &pt, top).unwrap();
    let l = s2_leaf(&mut mem, &pt, low).unwrap();
    assert_eq!((t.pa, t.attrs), (Paddr(0x8000_0000), Some(S2Attrs::RAM)));
    assert_eq!((l.pa, l.attrs), (Paddr(0x9000_0000), Some(S2Attrs::RAM_RO)));
    // The top half of the IPA space lives in the second root page.
    let second = mem.arch.frame(pt.root().add(1)).unwrap();
    assert!(second.iter().any(|&e| e & 3 == 3));
    let err = pt
        .update(
            &mut mem.env(),
            Ipa(1 << 40),
            1,
            s2_ins(0, S2Attrs::RAM),
            MapFlags::PAGES,
        )
        .unwrap_err();
    assert_eq!(
        err,
        Error::VaOutOfRange {
            va: Vaddr(1 << 40),
            pages: 1,
            va_bits: 40
        }
    );
}

#[test]
fn stage2_leaves_carry_s2ap_xn_and_memattr() {
    let mut mem = HostMemory::new(32);
    let mut pt: PageTable<Arm32Stage2> = s2_table(&mut mem, 7);
    let wo = S2Attrs::new(S2MemType::NormalWb, S2Access::Wo, false).unwrap();
    let none = S2Attrs::new(S2MemType::NormalWb, S2Access::None, false).unwrap();
    let env = &mut mem.env();
    pt.update(
        env,
        Ipa(0x8000_0000),
        1,
        s2_ins(0xa0_0000_0000, S2Attrs::RAM_RO),
        MapFlags::PAGES,
    )
    .unwrap();
    pt.update(
        env,
        Ipa(0x8000_1000),
        1,
        s2_ins(0x1000, wo),
        MapFlags::PAGES,
    )
    .unwrap();
    pt.update(
        env,
        Ipa(0x8000_2000),
        1,
        s2_ins(0x2000, none),
        MapFlags::PAGES,
    )
    .unwrap();
    pt.update(
        env,
        Ipa(0x900_0000),
        1,
        s2_ins(0x900_0000, S2Attrs::DEVICE),
        MapFlags::PAGES,
    )
    .unwrap();
    let ro = s2_leaf(&mut mem, &pt, 0x8000_0000).unwrap();
    assert_eq!((ro.pte.0 >> 6) & 3, 0b01, "S2AP read-only");
    assert_eq!((ro.pte.0 >> 2) & 0xf, 0b1111, "MemAttr normal write-back");
    assert_eq!(ro.pte.0 & (1 << 54), 0, "executable");
    assert_eq!(ro.pa, Paddr(0xa0_0000_0000), "a 40-bit output address");
    let w = s2_leaf(&mut mem, &pt, 0x8000_1000).unwrap();
    assert_eq!(((w.pte.0 >> 6) & 3, w.pte.0 & (1 << 54) != 0), (0b10, true));
    let n = s2_leaf(&mut mem, &pt, 0x8000_2000).unwrap();
    assert_eq!((n.pte.0 >> 6) & 3, 0b00);
    let d = s2_leaf(&mut mem, &pt, 0x900_0000).unwrap();
    assert_eq!((d.pte.0 >> 2) & 0xf, 0b0001, "Device-nGnRE");
    // Modify changes the access, never the memory type.
    let err = pt
        .update(
            &mut mem.env(),
            Ipa(0x8000_0000),
            1,
            Op::Modify {
                attrs: S2Attrs::DEVICE,
            },
            MapFlags::PAGES,
        )
        .unwrap_err();
    assert_eq!(
        err,
        Error::AttrIndexChange {
            va: Vaddr(0x8000_0000),
            from: 0b1111,
            to: 0b0001
        }
    );
}

/// Records the TLB operations the engine issues.
#[derive(Default)]
struct Rec {
    arch: Option<HostArch>,
    ops: Vec<String>,
}

impl Rec {
    fn host(&mut self) -> &mut HostArch {
        self.arch.as_mut().unwrap()
    }
}

impl Arch for Rec {
    fn read_pte(&mut self, va: Vaddr) -> Result<u64, MemFault> {
        self.host().read_pte(va)
    }
    fn write_pte(&mut self, va: Vaddr, val: u64) -> Result<(), MemFault> {
        self.host().write_pte(va, val)
    }
    fn zero_page(&mut self, va: Vaddr) -> Result<(), MemFault> {
        self.host().zero_page(va)
    }
    fn tlb_flush_va(&mut self, va: Vaddr) {
        self.ops.push(format!("va {va}"));
    }
    fn tlb_flush_all(&mut self) {
        self.ops.push("all".into());
    }
    fn tlb_flush_ipa(&mut self, vmid: Vmid, ipa: u64) {
        self.ops.push(format!("ipa {} {ipa:#x}", vmid.0));
    }
    fn tlb_flush_guest_s1(&mut self, vmid: Vmid) {
        self.ops.push(format!("guest-s1 {}", vmid.0));
    }
    fn tlb_flush_vmid(&mut self, vmid: Vmid) {
        self.ops.push(format!("vmid {}", vmid.0));
    }
    fn tlb_sync(&mut self) {
        self.ops.push("sync".into());
    }
    fn isb(&mut self) {}
    fn root(&self) -> Paddr {
        self.arch.as_ref().unwrap().root()
    }
}

#[test]
fn stage2_changes_invalidate_by_ipa_in_their_vmid_then_the_guests_combined_entries() {
    let mut mem = HostMemory::new(32);
    let mut pt: PageTable<Arm64Stage2<40>> = s2_table(&mut mem, 9);
    pt.update(
        &mut mem.env(),
        Ipa(0x4000_0000),
        8,
        s2_ins(0x4000_0000, S2Attrs::RAM),
        MapFlags::PAGES,
    )
    .unwrap();
    let mut rec = Rec {
        arch: Some(std::mem::replace(&mut mem.arch, HostArch::new(Mfn(0), 0))),
        ops: Vec::new(),
    };
    let ro = Op::Modify {
        attrs: S2Attrs::RAM_RO,
    };
    pt.update(
        &mut Env::new(&mut rec, &mut mem.access, &mut mem.frames),
        Ipa(0x4000_1000),
        2,
        ro,
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!(
        rec.ops,
        [
            "ipa 9 0x40001000",
            "ipa 9 0x40002000",
            "sync",
            "guest-s1 9",
            "sync"
        ]
    );
    // A large change invalidates the VMID whole, once.
    rec.ops.clear();
    let env = &mut Env::new(&mut rec, &mut mem.access, &mut mem.frames);
    pt.update(
        env,
        Ipa(0x8000_0000),
        1024,
        s2_ins(0x8000_0000, S2Attrs::RAM),
        MapFlags::PAGES,
    )
    .unwrap();
    pt.update(env, Ipa(0x8000_0000), 1024, Op::Remove, MapFlags::PAGES)
        .unwrap();
    // One VMID-wide invalidation per batch of freed tables (the two level-3
    // tables, then their level-2 table), each completed before the frees.
    assert_eq!(rec.ops, ["vmid 9", "sync", "vmid 9", "sync", "sync"]);
    // Stage 1 keeps the hypervisor's own invalidations.
    let mut mem1 = host(16);
    let mut pt1: PageTable<Arm64> = PageTable::create(&mut mem1.env()).unwrap();
    up(
        &mut mem1,
        &mut pt1,
        GIB,
        1,
        ins(GIB, Attrs::RW),
        MapFlags::PAGES,
    )
    .unwrap();
    rec.arch = Some(std::mem::replace(&mut mem1.arch, HostArch::new(Mfn(0), 0)));
    rec.ops.clear();
    let env = &mut Env::new(&mut rec, &mut mem1.access, &mut mem1.frames);
    pt1.update(env, Vaddr(GIB), 1, modify(Attrs::RO), MapFlags::PAGES)
        .unwrap();
    assert_eq!(rec.ops, [format!("va {}", Vaddr(GIB)), "sync".to_string()]);
}

#[test]
fn a_stage2_split_breaks_invalidates_the_block_in_its_vmid_and_waits_before_the_make() {
    let mut mem = HostMemory::new(32);
    let mut pt: PageTable<Arm64Stage2<40>> = s2_table(&mut mem, 3);
    pt.update(
        &mut mem.env(),
        Ipa(0x4000_0000),
        512,
        s2_ins(0x4000_0000, S2Attrs::RAM),
        MapFlags::BLOCKS,
    )
    .unwrap();
    let mut rec = Rec {
        arch: Some(std::mem::replace(&mut mem.arch, HostArch::new(Mfn(0), 0))),
        ops: Vec::new(),
    };
    let ro = Op::Modify {
        attrs: S2Attrs::RAM_RO,
    };
    let env = &mut Env::new(&mut rec, &mut mem.access, &mut mem.frames);
    let r = pt
        .update(env, Ipa(0x4000_5000), 1, ro, MapFlags::PAGES)
        .unwrap();
    assert_eq!(r.splits, 1);
    // Break-before-make's invalidation, completed (the guest's combined
    // entries included), then the final sync of the update.
    assert_eq!(
        rec.ops,
        ["ipa 3 0x40000000", "sync", "guest-s1 3", "sync", "sync"]
    );
    mem.arch = rec.arch.take().unwrap();
    let l = s2_leaf(&mut mem, &pt, 0x4000_5000).unwrap();
    assert_eq!((l.level, l.attrs), (3, Some(S2Attrs::RAM_RO)));
    let n = s2_leaf(&mut mem, &pt, 0x4000_6000).unwrap();
    assert_eq!(
        (n.level, n.attrs, n.pa),
        (3, Some(S2Attrs::RAM), Paddr(0x4000_6000))
    );
}

#[test]
fn vmids_wider_than_the_vttbr_field_are_refused() {
    let mut mem = HostMemory::new(16);
    let err = PageTable::<Arm32Stage2>::create_stage2(&mut mem.env(), Vmid(256)).unwrap_err();
    assert_eq!(
        err,
        Error::VmidTooWide {
            vmid: Vmid(256),
            bits: 8
        }
    );
    assert_eq!(mem.frames.in_use(), 0, "nothing allocated");
    // arm64 too: the VTCR hvmm writes leaves VTCR_EL2.VS clear (8-bit VMIDs
    // work on every ARMv8.0 CPU), so VMID 256 would alias VMID 0.
    let err = PageTable::<Arm64Stage2<48>>::create_stage2(&mut mem.env(), Vmid(256)).unwrap_err();
    assert_eq!(
        err,
        Error::VmidTooWide {
            vmid: Vmid(256),
            bits: 8
        }
    );
    let pt = PageTable::<Arm64Stage2<48>>::create_stage2(&mut mem.env(), Vmid(255)).unwrap();
    assert_eq!(pt.vttbr() >> 48, 255);
}

#[test]
fn create_then_destroy_gives_every_table_page_back() {
    let mut mem = HostMemory::new(64);
    let mut pt: PageTable<Arm64Stage2<42>> = s2_table(&mut mem, 2);
    assert_eq!(mem.frames.in_use(), 8, "eight concatenated root pages");
    assert_eq!(pt.root().0 % 8, 0, "aligned to 32 KiB");
    let env = &mut mem.env();
    pt.update(
        env,
        Ipa(0),
        3000,
        s2_ins(0x4000_0000, S2Attrs::RAM),
        MapFlags::PAGES,
    )
    .unwrap();
    pt.update(
        env,
        Ipa(0x3ff_0000_0000),
        1,
        s2_ins(0x4000_0000, S2Attrs::RAM),
        MapFlags::PAGES,
    )
    .unwrap();
    assert!(mem.frames.in_use() > 8);
    let freed = pt.destroy(&mut mem.env()).unwrap();
    assert_eq!(mem.frames.in_use(), 0);
    assert!(freed > 8);
    // Stage 1 alike.
    let (mut mem, mut pt) = setup::<Arm32>(16);
    up(
        &mut mem,
        &mut pt,
        0x1000_0000,
        600,
        ins(0x8000_0000, Attrs::RW),
        MapFlags::PAGES,
    )
    .unwrap();
    pt.destroy(&mut mem.env()).unwrap();
    assert_eq!(mem.frames.in_use(), 0);
}

#[test]
fn a_root_that_cannot_be_had_is_out_of_memory() {
    let mut mem = HostMemory::new(4);
    let err = PageTable::<Arm64Stage2<43>>::create_stage2(&mut mem.env(), Vmid(1));
    assert!(err.is_ok(), "level-0 root: one page");
    let err = PageTable::<Arm64Stage2<42>>::create_stage2(&mut mem.env(), Vmid(1)).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { needed: 8, .. }), "{err}");
    assert_eq!(mem.frames.in_use(), 1);
}

// ---- Formats and attribute maps ----

#[derive(Copy, Clone, Default)]
struct Aliasing;
impl Format for Aliasing {
    const NAME: &'static str = "40-bit space from level 1, one root page";
    const STAGE: Stage = Stage::Two;
    const ROOT_LEVEL: u8 = 1;
    const VA_BITS: u32 = 40;
    const PA_BITS: u32 = 48;
    const ROOT_ENTRIES: usize = 512;
    type Attrs = S2Attrs;
    type Input = Ipa;
}

#[derive(Copy, Clone, Default)]
struct ConcatenatedStage1;
impl Format for ConcatenatedStage1 {
    const NAME: &'static str = "stage 1 with two root pages";
    const STAGE: Stage = Stage::One;
    const ROOT_LEVEL: u8 = 1;
    const VA_BITS: u32 = 40;
    const PA_BITS: u32 = 48;
    const ROOT_ENTRIES: usize = 1024;
    type Attrs = Attrs;
    type Input = Vaddr;
}

#[test]
fn a_format_whose_sizes_disagree_is_refused_by_the_check() {
    assert_eq!(
        check_format::<Aliasing>(),
        Err("the input size must be what the root level and root entries resolve")
    );
    assert_eq!(
        check_format::<ConcatenatedStage1>(),
        Err("only stage 2 concatenates root tables")
    );
    assert_eq!(check_format::<Arm64>(), Ok(()));
    assert_eq!(check_format::<Arm32>(), Ok(()));
    assert_eq!(check_format::<Arm64Stage2<33>>(), Ok(()));
    assert_eq!(check_format::<Arm32Stage2>(), Ok(()));
}

#[test]
fn a_custom_mair_map_decides_the_attribute_index() {
    let map = MairMap::new(&[(0, MemType::Normal), (1, MemType::DeviceNgnre)]).unwrap();
    let mut mem = host(16);
    let mut pt = PageTable::<Arm64>::create(&mut mem.env())
        .unwrap()
        .with_mair(map);
    up(
        &mut mem,
        &mut pt,
        GIB,
        1,
        ins(GIB, Attrs::RW),
        MapFlags::PAGES,
    )
    .unwrap();
    up(
        &mut mem,
        &mut pt,
        2 * GIB,
        1,
        ins(2 * GIB, Attrs::DEVICE),
        MapFlags::PAGES,
    )
    .unwrap();
    let n = leaf(&mut mem, &pt, GIB).unwrap();
    assert_eq!((n.pte.attr_index(), n.attrs), (0, Some(Attrs::RW)));
    let d = leaf(&mut mem, &pt, 2 * GIB).unwrap();
    assert_eq!((d.pte.attr_index(), d.attrs), (1, Some(Attrs::DEVICE)));
    let before = mem.arch.snapshot();
    let err = up(
        &mut mem,
        &mut pt,
        3 * GIB,
        1,
        ins(0, Attrs::WC),
        MapFlags::PAGES,
    )
    .unwrap_err();
    assert_eq!(err, Error::MemTypeNotInMair(MemType::NormalNc));
    assert!(mem.arch.snapshot() == before);
}
