//! Every row once at a tiny size, for every library, with every result
//! checked, so the harness cannot silently measure nothing.

use hvmm_bench::libs::{
    AarchPaging, AarchPagingLive, AarchPagingS2, AarchPagingS2Live, Hvmm, HvmmS2, Library, Ptm,
    Row, Xen2019,
};
use hvmm_bench::rows::{
    floor_sample, sample, split_blocks, Sizes, SparseOps, BLOCK, PA, PA_BLOCKS, SPLIT_PAGE, VA,
    VA_BLOCKS,
};
use hvmm_bench::{run_row, Config, LIVE, ROWS};

const TINY: Sizes = Sizes {
    pages: 2048,
    sparse_ops: 2000,
    verify_stride: 1,
};

/// Every row of `L`'s stage that it can do; returns how many ran.
fn all_rows<L: Library>() -> usize {
    let sparse = SparseOps::generate(TINY.sparse_ops);
    let mut ran = 0;
    for (row, name, _) in ROWS {
        if row.stage2() != L::STAGE2 {
            assert!(
                sample::<L>(row, &TINY, &sparse).is_err(),
                "{} ran {name}, a row of the other stage",
                L::NAME
            );
            continue;
        }
        if let Some(why) = L::cannot(row) {
            eprintln!("{} cannot {name}: {why}", L::NAME);
            continue;
        }
        let s =
            sample::<L>(row, &TINY, &sparse).unwrap_or_else(|e| panic!("{} {name}: {e}", L::NAME));
        assert!(
            s.ns > 0.0 && s.units > 0,
            "{} {name}: nothing measured",
            L::NAME
        );
        ran += 1;
    }
    ran
}

#[test]
fn hvmm_rows() {
    // Every stage-1 row, split and merge included.
    assert_eq!(all_rows::<Hvmm>(), 10);
}

#[test]
fn hvmm_stage2_rows() {
    assert_eq!(all_rows::<HvmmS2>(), 4);
}

#[test]
fn aarch64_paging_rows() {
    assert_eq!(all_rows::<AarchPaging>(), 10);
}

#[test]
fn aarch64_paging_stage2_rows() {
    assert_eq!(all_rows::<AarchPagingS2>(), 4);
}

#[test]
fn aarch64_paging_live_rows() {
    assert_eq!(all_rows::<AarchPagingLive>(), 2, "split and merge");
    assert_eq!(
        all_rows::<AarchPagingS2Live>(),
        3,
        "s2-map-4k, s2-modify-ro, s2-unmap"
    );
}

#[test]
fn page_table_multiarch_rows() {
    assert_eq!(all_rows::<Ptm>(), 8, "no split, no merge");
    assert!(Ptm::cannot(Row::S2Map4k).is_some());
}

#[test]
fn xen_baseline_rows() {
    assert_eq!(all_rows::<Xen2019>(), 7, "no blocks");
    assert!(Xen2019::cannot(Row::S2Map4k).is_some());
}

/// Every library translates every page of the same mapping to the same PA.
#[test]
fn translations_agree() {
    let n = 1024;
    let mut h = Hvmm::new(16);
    let mut a = AarchPaging::new(16);
    let mut p = Ptm::new(16);
    let mut x = Xen2019::new(16);
    h.map(VA, PA, n, false).unwrap();
    a.map(VA, PA, n, false).unwrap();
    p.map(VA, PA, n, false).unwrap();
    x.map(VA, PA, n, false).unwrap();
    for i in 0..n + 8 {
        let va = VA + i * 4096;
        let want = (i < n).then_some((PA + i * 4096, true));
        assert_eq!(h.lookup(va), want, "hvmm {va:#x}");
        assert_eq!(a.lookup(va), want, "aarch64-paging {va:#x}");
        assert_eq!(p.lookup(va), want, "page_table_multiarch {va:#x}");
        assert_eq!(x.lookup(va), want, "xen {va:#x}");
    }
    let sums = [
        h.translate_range(VA, n),
        a.translate_range(VA, n),
        p.translate_range(VA, n),
        x.translate_range(VA, n),
    ];
    assert!(sums.iter().all(|&s| s == sums[0]), "{sums:x?}");
    // Same tables: root, L1, L2, two L3s.
    assert_eq!(
        [
            h.tables_in_use(),
            a.tables_in_use(),
            p.tables_in_use(),
            x.tables_in_use()
        ],
        [5; 4]
    );
}

/// Tables freed by unmap, as the report states them.
#[test]
fn unmap_frees() {
    let n = 1024;
    let mut h = Hvmm::new(16);
    h.map(VA, PA, n, false).unwrap();
    assert_eq!(
        h.unmap(VA, n).unwrap(),
        4,
        "hvmm frees 2 L3, the L2 and the L1"
    );
    let mut x = Xen2019::new(16);
    x.map(VA, PA, n, false).unwrap();
    assert_eq!(x.unmap(VA, n).unwrap(), 0);
    assert_eq!(x.tables_in_use(), 5);
}

