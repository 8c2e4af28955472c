//! The rows: one sample of one row for one library (set-up untimed, work
//! timed, result checked), and the memory-bound floor.

use crate::libs::{page_sum, Library, Row};
use std::hint::black_box;
use std::time::Instant;

/// VA of the 1 GiB used by every row but `sparse`.
pub const VA: u64 = 1 << 30;
/// PA it maps to (4 KiB rows).
pub const PA: u64 = 0x8_0000_0000;
/// PA for `map-blocks` / `split` / `merge`: 2 MiB aligned but not 1 GiB
/// aligned, so every library writes 2 MiB blocks (not one 1 GiB block, and
/// `merge` never makes one).
pub const PA_BLOCKS: u64 = 0x8_0020_0000;
/// VA of the 1 GiB of `split` and `merge`. Not [`VA`]: the host back end
/// reaches hvmm's table pages at VA = PA from 0x4000_0000 (1 GiB) on, so a
/// break of a block at VA 1 GiB would, in that model, unmap the very table
/// page the engine writes through, and the engine refuses the split
/// (`Error::BreakUnmapsTable`, as it must on a real stage 1).
pub const VA_BLOCKS: u64 = 4 << 30;
/// Bytes per 2 MiB block.
pub const BLOCK: u64 = 2 << 20;
/// The page of each 2 MiB block that `split` makes read-only (and `merge`
/// read-write again).
pub const SPLIT_PAGE: u64 = 5;
/// PA offset of `sparse` mappings (PA = VA + this, modulo 2^48: [`sparse_pa`]).
pub const SPARSE_PA: u64 = 0x1000_0000_0000;
/// Pages in the `sparse` VA space of the main table (512 GiB).
pub const SPARSE_SPACE_PAGES: u64 = 1 << 27;

/// The PA a `sparse` page at `va` maps to: `va` + [`SPARSE_PA`], kept in
/// the 48-bit physical address space (one-to-one, page-aligned).
#[inline(always)]
pub const fn sparse_pa(va: u64) -> u64 {
    va.wrapping_add(SPARSE_PA) & ((1 << 48) - 1)
}
const PAGE: u64 = 4096;

/// Sizes of one run.
#[derive(Copy, Clone, Debug)]
pub struct Sizes {
    /// Pages in the "1 GiB" (262 144; smaller in tests). A multiple of 512.
    pub pages: u64,
    /// Random operations in `sparse`.
    pub sparse_ops: usize,
    /// Check every `verify_stride`-th page after each sample (1 = all).
    pub verify_stride: u64,
}

impl Sizes {
    /// The sizes of the issue: 1 GiB, 100 000 sparse operations.
    pub const FULL: Sizes = Sizes {
        pages: 262_144,
        sparse_ops: 100_000,
        verify_stride: 61,
    };
}

/// One timed sample.
#[derive(Copy, Clone, Debug, Default)]
pub struct Sample {
    /// Nanoseconds of the timed work.
    pub ns: f64,
    /// Work units (pages, or operations) it did.
    pub units: u64,
    /// Table pages freed (unmap).
    pub freed: Option<u64>,
    /// Table pages in use after the work.
    pub tables: usize,
}

/// The pre-generated `sparse` workload.
#[derive(Clone, Debug)]
pub struct SparseOps {
    /// Pages in its VA space (from VA 0).
    pub space_pages: u64,
    /// Table pages a library that never frees a table needs for it: one per
    /// distinct 2 MiB, 1 GiB and 512 GiB region a map touches, and a few.
    pub tables: usize,
    /// (map?, VA) in order.
    pub ops: Vec<(bool, u64)>,
    /// Pages mapped at the end.
    pub live: Vec<u64>,
    /// Pages mapped at some point and unmapped at the end (a few, for checks).
    pub gone: Vec<u64>,
    /// Map operations (bounds the tables needed).
    pub maps: usize,
}

