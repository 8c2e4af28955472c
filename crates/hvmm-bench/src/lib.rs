//! # hvmm-bench — hvmm's engine side by side with its peers
//!
//! One run measures, on one machine, hvmm's update engine on the host back
//! end against `aarch64-paging` 0.12, `page_table_multiarch` 0.6 and a
//! re-implementation of the 2019 Xen algorithm ([`xen`]), all configured for
//! the same work ([`libs`]), row by row ([`rows`]), with a memory-bound floor;
//! and counts, exactly, on the machine model, what early boot costs hvmm and
//! the Xen-style baseline ([`early`]). [`report`] prints the tables and
//! writes `docs/BENCHMARKS.md`.
//!
//! The harness is its own: per row, every library runs its sample in turn
//! (interleaved, so drift hits all alike), after one warm-up round; set-up
//! (fresh, prefaulted table memory) is not timed; every sample's result is
//! checked. The median and the spread (interquartile range) are reported.
#![warn(missing_docs)]

pub mod early;
pub mod libs;
pub mod pool;
pub mod report;
pub mod rows;
pub mod secret;
pub mod xen;

use libs::{
    AarchPaging, AarchPagingLive, AarchPagingS2, AarchPagingS2Live, Hvmm, HvmmS2, Library, Ptm,
    Row, Xen2019,
};
use rows::{floor_sample, sample, Sample, Sizes, SparseOps};

/// Every row in table order, with its name and unit.
pub const ROWS: [(Row, &str, &str); 14] = [
    (Row::Map4k, "map-4k", "page"),
    (Row::MapBlocks, "map-blocks", "page"),
    (Row::MapSingle, "map-single", "page"),
    (Row::ModifyRo, "modify-ro", "page"),
    (Row::Split, "split", "op"),
    (Row::Merge, "merge", "op"),
    (Row::Translate, "translate", "page"),
    (Row::TranslatePoint, "translate-point", "page"),
    (Row::Unmap, "unmap", "page"),
    (Row::Sparse, "sparse", "op"),
    (Row::S2Map4k, "s2-map-4k", "page"),
    (Row::S2ModifyRo, "s2-modify-ro", "page"),
    (Row::S2Unmap, "s2-unmap", "page"),
    (Row::S2Translate, "s2-translate", "page"),
];

/// Library names in column order.
pub const LIBS: [&str; 4] = [Hvmm::NAME, AarchPaging::NAME, Ptm::NAME, Xen2019::NAME];
/// Index in [`RowResult::cells`] of the extra runner: aarch64-paging on a
/// live (marked active) table, for the rows where that changes its work.
/// It is not a column of the main table.
pub const LIVE: usize = 4;
/// Its name.
pub const LIVE_NAME: &str = AarchPagingLive::NAME;
/// How each library translates a range, in column order.
pub const TRANSLATE_HOW: [&str; 4] = [
    Hvmm::TRANSLATE_HOW,
    AarchPaging::TRANSLATE_HOW,
    Ptm::TRANSLATE_HOW,
    Xen2019::TRANSLATE_HOW,
];

/// Median and spread of one library on one row, in ns per unit.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Stats {
    /// Median.
    pub median: f64,
    /// Fastest sample.
    pub min: f64,
    /// Slowest sample.
    pub max: f64,
    /// First quartile.
    pub p25: f64,
    /// Third quartile.
    pub p75: f64,
    /// Samples.
    pub n: usize,
}

impl Stats {
    /// Statistics of samples already divided by their units.
    pub fn of(mut v: Vec<f64>) -> Option<Stats> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        let q = |f: f64| v[((n - 1) as f64 * f).round() as usize];
        Some(Stats {
            median,
            min: v[0],
            max: v[n - 1],
            p25: q(0.25),
            p75: q(0.75),
            n,
        })
    }
    /// Spread: the interquartile range as a percentage of the median.
    pub fn spread_pct(&self) -> f64 {
        if self.median > 0.0 {
            100.0 * (self.p75 - self.p25) / self.median
        } else {
            0.0
        }
    }
}

/// One library's result on one row.
#[derive(Clone, Debug, Default)]
pub struct CellResult {
    /// Timing, if it ran.
    pub stats: Option<Stats>,
    /// Why it cannot do this row.
    pub cannot: Option<&'static str>,
    /// The error that stopped it (a harness or library failure).
    pub error: Option<String>,
    /// Table pages freed (unmap), from the last sample.
    pub freed: Option<u64>,
    /// Table pages in use after the work, from the last sample.
    pub tables: usize,
    /// What the library does for this row, where that needs saying.
    pub how: Option<&'static str>,
}

/// One row of results.
#[derive(Clone, Debug)]
pub struct RowResult {
    /// The row.
    pub row: Row,
    /// Its name.
    pub name: &'static str,
    /// Its unit.
    pub unit: &'static str,
    /// One cell per library, in [`LIBS`] order, then the [`LIVE`] one.
    pub cells: Vec<CellResult>,
}