/// The same on a guest's stage-2 table (hvmm and aarch64-paging's stage-2
/// regimes), read-write then read-only.
#[test]
fn stage2_translations_agree() {
    let n = 1024;
    let mut h = HvmmS2::new(16);
    let mut a = AarchPagingS2::new(16);
    h.map(VA, PA, n, false).unwrap();
    a.map(VA, PA, n, false).unwrap();
    for writable in [true, false] {
        for i in 0..n + 8 {
            let va = VA + i * 4096;
            let want = (i < n).then_some((PA + i * 4096, writable));
            assert_eq!(h.lookup(va), want, "hvmm {va:#x}");
            assert_eq!(a.lookup(va), want, "aarch64-paging {va:#x}");
        }
        assert_eq!(h.translate_range(VA, n), a.translate_range(VA, n));
        h.make_ro(VA, n).unwrap();
        a.make_ro(VA, n).unwrap();
    }
    // hvmm: two concatenated level-1 roots, L2, two L3s; aarch64-paging one
    // level-1 root (no concatenation), L2, two L3s.
    assert_eq!([h.tables_in_use(), a.tables_in_use()], [5, 4]);
    // hvmm frees the two L3s and the emptied L2 (the root stays);
    // aarch64-paging frees only the subtables of entries the range covers
    // whole: the two L3s.
    assert_eq!(h.unmap(VA, n).unwrap(), 3);
    assert_eq!(a.unmap(VA, n).unwrap(), 2);
    assert_eq!(h.lookup(VA), None);
    assert_eq!(a.lookup(VA), None);
}

/// hvmm's split and merge are what the rows say: a live split (one block
/// split into one new table, break-before-make invalidation), then a merge
/// that frees that table and leaves a 2 MiB block.
#[test]
fn hvmm_splits_and_merges() {
    let mut h = Hvmm::new(8);
    h.map(VA_BLOCKS, PA_BLOCKS, 1024, true).unwrap();
    let ro = VA_BLOCKS + BLOCK + SPLIT_PAGE * 4096;
    assert_eq!(h.leaf_level(ro), Some(2));
    let r = h.make_ro_report(ro).unwrap();
    assert_eq!((r.splits, r.tables_created), (1, 1), "{r:?}");
    assert!(r.tlb_invalidations >= 1, "the break is invalidated: {r:?}");
    assert_eq!(h.leaf_level(ro), Some(3));
    assert_eq!(
        h.lookup(ro),
        Some((PA_BLOCKS + BLOCK + SPLIT_PAGE * 4096, false))
    );
    let r = h.merge_report(ro).unwrap();
    assert_eq!((r.merges, r.tables_freed), (1, 1), "{r:?}");
    assert_eq!(h.leaf_level(ro), Some(2));
    assert_eq!(
        h.lookup(ro),
        Some((PA_BLOCKS + BLOCK + SPLIT_PAGE * 4096, true))
    );
    // The stage-1 break check: at VA 1 GiB the host back end's own table
    // pages (VA = PA from 0x4000_0000) lie inside the block, so the engine
    // refuses to break it.
    let mut h = Hvmm::new(8);
    h.map(VA, PA_BLOCKS, 512, true).unwrap();
    let e = h.make_ro_report(VA + SPLIT_PAGE * 4096).unwrap_err();
    assert!(e.contains("would unmap the table page"), "{e}");
}

/// aarch64-paging splits with `modify_range` only while the table is not
/// live; marked active it refuses (its break-before-make check), which is
/// why the live runner breaks and makes by hand.
#[test]
fn aarch64_paging_refuses_a_live_split() {
    let mut a = AarchPaging::new(8);
    a.map(VA_BLOCKS, PA_BLOCKS, 512, true).unwrap();
    a.modify_one_ro(VA_BLOCKS + SPLIT_PAGE * 4096).unwrap();
    let mut live = AarchPagingLive::new(8);
    live.map(VA_BLOCKS, PA_BLOCKS, 512, true).unwrap();
    let e = live
        .modify_one_ro(VA_BLOCKS + SPLIT_PAGE * 4096)
        .unwrap_err();
    assert!(
        matches!(e, aarch64_paging::MapError::BreakBeforeMakeViolation(_)),
        "{e:?}"
    );
    // Its by-hand split works live.
    split_blocks(&mut live, 1).unwrap();
    assert_eq!(
        live.lookup(VA_BLOCKS + SPLIT_PAGE * 4096),
        Some((PA_BLOCKS + SPLIT_PAGE * 4096, false))
    );
    let mut s2 = AarchPagingS2Live::new(8);
    s2.map(VA_BLOCKS, PA_BLOCKS, 512, true).unwrap();
    assert!(s2.modify_one_ro(VA_BLOCKS + SPLIT_PAGE * 4096).is_err());
}

