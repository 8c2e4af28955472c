//! Fault injection with the engine on the machine model: a refused frame
//! reservation, a pool one frame short, and a table mapping that fails at
//! each of the engine's map calls in turn. Each failure must be reported and
//! must leave the tables byte for byte as they were, the pool as it was, no
//! stale TLB entries and no break-before-make violation. Every scenario
//! runs twice: with a plain frame pool (the engine reads tables) and with
//! table counts (its counted paths).

use hvmm::{Arm32, Arm64, Attrs, Error, MapFlags, Op, Paddr};
use hvmm_testkit::engine::*;

/// A representative update, run on a rig prepared by `setup`.
#[derive(Clone)]
struct Scenario {
    name: &'static str,
    setup: Vec<(u64, u64, Op, MapFlags)>,
    update: (u64, u64, Op, MapFlags),
    /// The pool keeps table counts.
    counted: bool,
}

fn insert(pa: u64, attrs: Attrs) -> Op {
    Op::Insert {
        pa: Paddr(pa),
        attrs,
    }
}

/// Engine VAs: 2 GiB into the arena (arm64: under L0[255], where the engine
/// makes every table below the root; arm32: under L1[2]).
fn scenarios<F: ModelFormat>() -> Vec<Scenario> {
    let base = F::ARENA.0 + 2 * GIB;
    let pa = 0x8000_0000;
    let mapped = vec![(base, 1000, insert(pa, Attrs::RW), MapFlags::PAGES)];
    // 1 GiB-aligned, with room for 1 GiB and more below `base`.
    let low = F::ARENA.0;
    let plain = [
        Scenario {
            name: "insert needing every level of table",
            setup: vec![],
            update: (
                base + MIB2 - 16 * PAGE,
                3000,
                insert(pa, Attrs::RW),
                MapFlags::PAGES,
            ),
            counted: false,
        },
        Scenario {
            name: "insert with blocks and contiguous runs next to mappings",
            setup: mapped.clone(),
            update: (
                base + 32 * MIB2 - 32 * PAGE,
                512 + 64,
                insert(pa + 32 * MIB2 - 32 * PAGE, Attrs::RX),
                MapFlags::BLOCKS_CONTIG,
            ),
            counted: false,
        },
        Scenario {
            name: "remove that frees tables",
            setup: vec![
                mapped[0],
                (base + GIB / 2, 512, insert(pa, Attrs::RO), MapFlags::BLOCKS),
            ],
            update: (base, 1000, Op::Remove, MapFlags::PAGES),
            counted: false,
        },
        Scenario {
            name: "remove on 2 MiB boundaries of a 1 GiB subtree and more",
            setup: vec![
                (low, 1536, insert(pa, Attrs::RW), MapFlags::PAGES),
                (low + GIB / 2, 512, insert(pa, Attrs::RO), MapFlags::BLOCKS),
                (low + GIB, 1024, insert(pa, Attrs::RW), MapFlags::PAGES),
            ],
            update: (low, (GIB + 4 * MIB2) / PAGE, Op::Remove, MapFlags::PAGES),
            counted: false,
        },
        Scenario {
            name: "modify",
            setup: mapped.clone(),
            update: (
                base + 100 * PAGE,
                600,
                Op::Modify { attrs: Attrs::RO },
                MapFlags::PAGES,
            ),
            counted: false,
        },
        Scenario {
            name: "populate",
            setup: mapped,
            update: (base + 4 * MIB2, 1024, Op::Populate, MapFlags::PAGES),
            counted: false,
        },
    ];
    let counted = plain.iter().map(|s| Scenario {
        counted: true,
        ..s.clone()
    });
    plain.iter().cloned().chain(counted).collect()
}

fn prepared<F: ModelFormat>(s: &Scenario) -> Rig<F> {
    let mut rig = Rig::<F>::with_counts(u64::MAX / 2, s.counted);
    for &(va, pages, op, flags) in &s.setup {
        rig.update(va, pages, op, flags).unwrap();
    }
    rig
}

/// What must hold after a failed update.
struct Before {
    snap: hvmm_model::FrameSnapshot,
    free: u64,
    ranges: Vec<(Paddr, Paddr)>,
}

