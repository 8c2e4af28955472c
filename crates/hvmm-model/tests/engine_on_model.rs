//! The update engine on the machine model, driven by random operation
//! sequences and checked after every step against a reference model, the
//! model's MMU and TLBs, its break-before-make checker and the frame pool.
//!
//! Case count: 256 sequences of 5-40 operations per format by default
//! (about 5,500 operations per format, 11,000 in all; about 14 s in a debug
//! build on 2 cores); `PROPTEST_CASES=N` overrides it, `PROPTEST_RNG_SEED=S` changes
//! the (otherwise fixed) seed. Each test prints the number of operations it
//! ran.

use hvmm::{Arm32, Arm64, Attrs, MapFlags, Op, Paddr, Perm};
use hvmm_testkit::engine::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Default number of cases per format (see the module docs).
const CASES: u32 = 256;

fn config() -> Config {
    Config {
        cases: CASES,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x6876_6d6d),
        max_shrink_iters: 4096,
        ..Config::default()
    }
}

/// One random operation, as raw numbers interpreted against the state when
/// it runs (so that a sequence can aim at earlier ranges).
#[derive(Clone, Debug)]
struct RawOp {
    kind: u8,
    size_class: u8,
    size: u64,
    va_mode: u8,
    va: u64,
    pa_mode: u8,
    pa: u64,
    attr: u8,
    blocks: bool,
    contiguous: bool,
}