/// page_table_multiarch cannot merge even by hand: unmapping the pages
/// leaves the level-3 table, and a 2 MiB map over it is refused.
#[test]
fn page_table_multiarch_cannot_merge() {
    let mut p = Ptm::new(8);
    p.map(VA_BLOCKS, PA_BLOCKS, 512, false).unwrap();
    let tables = p.tables_in_use();
    p.unmap(VA_BLOCKS, 512).unwrap();
    assert_eq!(p.tables_in_use(), tables, "the level-3 table stays");
    let e = p.map(VA_BLOCKS, PA_BLOCKS, 512, true).unwrap_err();
    assert!(e.contains("AlreadyMapped"), "{e}");
}

#[test]
fn harness_records_every_runnable_cell() {
    let cfg = Config {
        sizes: TINY,
        warmup: 0,
        reps: 1,
    };
    let sparse = SparseOps::generate(TINY.sparse_ops);
    for (row, _, _) in ROWS {
        let r = run_row(row, &cfg, &sparse, &mut |_| {});
        assert_eq!(r.cells.len(), LIVE + 1);
        for (i, c) in r.cells.iter().enumerate() {
            assert!(c.error.is_none(), "{:?} lib {i}: {:?}", row, c.error);
            assert_eq!(c.stats.is_some(), c.cannot.is_none(), "{row:?} lib {i}");
        }
        // hvmm does every row; aarch64-paging every row.
        assert!(r.cells[0].stats.is_some(), "{row:?}: hvmm");
        assert!(r.cells[1].stats.is_some(), "{row:?}: aarch64-paging");
    }
    assert!(floor_sample(TINY.pages).ns > 0.0);
    let _ = Row::Map4k;
}

#[test]
fn early_boot_counts() {
    let e = hvmm_bench::early::early_counts(2048).unwrap();
    // 4 L3 tables + 1 L2 created through PMAP, one map each.
    assert_eq!(e.hvmm_map.pmap_maps, 5);
    // Xen: 4 maps per page, plus one per created table.
    assert_eq!(e.xen_map.table_maps, 4 * 2048 + 5);
    assert_eq!(e.xen_unmap.tlbi, 2048);
    assert!(e.hvmm_unmap.tlbi < e.xen_unmap.tlbi);
    assert_eq!(e.hvmm_unmap.tables_freed, 5);
}

/// The scaling section's points at tiny sizes: `sparse` over the whole
/// 48-bit space runs for every library (its PAs fit 48 bits, its table
/// count is enough for a library that never frees), and every point of
/// the section appears once with the main table's points reused.
#[test]
fn scaling_points_run() {
    let sparse = SparseOps::generate_in(500, 1 << 36);
    assert!(sparse.ops.iter().any(|&(_, va)| va >= 1 << 47));
    fn sparse_runs<L: Library>(sparse: &SparseOps) {
        let s = sample::<L>(Row::Sparse, &TINY, sparse)
            .unwrap_or_else(|e| panic!("{} sparse over 256 TiB: {e}", L::NAME));
        assert_eq!(s.units, 500);
    }
    sparse_runs::<Hvmm>(&sparse);
    sparse_runs::<AarchPaging>(&sparse);
    sparse_runs::<Ptm>(&sparse);
    sparse_runs::<Xen2019>(&sparse);
    // The map-4k of 2 MiB + a page crosses into a second level-3 table
    // and runs; 1 MiB (not a whole table) too.
    for pages in [513, 256] {
        let sizes = Sizes { pages, ..TINY };
        let none = SparseOps::generate(0);
        for row in [Row::Map4k, Row::Translate] {
            sample::<Ptm>(row, &sizes, &none).unwrap();
            sample::<Hvmm>(row, &sizes, &none).unwrap();
        }
    }
    let cfg = Config {
        sizes: TINY,
        warmup: 0,
        reps: 1,
    };
    let tiny_sparse = SparseOps::generate(TINY.sparse_ops);
    let main: Vec<_> = [Row::Map4k, Row::Translate, Row::Sparse]
        .into_iter()
        .map(|r| run_row(r, &cfg, &tiny_sparse, &mut |_| {}))
        .collect();
    let points = hvmm_bench::scale::POINTS;
    let small: Vec<_> = points.iter().filter(|p| !p.big() && !p.main).collect();
    assert!(small.len() >= 3);
    let md = hvmm_bench::scale::markdown(&[], TINY.sparse_ops);
    assert!(md.contains("## How the cost grows"));
    // The main points are taken from the main rows, not measured again.
    for p in points.iter().filter(|p| p.main) {
        assert!(main.iter().any(|r| r.row == p.row));
    }
}