impl SparseOps {
    /// `n` operations over the 512 GiB of the main table
    /// ([`SparseOps::generate_in`]).
    pub fn generate(n: usize) -> Self {
        Self::generate_in(n, SPARSE_SPACE_PAGES)
    }

    /// `n` operations: map a random unmapped page of the `space_pages`
    /// pages from VA 0 or unmap a random mapped one, with equal probability
    /// (xorshift, fixed seed).
    pub fn generate_in(n: usize, space_pages: u64) -> Self {
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut live: Vec<u64> = Vec::new();
        let mut set = std::collections::HashSet::new();
        let mut ops = Vec::with_capacity(n);
        let mut gone = Vec::new();
        let mut maps = 0;
        for _ in 0..n {
            if live.is_empty() || rnd() & 1 == 0 {
                let va = loop {
                    let p = (rnd() % space_pages) * PAGE;
                    if set.insert(p) {
                        break p;
                    }
                };
                live.push(va);
                ops.push((true, va));
                maps += 1;
            } else {
                let i = (rnd() % live.len() as u64) as usize;
                let va = live.swap_remove(i);
                set.remove(&va);
                if gone.len() < 64 {
                    gone.push(va);
                }
                ops.push((false, va));
            }
        }
        gone.retain(|va| !set.contains(va));
        let mut regions = std::collections::HashSet::new();
        for &(map, va) in &ops {
            if map {
                for shift in [21, 30, 39] {
                    regions.insert((shift, va >> shift));
                }
            }
        }
        SparseOps {
            space_pages,
            tables: regions.len() + 8,
            ops,
            live,
            gone,
            maps,
        }
    }
}

fn err<T>(lib: &str, what: &str, r: Result<T, String>) -> Result<T, String> {
    r.map_err(|e| format!("{lib}: {what}: {e}"))
}

/// Checks the 1 GiB translates as expected (every `stride`-th page, and the last).
fn verify<L: Library>(l: &mut L, sizes: &Sizes, pa: u64, writable: bool) -> Result<(), String> {
    let mut check = |i: u64| -> Result<(), String> {
        let va = VA + i * PAGE;
        match l.lookup(va) {
            Some((got, w)) if got == pa + i * PAGE && w == writable => Ok(()),
            other => Err(format!(
                "{}: {va:#x} translates to {other:x?}, expected ({:#x}, writable {writable})",
                L::NAME,
                pa + i * PAGE
            )),
        }
    };
    let mut i = 0;
    while i < sizes.pages {
        check(i)?;
        i += sizes.verify_stride.max(1);
    }
    check(sizes.pages - 1)
}

fn verify_unmapped<L: Library>(l: &mut L, sizes: &Sizes) -> Result<(), String> {
    let mut i = 0;
    while i < sizes.pages {
        let va = VA + i * PAGE;
        if let Some(x) = l.lookup(va) {
            return Err(format!(
                "{}: {va:#x} still maps {x:x?} after unmap",
                L::NAME
            ));
        }
        i += sizes.verify_stride.max(1);
    }
    Ok(())
}

/// Table pages for `pages` pages of 4 KiB from [`VA`]: a level-3 table per
/// 2 MiB, a level-2 table per 1 GiB (one more where the range crosses
/// one), the rest and some spare.
fn tables_4k(pages: u64) -> usize {
    (pages.div_ceil(512) + pages.div_ceil(512 * 512) + 8) as usize
}

/// The timed loop of `map-single` (its own function, so every library's
/// loop is compiled alone rather than inside [`sample`]).
#[inline(never)]
pub fn map_single<L: Library>(l: &mut L, n: u64) -> Result<(), String> {
    for i in 0..n {
        l.map_page(VA + i * PAGE, PA + i * PAGE)?;
    }
    Ok(())
}

/// The timed loop of `translate-point`.
#[inline(never)]
fn translate_point<L: Library>(l: &mut L, n: u64) -> u64 {
    let mut sum = 0u64;
    for i in 0..n {
        if let Some((pa, _)) = l.lookup(VA + i * PAGE) {
            sum = sum.wrapping_add(pa >> 12);
        }
    }
    sum
}

