//! Runs one row for hvmm only, for a profiler:
//! `valgrind --tool=callgrind target/release/examples/profile_row map-single 3`
//! (a stage-2 row runs on hvmm's stage-2 table).

use hvmm_bench::libs::{Hvmm, HvmmS2};
use hvmm_bench::rows::{sample, Sizes, SparseOps};

fn main() {
    let mut args = std::env::args().skip(1);
    let row = args.next().unwrap_or_else(|| "map-single".into());
    if row == "lib-single" {
        use hvmm_bench::libs::Library;
        for _ in 0..5 {
            let n = Sizes::FULL.pages;
            let mut l = Hvmm::new(n as usize / 512 + 8);
            let t = std::time::Instant::now();
            if std::env::var("VIAROWS").is_ok() {
                hvmm_bench::rows::map_single(&mut l, n).unwrap();
            } else {
                for i in 0..n {
                    l.map_page((1 << 30) + i * 4096, 0x8_0000_0000 + i * 4096)
                        .unwrap();
                }
            }
            println!(
                "lib map-single {:.3}",
                t.elapsed().as_nanos() as f64 / n as f64
            );
        }
        return;
    }
    if row == "sparse-split" {
        use hvmm_bench::libs::Library;
        let sparse = SparseOps::generate(Sizes::FULL.sparse_ops);
        for _ in 0..3 {
            let mut l = Hvmm::new(sparse.tables);
            let (mut tm, mut tu) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
            for &(map, va) in &sparse.ops {
                let t = std::time::Instant::now();
                if map {
                    l.map_page(va, hvmm_bench::rows::sparse_pa(va)).unwrap();
                    tm += t.elapsed();
                } else {
                    l.unmap_page(va).unwrap();
                    tu += t.elapsed();
                }
            }
            let n = sparse.ops.len() as f64;
            println!(
                "sparse: maps {:.1} ns/op-of-all, unmaps {:.1}",
                tm.as_nanos() as f64 / n,
                tu.as_nanos() as f64 / n
            );
        }
        return;
    }
    if row == "populated-single" {
        for _ in 0..5 {
            populated_single();
        }
        return;
    }
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let Some(&(r, _, _)) = hvmm_bench::ROWS.iter().find(|x| x.1 == row) else {
        eprintln!("no row {row}");
        std::process::exit(2);
    };
    let sizes = Sizes::FULL;
    let sparse = SparseOps::generate(sizes.sparse_ops);
    for _ in 0..rounds {
        let s = if r.stage2() {
            sample::<HvmmS2>(r, &sizes, &sparse)
        } else {
            sample::<Hvmm>(r, &sizes, &sparse)
        }
        .expect("sample");
        println!("{row}: {:.3} ns/unit", s.ns / s.units as f64);
    }
}

/// map-single with every table made beforehand (`Populate`): the cost of
/// the one-page fast path alone.
fn populated_single() {
    use hvmm::{Attrs, MapFlags, Op, Paddr, PageTable, Vaddr};
    let n = Sizes::FULL.pages;
    let mut mem = hvmm::host::HostMemory::new(n as usize / 512 + 16);
    for i in 0..(n / 512 + 16) {
        hvmm::Arch::zero_page(&mut mem.arch, Vaddr(0x4000_0000 + i * 4096)).unwrap();
    }
    let mut pt = PageTable::<hvmm::Arm64>::create(&mut mem.env()).unwrap();
    let populate = std::env::var("NOPOP").is_err();
    if populate {
        pt.update(
            &mut mem.env(),
            Vaddr(1 << 30),
            n,
            Op::Populate,
            MapFlags::PAGES,
        )
        .unwrap();
    }
    let mut first = std::time::Duration::ZERO;
    let t = std::time::Instant::now();
    for i in 0..n {
        let t1 = (i % 512 == 0).then(std::time::Instant::now);
        let op = Op::Insert {
            pa: Paddr(0x8_0000_0000 + i * 4096),
            attrs: Attrs::RW,
        };
        pt.update(
            &mut mem.env(),
            Vaddr((1 << 30) + i * 4096),
            1,
            op,
            MapFlags::PAGES,
        )
        .unwrap();
        if let Some(t1) = t1 {
            first += t1.elapsed();
        }
    }
    println!(
        "map-single (populated first: {populate}): {:.3} ns/page, of which first pages of 2 MiB {:.3}",
        t.elapsed().as_nanos() as f64 / n as f64,
        first.as_nanos() as f64 / n as f64
    );
}