fn before<F: ModelFormat>(rig: &mut Rig<F>, s: &Scenario) -> Before {
    let (va, pages, ..) = s.update;
    rig.prefetch(&samples::<F>(va, pages));
    Before {
        snap: rig.snapshot(),
        free: rig.free(),
        ranges: rig.alloc.ranges().collect(),
    }
}

fn assert_unchanged<F: ModelFormat>(rig: &mut Rig<F>, b: &Before, what: &str) {
    let changed = rig.m.changed_frames(&b.snap);
    assert!(changed.is_empty(), "{what}: tables changed: {changed:x?}");
    assert_eq!(rig.free(), b.free, "{what}: frames leaked");
    assert_eq!(
        rig.alloc.ranges().collect::<Vec<_>>(),
        b.ranges,
        "{what}: pool changed"
    );
    check_tlbs(rig, what);
    check_no_leak(rig);
    // The table counts still agree with the tables.
    check_counts(
        &rig.m,
        &mut rig.alloc,
        F::OA,
        &[F::TABLES],
        F::ROOT_LEVEL,
        (F::RAM_BASE, F::RAM_BASE + RAM_SIZE),
        what,
    );
}

/// The update's report and the number of map calls it makes, from a run on a copy.
fn dry_run<F: ModelFormat>(rig: &Rig<F>, s: &Scenario) -> (hvmm::UpdateReport, u64) {
    let mut copy = rig.clone();
    let maps = copy.access.maps;
    let (va, pages, op, flags) = s.update;
    let rep = copy
        .update(va, pages, op, flags)
        .unwrap_or_else(|e| panic!("{}: {e}", s.name));
    check_tlbs(&copy, s.name);
    (rep, copy.access.maps - maps)
}

fn reservation_failure_changes_nothing<F: ModelFormat>() {
    for s in scenarios::<F>() {
        let base = prepared::<F>(&s);
        let (rep, _) = dry_run(&base, &s);
        let (va, pages, op, flags) = s.update;
        let mut rig = base.clone();
        let b = before(&mut rig, &s);
        let next = rig.alloc.allocations();
        rig.alloc.set_fail_at(Some(next));
        let r = rig.update(va, pages, op, flags);
        if rep.tables_created == 0 {
            // Nothing to allocate: the reservation is never asked for.
            assert_eq!(r, Ok(rep), "{}", s.name);
            continue;
        }
        assert_eq!(
            r,
            Err(Error::OutOfMemory {
                needed: rep.tables_created as usize,
                available: b.free as usize,
            }),
            "{}",
            s.name
        );
        assert_unchanged(&mut rig, &b, s.name);
    }
}

#[test]
fn a_refused_reservation_changes_nothing_on_arm64() {
    reservation_failure_changes_nothing::<Arm64>();
}

#[test]
fn a_refused_reservation_changes_nothing_on_arm32() {
    reservation_failure_changes_nothing::<Arm32>();
}

fn pool_one_short_changes_nothing<F: ModelFormat>() {
    for s in scenarios::<F>() {
        let base = prepared::<F>(&s);
        let (rep, _) = dry_run(&base, &s);
        let need = rep.tables_created;
        let (va, pages, op, flags) = s.update;
        if need == 0 {
            // Remove and Modify never allocate: an empty pool is fine.
            let mut rig = base.clone();
            rig.drain_pool_to(0);
            assert_eq!(rig.update(va, pages, op, flags), Ok(rep), "{}", s.name);
            check_tlbs(&rig, s.name);
            continue;
        }
        let mut rig = base.clone();
        let taken = rig.drain_pool_to(need - 1);
        let b = before(&mut rig, &s);
        let r = rig.update(va, pages, op, flags);
        assert_eq!(
            r,
            Err(Error::OutOfMemory {
                needed: need as usize,
                available: need as usize - 1,
            }),
            "{}",
            s.name
        );
        let changed = rig.m.changed_frames(&b.snap);
        assert!(changed.is_empty(), "{}: {changed:x?}", s.name);
        assert_eq!(rig.free(), need - 1);
        check_tlbs(&rig, s.name);
        // With exactly enough it succeeds and uses every frame.
        let mut rig = base.clone();
        rig.drain_pool_to(need);
        assert_eq!(rig.update(va, pages, op, flags), Ok(rep), "{}", s.name);
        assert_eq!(rig.free(), 0);
        check_tlbs(&rig, s.name);
        drop(taken);
    }
}