/// The timed loop of `split`: one page made read-only inside each of
/// `blocks` 2 MiB blocks from [`VA_BLOCKS`] on.
#[inline(never)]
pub fn split_blocks<L: Library>(l: &mut L, blocks: u64) -> Result<(), String> {
    for b in 0..blocks {
        l.split(VA_BLOCKS + b * BLOCK + SPLIT_PAGE * PAGE)?;
    }
    Ok(())
}

/// The timed loop of `merge`: each of `blocks` split 2 MiB made uniform and
/// a block again.
#[inline(never)]
pub fn merge_blocks<L: Library>(l: &mut L, blocks: u64) -> Result<(), String> {
    for b in 0..blocks {
        let va = VA_BLOCKS + b * BLOCK;
        l.merge(va, va + SPLIT_PAGE * PAGE, PA_BLOCKS + b * BLOCK)?;
    }
    Ok(())
}

/// Checks the pages around each block's [`SPLIT_PAGE`]: the PA, and that
/// only that page is read-only (`split_done`) or none is.
fn verify_blocks<L: Library>(l: &mut L, blocks: u64, split_done: bool) -> Result<(), String> {
    for b in 0..blocks {
        let base = b * BLOCK;
        for i in [0, SPLIT_PAGE - 1, SPLIT_PAGE, SPLIT_PAGE + 1, 511] {
            let va = VA_BLOCKS + base + i * PAGE;
            let want = (
                PA_BLOCKS + base + i * PAGE,
                !(split_done && i == SPLIT_PAGE),
            );
            let got = l.lookup(va);
            if got != Some(want) {
                let what = if split_done { "split" } else { "merge" };
                return Err(format!(
                    "{}: after {what} {va:#x} -> {got:x?}, expected {want:x?}",
                    L::NAME
                ));
            }
        }
    }
    Ok(())
}

/// The timed loop of `sparse`.
#[inline(never)]
fn sparse_ops<L: Library>(l: &mut L, sparse: &SparseOps) -> Result<(), String> {
    for &(map, va) in &sparse.ops {
        if map {
            l.map_page(va, sparse_pa(va))
                .map_err(|e| format!("map_page: {e}"))?;
        } else {
            l.unmap_page(va).map_err(|e| format!("unmap_page: {e}"))?;
        }
    }
    Ok(())
}

/// Pages of the warm-up of [`warm_up`]: two level-3 tables' worth.
pub const WARM_UP_PAGES: u64 = 1024;

/// Runs `row`'s one timed call (`row` one of the rows whose work is a
/// single call: `map-4k`, `map-blocks`, `modify-ro`, `translate`, `unmap`)
/// on [`WARM_UP_PAGES`] of a table of its own, untimed, after the sample's
/// set-up and right before its timed call. Each library's code for the
/// operation is then in the
/// instruction cache when the sample times it, whatever the harness ran
/// before (the other libraries' samples): a call of a few microseconds
/// measures its work, not the instruction fetches of code the previous
/// library's run evicted — which hit a library whose operation shares its
/// code with the set-up's map (aarch64-paging's unmap is its `map_range`)
/// less than one whose remove path is its own. Every library alike.
pub fn warm_up<L: Library>(row: Row) -> Result<(), String> {
    let n = WARM_UP_PAGES;
    let mut l = L::new(8);
    let name = L::NAME;
    match row {
        Row::Map4k => err(name, "warm-up map", l.map(VA, PA, n, false)),
        Row::MapBlocks => err(name, "warm-up map", l.map(VA, PA_BLOCKS, n, true)),
        Row::ModifyRo => {
            err(name, "warm-up map", l.map(VA, PA, n, false))?;
            err(name, "warm-up make read-only", l.make_ro(VA, n))
        }
        Row::Translate => {
            err(name, "warm-up map", l.map(VA, PA, n, false))?;
            black_box(l.translate_range(VA, n));
            Ok(())
        }
        Row::Unmap => {
            err(name, "warm-up map", l.map(VA, PA, n, false))?;
            err(name, "warm-up unmap", l.unmap(VA, n)).map(|_| ())
        }
        _ => Ok(()),
    }
}

