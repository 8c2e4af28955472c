//! Every row once at a tiny size, for every library, with every result
//! checked, so the harness cannot silently measure nothing.

use hvmm_bench::libs::{AarchPaging, Hvmm, Library, Ptm, Row, Xen2019};
use hvmm_bench::rows::{floor_sample, sample, Sizes, SparseOps, PA, VA};
use hvmm_bench::{run_row, Config, ROWS};

const TINY: Sizes = Sizes {
    pages: 2048,
    sparse_ops: 2000,
    verify_stride: 1,
};

fn all_rows<L: Library>() {
    let sparse = SparseOps::generate(TINY.sparse_ops);
    for (row, name, _) in ROWS {
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
    }
}

#[test]
fn hvmm_rows() {
    all_rows::<Hvmm>();
}

#[test]
fn aarch64_paging_rows() {
    all_rows::<AarchPaging>();
}

#[test]
fn page_table_multiarch_rows() {
    all_rows::<Ptm>();
}

#[test]
fn xen_baseline_rows() {
    all_rows::<Xen2019>();
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
        for (i, c) in r.cells.iter().enumerate() {
            assert!(c.error.is_none(), "{:?} lib {i}: {:?}", row, c.error);
            assert_eq!(c.stats.is_some(), c.cannot.is_none(), "{row:?} lib {i}");
        }
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