impl RowResult {
    /// hvmm's median.
    pub fn hvmm(&self) -> Option<f64> {
        self.cells[0].stats.map(|s| s.median)
    }
    /// The best of aarch64-paging and page_table_multiarch (name, median).
    pub fn best_peer(&self) -> Option<(&'static str, f64)> {
        (1..3)
            .filter_map(|i| self.cells[i].stats.map(|s| (LIBS[i], s.median)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }
    /// How many times faster hvmm is than the best peer.
    pub fn speedup(&self) -> Option<f64> {
        Some(self.best_peer()?.1 / self.hvmm()?)
    }
}

/// Harness settings.
#[derive(Copy, Clone, Debug)]
pub struct Config {
    /// Sizes of the work.
    pub sizes: Sizes,
    /// Warm-up rounds (not recorded).
    pub warmup: usize,
    /// Recorded rounds.
    pub reps: usize,
}

/// Everything one run measured.
#[derive(Clone, Debug)]
pub struct BenchResult {
    /// The settings.
    pub config: Config,
    /// The rows.
    pub rows: Vec<RowResult>,
    /// The floor of map-4k.
    pub floor: Stats,
    /// Early-boot counts.
    pub early: Result<early::EarlyReport, String>,
    /// Default boot per phase and whole-boot model counters.
    #[allow(clippy::type_complexity)]
    pub boot: Result<
        (
            Vec<early::PhaseRow>,
            Vec<(&'static str, hvmm_model::Counters)>,
        ),
        String,
    >,
}

type SampleFn = fn(Row, &Sizes, &SparseOps) -> Result<Sample, String>;
type CannotFn = fn(Row) -> Option<&'static str>;
type HowFn = fn(Row) -> Option<&'static str>;
type Runner = (SampleFn, CannotFn, HowFn);

const fn runner<L: Library>() -> Runner {
    (sample::<L>, L::cannot, L::how)
}

/// The runners of the stage-1 rows, in [`LIBS`] order, then [`LIVE`].
const RUNNERS: [Runner; 5] = [
    runner::<Hvmm>(),
    runner::<AarchPaging>(),
    runner::<Ptm>(),
    runner::<Xen2019>(),
    runner::<AarchPagingLive>(),
];

/// The runners of the stage-2 rows: each library's stage-2 regime (the
/// page_table_multiarch and Xen-2019 cells only say why they have none).
const S2_RUNNERS: [Runner; 5] = [
    runner::<HvmmS2>(),
    runner::<AarchPagingS2>(),
    runner::<Ptm>(),
    runner::<Xen2019>(),
    runner::<AarchPagingS2Live>(),
];

/// The runners of `row`.
pub fn runners(row: Row) -> &'static [Runner; 5] {
    if row.stage2() {
        &S2_RUNNERS
    } else {
        &RUNNERS
    }
}

/// Runs one row for every library, interleaved, and reports progress to `log`.
pub fn run_row(row: Row, cfg: &Config, sparse: &SparseOps, log: &mut dyn FnMut(&str)) -> RowResult {
    let (_, name, unit) = *ROWS.iter().find(|r| r.0 == row).expect("row");
    let runners = runners(row);
    let mut cells: Vec<CellResult> = runners
        .iter()
        .map(|(_, cannot, how)| CellResult {
            cannot: cannot(row),
            how: how(row),
            ..Default::default()
        })
        .collect();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); runners.len()];
    for round in 0..cfg.warmup + cfg.reps {
        for (i, (run, _, _)) in runners.iter().enumerate() {
            if cells[i].cannot.is_some() || cells[i].error.is_some() {
                continue;
            }
            match run(row, &cfg.sizes, sparse) {
                Ok(s) => {
                    if round >= cfg.warmup {
                        samples[i].push(s.ns / s.units.max(1) as f64);
                    }
                    cells[i].freed = s.freed;
                    cells[i].tables = s.tables;
                }
                Err(e) => cells[i].error = Some(e),
            }
        }
    }
    for (c, s) in cells.iter_mut().zip(samples) {
        c.stats = Stats::of(s);
    }
    log(&format!("  {name:<16} done"));
    RowResult {
        row,
        name,
        unit,
        cells,
    }
}

/// Runs everything.
pub fn run_all(cfg: &Config, log: &mut dyn FnMut(&str)) -> BenchResult {
    let sparse = SparseOps::generate(cfg.sizes.sparse_ops);
    let rows = ROWS
        .iter()
        .map(|&(row, _, _)| run_row(row, cfg, &sparse, log))
        .collect();
    let floor = Stats::of(
        (0..cfg.warmup + cfg.reps)
            .map(|_| floor_sample(cfg.sizes.pages))
            .skip(cfg.warmup)
            .map(|s| s.ns / s.units as f64)
            .collect(),
    )
    .expect("floor samples");
    log("  limit            done");
    let early = early::early_counts(cfg.sizes.pages);
    log("  early-boot counts done");
    let boot = early::boot_phases();
    log("  default boots    done");
    BenchResult {
        config: *cfg,
        rows,
        floor,
        early,
        boot,
    }
}
