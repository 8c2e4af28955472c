//! The update engine's rules, case by case, on the host back end.
//! (Hardware behaviour — faults, stale TLB entries, break-before-make — is
//! checked against the machine model in `hvmm-model`'s engine tests.)

use hvmm::access::{AccessError, AccessPath, TableAccess};
use hvmm::host::{HostArch, HostFrames, HostIdentity, HostMemory};
use hvmm::{
    Arm32, Arm64, Attrs, Env, Error, FrameAlloc, MapFlags, MemType, Mfn, Op, Paddr, PageTable,
    Perm, Stage1Format, Vaddr,
};

const GIB: u64 = 1 << 30;
const MIB2: u64 = 2 << 20;

fn setup<F: Stage1Format>(frames: usize) -> (HostMemory, PageTable<F>) {
    let mut mem = HostMemory::new(frames);
    let pt = PageTable::create(&mut mem.env()).expect("root");
    (mem, pt)
}

fn insert(pa: u64) -> Op {
    Op::Insert {
        pa: Paddr(pa),
        attrs: Attrs::RW,
    }
}

fn update<F: Stage1Format>(
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

#[test]
fn insert_maps_pages_at_level_3() {
    let (mut mem, mut pt) = setup::<Arm64>(64);
    let r = update(
        &mut mem,
        &mut pt,
        0x20_0000,
        16,
        insert(0x8000_0000),
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!(r.leaves, 16);
    assert_eq!(r.tables_created, 3, "L1, L2 and L3 below the root");
    let l = leaf(&mut mem, &pt, 0x20_f123).unwrap();
    assert_eq!(
        (l.level, l.pa, l.attrs),
        (3, Paddr(0x8000_f123), Some(Attrs::RW))
    );
    assert!(leaf(&mut mem, &pt, 0x21_0000).is_none());
}

#[test]
fn blocks_are_used_only_when_allowed_and_aligned() {
    let (mut mem, mut pt) = setup::<Arm64>(64);
    let pages = (GIB + 2 * MIB2) / 4096;
    update(
        &mut mem,
        &mut pt,
        GIB,
        pages,
        insert(0x40_0000_0000),
        MapFlags::BLOCKS,
    )
    .unwrap();
    assert_eq!(leaf(&mut mem, &pt, GIB + 5).unwrap().level, 1);
    assert_eq!(leaf(&mut mem, &pt, 2 * GIB + MIB2).unwrap().level, 2);
    // PA misaligned with VA for blocks: pages only.
    update(
        &mut mem,
        &mut pt,
        8 * GIB,
        512,
        insert(0x40_0000_1000),
        MapFlags::BLOCKS,
    )
    .unwrap();
    assert_eq!(leaf(&mut mem, &pt, 8 * GIB).unwrap().level, 3);
    // Blocks not allowed: pages.
    update(
        &mut mem,
        &mut pt,
        16 * GIB,
        512,
        insert(0x80_0000_0000),
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!(leaf(&mut mem, &pt, 16 * GIB).unwrap().level, 3);
}

#[test]
fn contiguous_hint_is_set_on_aligned_runs_of_sixteen_only() {
    let (mut mem, mut pt) = setup::<Arm64>(64);
    // 36 pages starting 8 pages before a 64 KiB boundary: one full run of 16
    // with partial runs (8 and 12 pages) around it.
    let va = 0x100_0000 - 8 * 4096;
    update(
        &mut mem,
        &mut pt,
        va,
        36,
        insert(0x8000_0000 - 8 * 4096),
        MapFlags::BLOCKS_CONTIG,
    )
    .unwrap();
    assert!(!leaf(&mut mem, &pt, va).unwrap().pte.is_contiguous());
    for i in 0..16 {
        assert!(leaf(&mut mem, &pt, 0x100_0000 + i * 4096)
            .unwrap()
            .pte
            .is_contiguous());
    }
    assert!(!leaf(&mut mem, &pt, 0x101_0000).unwrap().pte.is_contiguous());
    // Same without the flag: no hint.
    update(
        &mut mem,
        &mut pt,
        0x200_0000,
        16,
        insert(0x9000_0000),
        MapFlags::BLOCKS,
    )
    .unwrap();
    assert!(!leaf(&mut mem, &pt, 0x200_0000).unwrap().pte.is_contiguous());
}

#[test]
fn contiguous_blocks_for_the_xenheap_shape() {
    // arm32 xenheap: 2 MiB blocks with the contiguous hint (32 MiB runs).
    let (mut mem, mut pt) = setup::<Arm32>(64);
    update(
        &mut mem,
        &mut pt,
        0x4000_0000,
        (64 << 20) / 4096,
        insert(0x8000_0000),
        MapFlags::BLOCKS_CONTIG,
    )
    .unwrap();
    let l = leaf(&mut mem, &pt, 0x4000_0000).unwrap();
    assert_eq!(l.level, 2);
    assert!(l.pte.is_contiguous());
}

#[test]
fn modify_changes_permissions_and_keeps_the_output_address() {
    let (mut mem, mut pt) = setup::<Arm64>(64);
    update(
        &mut mem,
        &mut pt,
        0x20_0000,
        4,
        insert(0x8000_0000),
        MapFlags::PAGES,
    )
    .unwrap();
    let r = update(
        &mut mem,
        &mut pt,
        0x20_0000,
        4,
        Op::Modify { attrs: Attrs::RX },
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!(r.tlb_invalidations, 4);
    let l = leaf(&mut mem, &pt, 0x20_2000).unwrap();
    assert_eq!((l.pa, l.attrs), (Paddr(0x8000_2000), Some(Attrs::RX)));
}

#[test]
fn remove_unmaps_and_frees_emptied_tables() {
    let (mut mem, mut pt) = setup::<Arm64>(64);
    let before = mem.frames.in_use();
    update(
        &mut mem,
        &mut pt,
        0x20_0000,
        600,
        insert(0x8000_0000),
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!(mem.frames.in_use(), before + 4, "L1, L2 and two L3 tables");
    let r = update(
        &mut mem,
        &mut pt,
        0x20_0000,
        600,
        Op::Remove,
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!(r.leaves, 600);
    assert_eq!(r.tables_freed, 4);
    assert_eq!(mem.frames.in_use(), before, "no table page leaked");
    assert!(leaf(&mut mem, &pt, 0x20_0000).is_none());
    let root = mem.arch.frame(pt.root()).unwrap();
    assert!(root.iter().all(|&e| e == 0), "root emptied");
}

#[test]
fn remove_of_part_of_a_table_keeps_the_table() {
    let (mut mem, mut pt) = setup::<Arm64>(64);
    update(
        &mut mem,
        &mut pt,
        0x20_0000,
        8,
        insert(0x8000_0000),
        MapFlags::PAGES,
    )
    .unwrap();
    let r = update(&mut mem, &mut pt, 0x20_0000, 4, Op::Remove, MapFlags::PAGES).unwrap();
    assert_eq!((r.leaves, r.tables_freed), (4, 0));
    assert!(leaf(&mut mem, &pt, 0x20_4000).is_some());
}

#[test]
fn remove_of_nothing_is_fine() {
    let (mut mem, mut pt) = setup::<Arm64>(64);
    let r = update(
        &mut mem,
        &mut pt,
        0x4000_0000,
        1000,
        Op::Remove,
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!(r.leaves, 0);
}

/// The host allocator without its table counts ([`hvmm::TableMeta`]): the
/// engine then asks `can_free` of every table, as for the image's tables.
struct NoCounts<'a>(&'a mut HostFrames);

impl FrameAlloc for NoCounts<'_> {
    fn reserve(&mut self, n: usize) -> Result<(), hvmm::OutOfFrames> {
        self.0.reserve(n)
    }
    fn take(&mut self) -> Option<Mfn> {
        self.0.take()
    }
    fn unreserve(&mut self) {
        self.0.unreserve()
    }
    fn free(&mut self, mfn: Mfn) {
        self.0.free(mfn)
    }
    fn can_free(&self, mfn: Mfn) -> bool {
        self.0.can_free(mfn)
    }
    fn reserved_frames(&self, f: &mut dyn FnMut(Mfn)) {
        self.0.reserved_frames(f)
    }
}

/// Tables the engine keeps no counts for (the image's, in a real boot: here
/// made through an allocator without counts) are freed only if the
/// allocator says so.
#[test]
fn pinned_tables_are_never_freed() {
    let (mut mem, mut pt) = setup::<Arm64>(64);
    let no_counts = |mem: &mut HostMemory, pt: &mut PageTable<Arm64>, op: Op| {
        let mut alloc = NoCounts(&mut mem.frames);
        let mut env = Env::new(&mut mem.arch, &mut mem.access, &mut alloc);
        pt.update(&mut env, Vaddr(0x40_0000), 1, op, MapFlags::PAGES)
    };
    no_counts(&mut mem, &mut pt, insert(0x9000_0000)).unwrap();
    // Pin every frame in use (stands for the image's static tables).
    let used: Vec<Mfn> = (0..64u64).map(|i| Mfn(0x4_0000 + i)).collect();
    mem.frames.pin(&used);
    let r = no_counts(&mut mem, &mut pt, Op::Remove).unwrap();
    assert_eq!(r.tables_freed, 0);
    no_counts(&mut mem, &mut pt, insert(0x9000_0000)).unwrap();
    // A Remove of the whole 1 GiB (the subtree path) frees nothing either.
    let r = pt
        .update(
            &mut Env::new(
                &mut mem.arch,
                &mut mem.access,
                &mut NoCounts(&mut mem.frames),
            ),
            Vaddr(0),
            1 << 18,
            Op::Remove,
            MapFlags::PAGES,
        )
        .unwrap();
    assert_eq!((r.tables_freed, r.leaves), (0, 1));
    assert!(leaf(&mut mem, &pt, 0x40_0000).is_none());
}

/// A table the engine made and keeps counts for is given back when it is
/// emptied, without asking the allocator (which pins only frames it never
/// handed out for tables).
#[test]
fn counted_tables_are_freed_without_asking_the_allocator() {
    let (mut mem, mut pt) = setup::<Arm64>(64);
    update(
        &mut mem,
        &mut pt,
        0x40_0000,
        1,
        insert(0x9000_0000),
        MapFlags::PAGES,
    )
    .unwrap();
    let in_use = mem.frames.in_use();
    let used: Vec<Mfn> = (0..64u64).map(|i| Mfn(0x4_0000 + i)).collect();
    mem.frames.pin(&used);
    let r = update(&mut mem, &mut pt, 0x40_0000, 1, Op::Remove, MapFlags::PAGES).unwrap();
    assert_eq!(r.tables_freed, 3, "L3, L2 and L1");
    assert_eq!(mem.frames.in_use(), in_use - 3);
}

#[test]
fn populate_creates_tables_down_to_level_3_and_maps_nothing() {
    let (mut mem, mut pt) = setup::<Arm64>(64);
    let r = update(&mut mem, &mut pt, GIB, 1024, Op::Populate, MapFlags::PAGES).unwrap();
    assert_eq!((r.tables_created, r.leaves), (4, 0), "L1, L2, two L3");
    assert!(leaf(&mut mem, &pt, GIB).is_none());
    // Populating again creates nothing; inserting afterwards needs no new table.
    let r = update(&mut mem, &mut pt, GIB, 1024, Op::Populate, MapFlags::PAGES).unwrap();
    assert_eq!(r.tables_created, 0);
    let r = update(
        &mut mem,
        &mut pt,
        GIB,
        1024,
        insert(0x8000_0000),
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!(r.tables_created, 0);
}

#[test]
fn for_each_leaf_visits_every_mapping_once() {
    let (mut mem, mut pt) = setup::<Arm64>(64);
    update(
        &mut mem,
        &mut pt,
        GIB,
        512 + 3,
        insert(0x40_0000_0000),
        MapFlags::BLOCKS,
    )
    .unwrap();
    let mut seen = Vec::new();
    pt.for_each_leaf(
        &mut mem.arch,
        &mut mem.access,
        Vaddr(GIB),
        1024,
        &mut |va, pages, l| seen.push((va.0, pages, l.level, l.pa.0)),
    )
    .unwrap();
    // Sizes in pages, as `update` counts them: a 2 MiB block is 512.
    assert_eq!(
        seen,
        vec![
            (GIB, 512, 2, 0x40_0000_0000),
            (GIB + MIB2, 1, 3, 0x40_0020_0000),
            (GIB + MIB2 + 4096, 1, 3, 0x40_0020_1000),
            (GIB + MIB2 + 8192, 1, 3, 0x40_0020_2000),
        ]
    );
}

#[test]
fn dump_shows_each_level() {
    let (mut mem, mut pt) = setup::<Arm64>(64);
    update(
        &mut mem,
        &mut pt,
        0x20_0000,
        1,
        Op::Insert {
            pa: Paddr(0x8000_0000),
            attrs: Attrs::RX,
        },
        MapFlags::PAGES,
    )
    .unwrap();
    let mut out = String::new();
    pt.dump(&mut mem.arch, &mut mem.access, Vaddr(0x20_0000), &mut out)
        .unwrap();
    assert!(out.contains("L0[0x000]"), "{out}");
    assert!(out.contains("L2[0x001]"), "{out}");
    assert!(out.contains("L3[0x000]"), "{out}");
    assert!(out.contains("page"), "{out}");
    assert!(out.contains("-> PA 0x0000000080000000 RX Normal"), "{out}");
}

#[test]
fn arm32_maps_forty_bit_physical_addresses() {
    let (mut mem, mut pt) = setup::<Arm32>(64);
    update(
        &mut mem,
        &mut pt,
        0x8000_0000,
        4,
        insert(0xff_0000_0000),
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!(
        leaf(&mut mem, &pt, 0x8000_1004).unwrap().pa,
        Paddr(0xff_0000_1004)
    );
}

// ---- Bad input: each refusal has its own error, and changes nothing. ----

fn refused<F: Stage1Format>(
    va: u64,
    pages: u64,
    op: Op,
    flags: MapFlags,
    prep: &[(u64, u64, Op, MapFlags)],
) -> Error {
    let (mut mem, mut pt) = setup::<F>(64);
    for &(v, n, o, f) in prep {
        update(&mut mem, &mut pt, v, n, o, f).unwrap();
    }
    let before = mem.arch.snapshot();
    let in_use = mem.frames.in_use();
    let err = update(&mut mem, &mut pt, va, pages, op, flags).unwrap_err();
    assert!(
        mem.arch.snapshot() == before,
        "tables changed by a refused update: {err}"
    );
    assert_eq!(
        mem.frames.in_use(),
        in_use,
        "frames leaked by a refused update: {err}"
    );
    assert!(!err.to_string().is_empty());
    err
}

#[test]
fn bad_input_table() {
    let p = MapFlags::PAGES;
    let b = MapFlags::BLOCKS;
    let rw = insert(0x8000_0000);
    let mapped_4k = [(0x20_0000, 512, rw, p)];
    let cases: Vec<(&str, Error, Error)> = vec![
        (
            "misaligned VA",
            refused::<Arm64>(0x20_0800, 1, rw, p, &[]),
            Error::VaMisaligned(Vaddr(0x20_0800)),
        ),
        (
            "misaligned PA",
            refused::<Arm64>(0x20_0000, 1, insert(0x8000_0010), p, &[]),
            Error::PaMisaligned(Paddr(0x8000_0010)),
        ),
        (
            "zero pages",
            refused::<Arm64>(0x20_0000, 0, rw, p, &[]),
            Error::EmptyRange,
        ),
        (
            "range overflowing 64 bits",
            refused::<Arm64>(0xffff_ffff_ffff_f000, 2, rw, p, &[]),
            Error::VaRangeOverflow {
                va: Vaddr(0xffff_ffff_ffff_f000),
                pages: 2,
            },
        ),
        (
            "page count overflowing",
            refused::<Arm64>(0, u64::MAX, rw, p, &[]),
            Error::VaRangeOverflow {
                va: Vaddr(0),
                pages: u64::MAX,
            },
        ),
        (
            "VA beyond 48 bits",
            refused::<Arm64>(0xffff_f000, 1 << 36, rw, p, &[]),
            Error::VaOutOfRange {
                va: Vaddr(0xffff_f000),
                pages: 1 << 36,
                va_bits: 48,
            },
        ),
        (
            "VA beyond 32 bits on arm32",
            refused::<Arm32>(0xffff_f000, 2, rw, p, &[]),
            Error::VaOutOfRange {
                va: Vaddr(0xffff_f000),
                pages: 2,
                va_bits: 32,
            },
        ),
        (
            "PA beyond 40 bits on arm32",
            refused::<Arm32>(0x20_0000, 2, insert(0xff_ffff_f000), p, &[]),
            Error::PaOutOfRange {
                pa: Paddr(0xff_ffff_f000),
                pages: 2,
                pa_bits: 40,
            },
        ),
        (
            "PA beyond 48 bits on arm64",
            refused::<Arm64>(0x20_0000, 1, insert(1 << 48), p, &[]),
            Error::PaOutOfRange {
                pa: Paddr(1 << 48),
                pages: 1,
                pa_bits: 48,
            },
        ),
        (
            "insert over a valid entry",
            refused::<Arm64>(0x20_0000 + 4096 * 100, 512, rw, p, &mapped_4k),
            Error::AlreadyMapped {
                va: Vaddr(0x20_0000 + 4096 * 100),
                level: 3,
            },
        ),
        (
            "insert inside an existing block",
            refused::<Arm64>(GIB + 4096, 1, rw, p, &[(GIB, 512, insert(0x4000_0000), b)]),
            Error::AlreadyMapped {
                va: Vaddr(GIB + 4096),
                level: 2,
            },
        ),
        (
            "modify of an absent entry",
            refused::<Arm64>(
                0x20_0000 + 4096 * 510,
                4,
                Op::Modify { attrs: Attrs::RO },
                p,
                &mapped_4k,
            ),
            Error::NotMapped {
                va: Vaddr(0x40_0000),
            },
        ),
        (
            "modify changing the memory type",
            refused::<Arm64>(
                0x20_0000,
                1,
                Op::Modify {
                    attrs: Attrs::DEVICE,
                },
                p,
                &mapped_4k,
            ),
            Error::AttrIndexChange {
                va: Vaddr(0x20_0000),
                from: 7,
                to: 4,
            },
        ),
        (
            "a split whose break would unmap the table it writes through",
            // The host reaches a table at VA = its PA (0x4000_0000 on):
            // the level-1 table that holds this 1 GiB block is inside it.
            refused::<Arm64>(
                GIB + 4096,
                1,
                Op::Modify { attrs: Attrs::RO },
                p,
                &[(GIB, 1 << 18, insert(GIB), b)],
            ),
            Error::BreakUnmapsTable {
                va: Vaddr(GIB),
                level: 1,
                table_va: Vaddr(0x4000_1000),
            },
        ),
        (
            "a split with no frame for its table",
            refused::<Arm64>(
                0x8000_0000 + 4096,
                1,
                Op::Remove,
                p,
                &[
                    (0x8000_0000, 512, insert(0x4000_0000), b),
                    (0, 60 * 512, rw, p),
                ],
            ),
            Error::OutOfMemory {
                needed: 1,
                available: 0,
            },
        ),
        (
            "populate through a block",
            refused::<Arm64>(
                GIB,
                1,
                Op::Populate,
                p,
                &[(GIB, 512, insert(0x4000_0000), b)],
            ),
            Error::BlockInTheWay {
                va: Vaddr(GIB),
                level: 2,
            },
        ),
        (
            "out of frames",
            refused::<Arm64>(0, 63 * 512, rw, p, &[]),
            Error::OutOfMemory {
                needed: 65,
                available: 63,
            },
        ),
    ];
    for (what, got, want) in cases {
        assert_eq!(got, want, "{what}");
    }
    assert_eq!(
        Perm::from_rwx(true, true),
        Err(Error::WritableAndExecutable)
    );
    assert_eq!(
        Attrs::new(MemType::DeviceNgnre, Perm::Rx),
        Err(Error::ExecutableDevice)
    );
}

/// A provider with injected failures: it refuses its `fail_at`-th map, and
/// has `slots` mappings in all (like PMAP), honouring reservations.
struct FailingAccess {
    inner: HostIdentity,
    calls: usize,
    fail_at: usize,
    slots: usize,
    held: usize,
    calls_at_reserve: Option<usize>,
}

impl FailingAccess {
    fn new(fail_at: usize, slots: usize) -> Self {
        FailingAccess {
            inner: HostIdentity::default(),
            calls: 0,
            fail_at,
            slots,
            held: 0,
            calls_at_reserve: None,
        }
    }
}

impl AccessPath for FailingAccess {
    fn name(&self) -> &'static str {
        "failing"
    }
}

impl TableAccess<HostArch> for FailingAccess {
    fn map_table(&mut self, arch: &mut HostArch, mfn: Mfn) -> Result<Vaddr, AccessError> {
        self.calls += 1;
        if self.calls == self.fail_at || self.held == self.slots {
            return Err(AccessError::SlotsExhausted {
                provider: "failing",
                slots: self.slots,
            });
        }
        self.held += 1;
        self.inner.map_table(arch, mfn)
    }
    fn unmap_table(&mut self, arch: &mut HostArch, mfn: Mfn, va: Vaddr) {
        self.held -= 1;
        self.inner.unmap_table(arch, mfn, va)
    }
    fn reserve(&mut self, _arch: &mut HostArch, nested: usize) -> Result<(), AccessError> {
        self.calls_at_reserve = Some(self.calls);
        if nested > self.slots - self.held {
            return Err(AccessError::SlotsExhausted {
                provider: "failing",
                slots: self.slots,
            });
        }
        self.fail_at = usize::MAX; // a reservation is a promise
        Ok(())
    }
}

const OPS: [(u64, u64, Op, MapFlags); 4] = [
    (
        GIB,
        1500,
        Op::Insert {
            pa: Paddr(0x8000_0000),
            attrs: Attrs::RW,
        },
        MapFlags::PAGES,
    ),
    (
        0x20_0000 + 4096 * 600,
        10,
        Op::Modify { attrs: Attrs::RO },
        MapFlags::PAGES,
    ),
    (0x20_0000 + 4096 * 100, 900, Op::Remove, MapFlags::PAGES),
    (4 * GIB, 2048, Op::Populate, MapFlags::PAGES),
];

fn premapped() -> (HostMemory, PageTable<Arm64>) {
    let (mut mem, mut pt) = setup::<Arm64>(64);
    update(
        &mut mem,
        &mut pt,
        0x20_0000,
        1000,
        insert(0x8000_0000),
        MapFlags::PAGES,
    )
    .unwrap();
    (mem, pt)
}

#[test]
fn a_table_access_failure_at_any_prepare_map_changes_nothing() {
    let mut injected = 0;
    for (va, pages, op, flags) in OPS {
        let prepare_maps = {
            let (mut mem, mut pt) = premapped();
            let mut acc = FailingAccess::new(usize::MAX, 8);
            pt.update(
                &mut Env::new(&mut mem.arch, &mut acc, &mut mem.frames),
                Vaddr(va),
                pages,
                op,
                flags,
            )
            .unwrap();
            acc.calls_at_reserve.unwrap()
        };
        for fail_at in 1..=prepare_maps {
            let (mut mem, mut pt) = premapped();
            let snap = mem.arch.snapshot();
            let in_use = mem.frames.in_use();
            let mut acc = FailingAccess::new(fail_at, 8);
            let err = pt
                .update(
                    &mut Env::new(&mut mem.arch, &mut acc, &mut mem.frames),
                    Vaddr(va),
                    pages,
                    op,
                    flags,
                )
                .unwrap_err();
            assert!(matches!(err, Error::TableAccess { .. }), "{err}");
            assert!(
                mem.arch.snapshot() == snap,
                "{op:?} changed tables when map {fail_at} failed"
            );
            assert_eq!(mem.frames.in_use(), in_use);
            assert_eq!(acc.held, 0, "a mapping was not given back");
            injected += 1;
        }
    }
    assert!(injected >= 8, "only {injected} injection points");
}

#[test]
fn too_few_table_access_slots_fail_before_writing() {
    for (va, pages, op, flags) in OPS {
        for slots in 0..4 {
            let (mut mem, mut pt) = premapped();
            let snap = mem.arch.snapshot();
            let mut acc = FailingAccess::new(usize::MAX, slots);
            let err = pt
                .update(
                    &mut Env::new(&mut mem.arch, &mut acc, &mut mem.frames),
                    Vaddr(va),
                    pages,
                    op,
                    flags,
                )
                .unwrap_err();
            assert!(matches!(
                err,
                Error::TableAccess {
                    err: AccessError::SlotsExhausted { .. },
                    ..
                }
            ));
            assert!(mem.arch.snapshot() == snap);
            assert_eq!(acc.held, 0);
        }
        let (mut mem, mut pt) = premapped();
        let mut acc = FailingAccess::new(usize::MAX, 4);
        pt.update(
            &mut Env::new(&mut mem.arch, &mut acc, &mut mem.frames),
            Vaddr(va),
            pages,
            op,
            flags,
        )
        .unwrap();
    }
}

#[test]
fn every_frame_shortfall_fails_without_changing_anything() {
    let need = {
        let (mut m2, mut p2) = setup::<Arm64>(64);
        update(
            &mut m2,
            &mut p2,
            GIB,
            3000,
            insert(0x8000_0000),
            MapFlags::PAGES,
        )
        .unwrap()
        .tables_created
    };
    assert_eq!(need, 8, "L1, L2 and six L3 tables");
    for avail in 0..need {
        let (mut m3, mut p3) = setup::<Arm64>(1 + avail as usize);
        let snap = m3.arch.snapshot();
        let err = update(
            &mut m3,
            &mut p3,
            GIB,
            3000,
            insert(0x8000_0000),
            MapFlags::PAGES,
        )
        .unwrap_err();
        assert_eq!(
            err,
            Error::OutOfMemory {
                needed: need as usize,
                available: avail as usize
            }
        );
        assert!(m3.arch.snapshot() == snap);
        assert_eq!(m3.frames.in_use(), 1);
    }
}