fn raw_op() -> impl Strategy<Value = RawOp> {
    (
        (0u8..100, 0u8..100, any::<u64>()),
        (0u8..100, any::<u64>(), 0u8..100, any::<u64>()),
        (0u8..100, any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |((kind, size_class, size), (va_mode, va, pa_mode, pa), (attr, blocks, contiguous))| {
                RawOp {
                    kind,
                    size_class,
                    size,
                    va_mode,
                    va,
                    pa_mode,
                    pa,
                    attr,
                    blocks,
                    contiguous,
                }
            },
        )
}

/// Beyond this many pages an insert uses blocks (else it would write
/// hundreds of thousands of descriptors), and a populate is cut down.
const MAX_PAGE_LEAVES: u64 = 4096;

fn resolve<F: ModelFormat>(raw: &RawOp, history: &[(u64, u64)], r: &RefMap) -> Step {
    let (a0, a1) = F::ARENA;
    let s = raw.size;
    let mut pages = match raw.size_class {
        // Single pages are Xen's usual request.
        0..=9 => 1,
        10..=39 => 1 + s % 32,
        40..=64 => 1 + s % 1024,
        65..=79 => 16 * (1 + s % 64),
        80..=93 => 512 * (1 + s % 24) + if s >> 32 & 1 == 1 { (s >> 40) % 16 } else { 0 },
        _ => 262_144 * (1 + s % 2) + 512 * ((s >> 8) % 4),
    };
    let kind = raw.kind;
    let is_insert = kind < 40;
    let is_populate = kind >= 90;
    let mut flags = MapFlags {
        blocks: raw.blocks,
        contiguous: raw.contiguous,
        // Some updates merge uniform tables back into blocks.
        merge: raw.blocks && raw.size_class.is_multiple_of(3),
        ..MapFlags::PAGES
    };
    if is_populate {
        pages = pages.min(MAX_PAGE_LEAVES);
    }
    if is_insert && pages > MAX_PAGE_LEAVES {
        flags.blocks = true;
    }
    pages = pages.min((a1 - a0) / PAGE);
    let len = pages * PAGE;
    // VA: near an earlier range (overlaps), or aligned at random.
    let v = raw.va;
    let mut va = if raw.va_mode < 50 && !history.is_empty() {
        let (hva, hpages) = history[(v % history.len() as u64) as usize];
        let off = ((v >> 16) % 64) as i64 - 32;
        match (v >> 8) % 4 {
            0 => hva,
            1 => hva.wrapping_add_signed(off * PAGE as i64),
            2 => (hva + hpages * PAGE).wrapping_add_signed(off.min(0) * PAGE as i64),
            _ => hva.wrapping_add_signed(off * 16 * PAGE as i64),
        }
    } else {
        let align = [PAGE, 16 * PAGE, MIB2, 16 * MIB2, GIB][(raw.va_mode % 5) as usize];
        a0 + ((v % (a1 - a0 - len + 1)) & !(align - 1))
    };
    va = va.clamp(a0, a1 - len);
    // A big insert starts on a 2 MiB boundary so that blocks are used.
    if is_insert && pages > MAX_PAGE_LEAVES {
        va = (va & !(MIB2 - 1)).max(a0);
    }
    let attrs = attrs_of(raw.attr);
    let op = match kind {
        0..=39 => {
            let p = raw.pa;
            let pa = match raw.pa_mode {
                // Same offset in a 1 GiB frame as the VA: blocks and runs fit.
                0..=59 => ((p % 64) << 30) + (va & (GIB - 1)),
                60..=79 => {
                    let align = [16 * PAGE, MIB2, GIB][((p >> 40) % 3) as usize];
                    (p % (1 << 36)) & !(align - 1)
                }
                _ => (p % (1 << 36)) & !(PAGE - 1),
            };
            // A big insert maps 2 MiB-aligned memory (so blocks are used).
            let pa = if pages > MAX_PAGE_LEAVES {
                pa & !(MIB2 - 1)
            } else {
                pa
            };
            Op::Insert {
                pa: Paddr(pa),
                attrs,
            }
        }
        40..=59 => {
            // Mostly keep the memory type of what is there (else the engine
            // refuses the change of AttrIndx).
            let attrs = match r.get(va) {
                Some((_, cur)) if raw.pa_mode < 80 => {
                    let perm = [Perm::Ro, Perm::Rx, Perm::Rw][usize::from(raw.attr % 3)];
                    cur.with_perm(perm)
                        .unwrap_or(cur.with_perm(Perm::Ro).unwrap())
                }
                _ => attrs,
            };
            Op::Modify { attrs }
        }
        // A collapse of an earlier range: the attributes already there,
        // merges allowed (uniform tables inside it become blocks).
        85..=89 if !history.is_empty() => {
            let (hva, hpages) = history[(raw.va % history.len() as u64) as usize];
            va = hva;
            pages = hpages;
            flags = MapFlags::BLOCKS_MERGE;
            match r.get(va) {
                Some((_, cur)) => Op::Modify { attrs: cur },
                None => Op::Remove,
            }
        }
        60..=89 => Op::Remove,
        _ => Op::Populate,
    };
    Step {
        va,
        pages,
        op,
        flags,
    }
}

/// Live changes the sequences made: splits, merges, contiguous breaks; and
/// the tables whose counts were checked against their bytes.
#[derive(Default)]
struct Shapes {
    splits: AtomicU64,
    merges: AtomicU64,
    breaks: AtomicU64,
    counted_tables: AtomicU64,
    counted_sequences: AtomicU64,
}

/// Runs one sequence on a fresh rig (with table counts if `counted`),
/// checking after every step.
fn run_sequence<F: ModelFormat>(ops: &[RawOp], pool_frames: u64, counted: bool, shapes: &Shapes) {
    let mut rig = Rig::<F>::with_counts(pool_frames, counted);
    shapes
        .counted_sequences
        .fetch_add(u64::from(counted), Ordering::Relaxed);
    let mut r = RefMap::default();
    let mut history: Vec<(u64, u64)> = Vec::new();
    for raw in ops {
        let st = resolve::<F>(raw, &history, &r);
        history.push((st.va, st.pages));
        let end = st.va + st.pages * PAGE;
        let samp = samples::<F>(st.va, st.pages);

        // Start from empty TLBs (so the stale check stays cheap), then let
        // every CPU cache what the update is about to change.
        rig.flush_tlbs();
        rig.prefetch(&samp);
        let snap = rig.snapshot();
        let free_before = rig.free();
        let ranges_before: Vec<_> = rig.alloc.ranges().collect();
        let c0 = rig.m.counters();

        let res = rig.update(st.va, st.pages, st.op, st.flags);
        let dc = {
            let c1 = rig.m.counters();
            let mut d = c1;
            d.tlbi_va -= c0.tlbi_va;
            d.tlbi_all -= c0.tlbi_all;
            d.tlbi_va_local -= c0.tlbi_va_local;
            d.tlbi_all_local -= c0.tlbi_all_local;
            d
        };
        match res {
            Ok(rep) => {
                shapes.splits.fetch_add(rep.splits, Ordering::Relaxed);
                shapes.merges.fetch_add(rep.merges, Ordering::Relaxed);
                shapes
                    .breaks
                    .fetch_add(rep.contiguous_breaks, Ordering::Relaxed);
                assert_eq!(
                    free_before + rep.tables_freed - rep.tables_created,
                    rig.free(),
                    "{st:x?}: report vs pool"
                );
                assert_eq!(
                    dc.tlbi_va + dc.tlbi_all,
                    rep.tlb_invalidations,
                    "{st:x?}: report vs TLBIs issued"
                );
                assert_eq!(dc.tlbi_va_local + dc.tlbi_all_local, 0);
                match st.op {
                    Op::Insert { pa, attrs } => {
                        assert!(!r.any_mapped(st.va, end), "{st:x?}: replaced a mapping");
                        assert_eq!(tlbi(&dc), 0, "{st:x?}: a pure insert invalidated");
                        assert!(rep.leaves >= 1 && rep.leaves <= st.pages);
                        r.insert(st.va, end, pa.0, attrs);
                    }
                    Op::Modify { attrs } => {
                        assert!(r.all_mapped(st.va, end), "{st:x?}: modified a hole");
                        r.set_perm(st.va, end, attrs.perm());
                    }
                    Op::Remove => {
                        r.remove(st.va, end);
                        check_none_emptied(&rig.m, &rig.tables(), st.va, end, &format!("{st:x?}"));
                    }
                    Op::Populate => {
                        assert_eq!((rep.leaves, tlbi(&dc)), (0, 0), "{st:x?}");
                    }
                }
            }
            Err(e) => {
                let changed = rig.m.changed_frames(&snap);
                assert!(
                    changed.is_empty(),
                    "{st:x?} failed ({e}) but changed {changed:x?}"
                );
                assert_eq!(rig.free(), free_before, "{st:x?} failed ({e}) and leaked");
                assert_eq!(rig.alloc.ranges().collect::<Vec<_>>(), ranges_before);
                justify(&rig, &r, &st, free_before, &e);
            }
        }
        check_tlbs(&rig, &format!("after {st:x?}"));
        check_translations(&mut rig, &r, &samp);
        check_tables(&rig, &r);
        let checked = check_counts(
            &rig.m,
            &mut rig.alloc,
            F::OA,
            &[F::TABLES],
            F::ROOT_LEVEL,
            (F::RAM_BASE, F::RAM_BASE + RAM_SIZE),
            &format!("after {st:x?}"),
        );
        shapes.counted_tables.fetch_add(checked, Ordering::Relaxed);
    }
    // The engine's own range view agrees too.
    let (a0, a1) = F::ARENA;
    assert_eq!(rig.engine_runs(a0, (a1 - a0) / PAGE), r.runs());
    let left = remove_everything(&mut rig, &mut r);
    for l in &left {
        // What could not be removed is contiguous and still translates.
        assert!(l.contiguous());
        assert_eq!(rig.m.walk(0, hvmm::Vaddr(l.va)).unwrap().pa, Paddr(l.pa));
    }
}

fn ops_strategy() -> impl Strategy<Value = (Vec<RawOp>, u64)> {
    (
        prop::collection::vec(raw_op(), 5..=40),
        prop_oneof![3 => Just(u64::MAX / 2), 1 => 4u64..64],
    )
}

/// Runs the configured number of random sequences on format `F`; returns
/// the number of operations run. The sequences split blocks, break
/// contiguous groups and merge tables, every kind many times.
fn random_sequences<F: ModelFormat>() -> u64 {
    let ops = AtomicU64::new(0);
    let shapes = Shapes::default();
    proptest!(config(), |((seq, pool) in ops_strategy())| {
        // Half the sequences keep table counts (the engine's counted
        // paths), half not (it reads the tables).
        let counted = seq.len() % 2 == 1;
        run_sequence::<F>(&seq, pool, counted, &shapes);
        ops.fetch_add(seq.len() as u64, Ordering::Relaxed);
    });
    let (s, m, b) = (
        shapes.splits.into_inner(),
        shapes.merges.into_inner(),
        shapes.breaks.into_inner(),
    );
    let (ct, cs) = (
        shapes.counted_tables.into_inner(),
        shapes.counted_sequences.into_inner(),
    );
    eprintln!(
        "{}: {s} splits, {m} merges, {b} contiguous breaks; {cs} sequences with table counts, \
         {ct} table counts checked against the tables",
        F::NAME
    );
    assert!(
        s >= 50 && m >= 5 && b >= 20,
        "too few live changes: {s} / {m} / {b}"
    );
    assert!(cs >= 64 && ct >= 5000, "too few counted runs: {cs} / {ct}");
    ops.into_inner()
}

#[test]
fn random_updates_match_the_reference_on_arm64() {
    let n = random_sequences::<Arm64>();
    eprintln!("arm64: {n} operations checked");
}

#[test]
fn random_updates_match_the_reference_on_arm32() {
    let n = random_sequences::<Arm32>();
    eprintln!("arm32: {n} operations checked");
}

// ---------------------------------------------------------------------------
// Populated (empty) tables and Remove
// ---------------------------------------------------------------------------

/// Populate makes tables and maps nothing; a Remove of any part of the range
/// frees the empty level-3 table it walks into (and parents it empties), and
/// a Remove of the whole range gives every frame back.
fn remove_frees_populated_tables<F: ModelFormat>() {
    let mut rig = Rig::<F>::full();
    let x = F::ARENA.0 + 2 * GIB;
    let c0 = rig.m.counters();
    let rep = rig.update(x, 1024, Op::Populate, MapFlags::BLOCKS).unwrap();
    // Below the root: arm64 L1, L2 and two L3; arm32 L2 and two L3.
    let made = u64::from(3 - F::ROOT_LEVEL) + 1;
    assert_eq!((rep.tables_created, rep.leaves), (made, 0));
    assert_eq!(tlbi(&rig.m.counters()) - tlbi(&c0), 0);
    check_no_leak(&rig);
    rig.prefetch(&samples::<F>(x, 1024));
    let rep = rig
        .update(x + 5 * PAGE, 1, Op::Remove, MapFlags::PAGES)
        .unwrap();
    assert_eq!((rep.leaves, rep.tables_freed), (0, 1));
    assert_eq!(rig.entry_at(x, 2).map(|d| d & 1), Some(0));
    assert_eq!(rig.entry_at(x + MIB2, 2).map(|d| d & 3), Some(3));
    check_tlbs(&rig, "remove one page");
    let rep = rig.update(x, 1024, Op::Remove, MapFlags::PAGES).unwrap();
    assert_eq!(rep.tables_freed, made - 1);
    assert_eq!(rig.free(), rig.initial_free);
    check_no_leak(&rig);
    check_tlbs(&rig, "remove all");
}

#[test]
fn remove_frees_tables_left_empty_by_populate_on_arm64() {
    remove_frees_populated_tables::<Arm64>();
}

#[test]
fn remove_frees_tables_left_empty_by_populate_on_arm32() {
    remove_frees_populated_tables::<Arm32>();
}

// ---------------------------------------------------------------------------
// The reference model itself, against the obvious page-by-page map.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(Config { cases: 256, failure_persistence: None, ..Config::default() })]

    #[test]
    fn reference_runs_agree_with_a_page_map(
        ops in prop::collection::vec((0u8..3, 0u64..64, 1u64..24, 0u64..1000, 0u8..5), 1..40)
    ) {
        let mut runs = RefMap::default();
        let mut pages: BTreeMap<u64, (u64, Attrs)> = BTreeMap::new();
        for (kind, start, n, pa, a) in ops {
            let (s, e) = (start * PAGE, (start + n) * PAGE);
            match kind {
                0 => {
                    runs.insert(s, e, pa * PAGE, attrs_of(a));
                    for i in 0..n {
                        pages.insert(s + i * PAGE, (pa * PAGE + i * PAGE, attrs_of(a)));
                    }
                }
                1 => {
                    runs.remove(s, e);
                    for i in 0..n {
                        pages.remove(&(s + i * PAGE));
                    }
                }
                _ => {
                    let perm = [Perm::Ro, Perm::Rw][usize::from(a % 2)];
                    runs.set_perm(s, e, perm);
                    for i in 0..n {
                        if let Some(v) = pages.get_mut(&(s + i * PAGE)) {
                            v.1 = v.1.with_perm(perm).unwrap();
                        }
                    }
                }
            }
            for p in 0..100 {
                prop_assert_eq!(runs.get(p * PAGE), pages.get(&(p * PAGE)).copied());
            }
            for (a, b) in [(s, e), (0, PAGE), (s, s + PAGE)] {
                let any = (a..b).step_by(PAGE as usize).any(|p| pages.contains_key(&p));
                let all = (a..b).step_by(PAGE as usize).all(|p| pages.contains_key(&p));
                prop_assert_eq!(runs.any_mapped(a, b), any);
                prop_assert_eq!(runs.all_mapped(a, b), all);
            }
        }
    }
}