#[test]
fn a_pool_one_frame_short_changes_nothing_on_arm64() {
    pool_one_short_changes_nothing::<Arm64>();
}

#[test]
fn a_pool_one_frame_short_changes_nothing_on_arm32() {
    pool_one_short_changes_nothing::<Arm32>();
}

/// Fails the k-th map call for every k the update makes; returns the
/// failures (k, what went wrong) for the prepare pass and the commit pass.
fn map_failures<F: ModelFormat>(s: &Scenario) -> (Vec<String>, Vec<String>, u64, u64) {
    let base = prepared::<F>(s);
    let (_, total) = dry_run(&base, s);
    let (va, pages, op, flags) = s.update;
    let (mut in_prepare, mut in_commit) = (Vec::new(), Vec::new());
    let mut prepare_maps = 0;
    for k in 1..=total {
        let mut rig = base.clone();
        let b = before(&mut rig, s);
        let (r, at_reserve) = rig.update_failing(k, va, pages, op, flags);
        let commit = at_reserve.is_some_and(|n| k > n);
        if let Some(n) = at_reserve {
            prepare_maps = n;
        }
        let what = format!("{}: map call {k} of {total} failing", s.name);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert!(
                matches!(r, Err(Error::TableAccess { .. })),
                "{what}: returned {r:?}"
            );
            assert_unchanged(&mut rig, &b, &what);
        }));
        if let Err(p) = outcome {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "panic".into());
            if commit {
                in_commit.push(msg);
            } else {
                in_prepare.push(msg);
            }
        }
    }
    (in_prepare, in_commit, prepare_maps, total)
}

fn map_failure_in_prepare_changes_nothing<F: ModelFormat>() {
    let mut points = 0;
    for s in scenarios::<F>() {
        let (bad, _, prepare_maps, _) = map_failures::<F>(&s);
        assert!(bad.is_empty(), "{}", bad.join("\n"));
        points += prepare_maps;
    }
    assert!(points >= 10, "only {points} injection points");
}

#[test]
fn a_table_mapping_failing_in_the_prepare_pass_changes_nothing_on_arm64() {
    map_failure_in_prepare_changes_nothing::<Arm64>();
}

#[test]
fn a_table_mapping_failing_in_the_prepare_pass_changes_nothing_on_arm32() {
    map_failure_in_prepare_changes_nothing::<Arm32>();
}