/// Runs one sample of `row` for library `L`.
///
/// A stage-2 row ([`Row::stage2`]) does its stage-1 twin's work
/// ([`Row::work`]) on a stage-2 library (IPAs where the stage-1 row has VAs).
pub fn sample<L: Library>(row: Row, sizes: &Sizes, sparse: &SparseOps) -> Result<Sample, String> {
    let n = sizes.pages;
    let name = L::NAME;
    if row.stage2() != L::STAGE2 {
        return Err(format!(
            "{name}: {row:?} is a stage-{} row",
            if row.stage2() { 2 } else { 1 }
        ));
    }
    let row = row.work();
    let frames = tables_4k(n);
    let mut s = Sample {
        units: n,
        ..Default::default()
    };
    match row {
        Row::Map4k => {
            let mut l = L::new(frames);
            warm_up::<L>(row)?;
            let t = Instant::now();
            let r = l.map(VA, PA, n, false);
            s.ns = t.elapsed().as_nanos() as f64;
            err(name, "map", r)?;
            verify(&mut l, sizes, PA, true)?;
            s.tables = l.tables_in_use();
        }
        Row::MapBlocks => {
            let mut l = L::new(frames);
            warm_up::<L>(row)?;
            let t = Instant::now();
            let r = l.map(VA, PA_BLOCKS, n, true);
            s.ns = t.elapsed().as_nanos() as f64;
            err(name, "map", r)?;
            verify(&mut l, sizes, PA_BLOCKS, true)?;
            s.tables = l.tables_in_use();
        }
        Row::MapSingle => {
            let mut l = L::new(frames);
            let t = Instant::now();
            let r = map_single(&mut l, n);
            s.ns = t.elapsed().as_nanos() as f64;
            err(name, "map_page", r)?;
            verify(&mut l, sizes, PA, true)?;
            s.tables = l.tables_in_use();
        }
        Row::ModifyRo => {
            let mut l = L::new(frames);
            err(name, "map", l.map(VA, PA, n, false))?;
            warm_up::<L>(row)?;
            let t = Instant::now();
            let r = l.make_ro(VA, n);
            s.ns = t.elapsed().as_nanos() as f64;
            err(name, "make read-only", r)?;
            verify(&mut l, sizes, PA, false)?;
            s.tables = l.tables_in_use();
        }
        Row::Split => {
            // One page made read-only inside each 2 MiB block.
            let blocks = n / 512;
            let mut l = L::new(frames + blocks as usize);
            err(name, "map blocks", l.map(VA_BLOCKS, PA_BLOCKS, n, true))?;
            let t = Instant::now();
            let r = split_blocks(&mut l, blocks);
            s.ns = t.elapsed().as_nanos() as f64;
            err(name, "split", r)?;
            s.units = blocks;
            verify_blocks(&mut l, blocks, true)?;
            s.tables = l.tables_in_use();
        }
        Row::Merge => {
            // Each 2 MiB block split as in `split` (untimed), then merged.
            let blocks = n / 512;
            let mut l = L::new(frames + blocks as usize);
            err(name, "map blocks", l.map(VA_BLOCKS, PA_BLOCKS, n, true))?;
            let block_tables = l.tables_in_use();
            err(name, "split", split_blocks(&mut l, blocks))?;
            verify_blocks(&mut l, blocks, true)?;
            let t = Instant::now();
            let r = merge_blocks(&mut l, blocks);
            s.ns = t.elapsed().as_nanos() as f64;
            err(name, "merge", r)?;
            s.units = blocks;
            verify_blocks(&mut l, blocks, false)?;
            s.tables = l.tables_in_use();
            if s.tables != block_tables {
                return Err(format!(
                    "{name}: {} table pages after merge, {block_tables} when mapped as blocks \
                     (a level-3 table left behind)",
                    s.tables
                ));
            }
        }
        Row::Translate | Row::TranslatePoint => {
            let mut l = L::new(frames);
            err(name, "map", l.map(VA, PA, n, false))?;
            let want = page_sum(PA, n * PAGE);
            if row == Row::Translate {
                warm_up::<L>(row)?;
            }
            let t = Instant::now();
            let got = if row == Row::Translate {
                l.translate_range(VA, n)
            } else {
                translate_point(&mut l, n)
            };
            s.ns = t.elapsed().as_nanos() as f64;
            if black_box(got) != want {
                return Err(format!(
                    "{name}: translation checksum {got:#x}, expected {want:#x}"
                ));
            }
        }
        Row::Unmap => {
            let mut l = L::new(frames);
            err(name, "map", l.map(VA, PA, n, false))?;
            warm_up::<L>(row)?;
            let t = Instant::now();
            let r = l.unmap(VA, n);
            s.ns = t.elapsed().as_nanos() as f64;
            s.freed = Some(err(name, "unmap", r)?);
            verify_unmapped(&mut l, sizes)?;
            s.tables = l.tables_in_use();
        }
        Row::S2Map4k | Row::S2ModifyRo | Row::S2Unmap | Row::S2Translate => {
            unreachable!("Row::work maps a stage-2 row to its stage-1 twin")
        }
        Row::Sparse => {
            let mut l = L::new(sparse.tables);
            let t = Instant::now();
            let r = sparse_ops(&mut l, sparse);
            s.ns = t.elapsed().as_nanos() as f64;
            err(name, "sparse", r)?;
            s.units = sparse.ops.len() as u64;
            for &va in sparse
                .live
                .iter()
                .step_by(sizes.verify_stride.max(1) as usize)
            {
                if l.lookup(va) != Some((sparse_pa(va), true)) {
                    return Err(format!(
                        "{name}: sparse page {va:#x} -> {:x?}",
                        l.lookup(va)
                    ));
                }
            }
            for &va in &sparse.gone {
                if l.lookup(va).is_some() {
                    return Err(format!("{name}: sparse page {va:#x} still mapped"));
                }
            }
            s.tables = l.tables_in_use();
        }
    }
    Ok(s)
}

/// The floor of `map-4k`: zero the table pages (root, L1, L2, one L3 per
/// 2 MiB) and write the table links and the leaf descriptors, nothing else
/// (no walk, no checks, no allocator). Returns one sample.
pub fn floor_sample(pages: u64) -> Sample {
    let l3s = (pages / 512) as usize;
    let mut frames: Vec<[u64; 512]> = vec![[1u64; 512]; l3s + 3];
    let leaf = hvmm::Pte::leaf::<hvmm::Arm64>(3, hvmm::Paddr(0), hvmm::Attrs::RW, false).0;
    let base = frames.as_ptr() as u64;
    let t = Instant::now();
    for f in frames.iter_mut() {
        *f = [0; 512];
    }
    frames[0][0] = (base + 4096) | 3;
    frames[1][1] = (base + 8192) | 3;
    for i in 0..l3s {
        frames[2][i] = (base + (3 + i as u64) * 4096) | 3;
        let pa0 = PA + (i as u64) * (2 << 20);
        for (j, e) in frames[3 + i].iter_mut().enumerate() {
            *e = leaf | (pa0 + j as u64 * PAGE);
        }
    }
    black_box(&mut frames);
    let ns = t.elapsed().as_nanos() as f64;
    assert_eq!(frames[3][1] & 0xffff_ffff_f000, PA + PAGE);
    Sample {
        ns,
        units: pages,
        freed: None,
        tables: l3s + 3,
    }
}