fn map_failure_in_commit_changes_nothing<F: ModelFormat>() {
    let mut bad = Vec::new();
    for s in scenarios::<F>() {
        let (_, b, ..) = map_failures::<F>(&s);
        bad.extend(b);
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// The engine's prepare pass maps every existing table the commit pass will
// map, then reserves the provider's slots and checks that every frame it will
// take is reachable (`TableAccess::can_reach`). A provider that would fail
// after that must refuse the reservation instead (the reservation contract);
// the failing provider here does, and nothing changes.

#[test]
fn a_table_mapping_failing_in_the_commit_pass_changes_nothing_on_arm64() {
    map_failure_in_commit_changes_nothing::<Arm64>();
}

#[test]
fn a_table_mapping_failing_in_the_commit_pass_changes_nothing_on_arm32() {
    map_failure_in_commit_changes_nothing::<Arm32>();
}

/// A rig whose pool also holds one frame of RAM outside the window: the
/// direct map cannot reach it (AccessError::Unreachable), and the allocator
/// hands it out first (it is the highest).
fn rig_with_unreachable_frame<F: ModelFormat>() -> (Rig<F>, u64) {
    let mut rig = Rig::<F>::full();
    let far = F::RAM_BASE + RAM_SIZE;
    rig.m.add_ram(Paddr(far), PAGE).unwrap();
    rig.alloc.add(Paddr(far), Paddr(far + PAGE)).unwrap();
    (rig, far)
}

/// An insert that fills the rest of an existing level-3 table and needs a
/// new one for the next 2 MiB: the new frame is unreachable.
fn unreachable_new_table_frame_changes_nothing<F: ModelFormat>() {
    let (mut rig, far) = rig_with_unreachable_frame::<F>();
    let va = F::ARENA.0 + 2 * GIB;
    // Make the level-3 table for the first 2 MiB (taking the far frame for
    // it would fail too, so take it out first and put it back after).
    let far_mfn = hvmm::Mfn(far / PAGE);
    let kept = rig.alloc.alloc(1, 1).unwrap();
    assert_eq!(kept, far_mfn);
    rig.update(va, 1, insert(0x8000_0000, Attrs::RW), MapFlags::PAGES)
        .unwrap();
    rig.alloc.free_pages_at(far_mfn, 1).unwrap();
    let s = Scenario {
        name: "insert whose new table frame is unreachable",
        setup: vec![],
        update: (
            va + PAGE,
            1023,
            insert(0x8000_1000, Attrs::RW),
            MapFlags::PAGES,
        ),
        counted: false,
    };
    let b = before(&mut rig, &s);
    let (va2, pages, op, flags) = s.update;
    let r = rig.update(va2, pages, op, flags);
    assert!(
        matches!(r, Err(Error::TableAccess { mfn, .. }) if mfn == far_mfn),
        "{r:?}"
    );
    // What the caller was told: nothing was mapped.
    assert_eq!(
        rig.m.walk(0, hvmm::Vaddr(va + PAGE)).ok().map(|t| t.pa),
        None,
        "the failed insert left {:#x} mapped",
        va + PAGE
    );
    assert_unchanged(&mut rig, &b, s.name);
}

#[test]
fn an_unreachable_new_table_frame_fails_the_insert_without_writing_on_arm64() {
    unreachable_new_table_frame_changes_nothing::<Arm64>();
}

#[test]
fn an_unreachable_new_table_frame_fails_the_insert_without_writing_on_arm32() {
    unreachable_new_table_frame_changes_nothing::<Arm32>();
}

/// A new level-2 table gets two new level-3 tables; the frame for the
/// second is unreachable. The first level-3 table must be freed with the
/// level-2 table.
fn failed_new_subtree_is_freed<F: ModelFormat>() {
    let mut rig = Rig::<F>::full();
    let far = F::RAM_BASE - PAGE;
    rig.m.add_ram(Paddr(far), PAGE).unwrap();
    rig.alloc.add(Paddr(far), Paddr(far + PAGE)).unwrap();
    // Leave two reachable frames above the far one: the level-2 table and
    // the first level-3 table get them, the second level-3 table the far one.
    let drained = rig.drain_pool_to(3);
    let va = F::ARENA.1 - GIB + MIB2 - 8 * PAGE;
    assert_eq!(
        rig.entry_at(va, 1).map(|d| d & 1),
        Some(0),
        "no level-2 table yet"
    );
    let s = Scenario {
        name: "insert whose second new level-3 table is unreachable",
        setup: vec![],
        update: (va, 16, insert(0x8000_0000, Attrs::RW), MapFlags::PAGES),
        counted: false,
    };
    let b = before(&mut rig, &s);
    let r = rig.update(va, 16, insert(0x8000_0000, Attrs::RW), MapFlags::PAGES);
    assert!(
        matches!(r, Err(Error::TableAccess { mfn, .. }) if mfn.0 == far / PAGE),
        "{r:?}"
    );
    let changed = rig.m.changed_frames(&b.snap);
    assert!(
        changed.is_empty(),
        "{}: tables changed: {changed:x?}",
        s.name
    );
    assert_eq!(rig.free(), b.free, "{}: frames leaked", s.name);
    check_tlbs(&rig, s.name);
    // The frames drained for the set-up go back; then every frame taken
    // from the pool must be a reachable table.
    for m in drained {
        rig.alloc.free_pages_at(m, 1).unwrap();
    }
    check_no_leak(&rig);
}

#[test]
fn a_failed_insert_frees_every_table_of_a_new_subtree_on_arm64() {
    failed_new_subtree_is_freed::<Arm64>();
}

#[test]
fn a_failed_insert_frees_every_table_of_a_new_subtree_on_arm32() {
    failed_new_subtree_is_freed::<Arm32>();
}
