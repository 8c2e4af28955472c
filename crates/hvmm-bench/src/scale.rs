//! How the cost grows with the size of the work: `map-4k` and `translate`
//! over 1 MiB, 1 GiB and 64 GiB of 4 KiB pages, `sparse` over 1 GiB,
//! 512 GiB and 256 TiB of address space. Every library in the same run,
//! interleaved within each round, as the main table; the 1 GiB (512 GiB for
//! `sparse`) points are the main table's own results.
//!
//! The big points scale their rounds down ([`BIG_REPS`]): 64 GiB of pages
//! is 16 M pages and 128 MiB of tables per library, and `sparse` over the
//! whole 48-bit space makes each never-freeing peer allocate about two
//! tables per map.

use crate::libs::Row;
use crate::rows::{Sizes, SparseOps};
use crate::{run_row, Config, RowResult};
use std::fmt::Write;

/// One point: a row at one size.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ScalePoint {
    /// `Row::Map4k`, `Row::Translate` or `Row::Sparse`.
    pub row: Row,
    /// The size, for the report.
    pub label: &'static str,
    /// Pages mapped (`map-4k`, `translate`), or pages of VA space
    /// (`sparse`).
    pub pages: u64,
    /// The main table measures this point (its result is shown).
    pub main: bool,
}

const MIB: u64 = 256;
const GIB: u64 = 262_144;

/// Every point, in report order.
pub const POINTS: [ScalePoint; 9] = [
    ScalePoint {
        row: Row::Map4k,
        label: "1 MiB",
        pages: MIB,
        main: false,
    },
    ScalePoint {
        row: Row::Map4k,
        label: "1 GiB",
        pages: GIB,
        main: true,
    },
    ScalePoint {
        row: Row::Map4k,
        label: "64 GiB",
        pages: 64 * GIB,
        main: false,
    },
    ScalePoint {
        row: Row::Translate,
        label: "1 MiB",
        pages: MIB,
        main: false,
    },
    ScalePoint {
        row: Row::Translate,
        label: "1 GiB",
        pages: GIB,
        main: true,
    },
    ScalePoint {
        row: Row::Translate,
        label: "64 GiB",
        pages: 64 * GIB,
        main: false,
    },
    ScalePoint {
        row: Row::Sparse,
        label: "1 GiB",
        pages: GIB,
        main: false,
    },
    ScalePoint {
        row: Row::Sparse,
        label: "512 GiB",
        pages: crate::rows::SPARSE_SPACE_PAGES,
        main: true,
    },
    ScalePoint {
        row: Row::Sparse,
        label: "256 TiB",
        pages: 1 << 36,
        main: false,
    },
];

/// Recorded rounds of the big points (64 GiB, 256 TiB), at most.
pub const BIG_REPS: usize = 5;

/// A point and its result.
#[derive(Clone, Debug)]
pub struct ScaleRow {
    /// The point.
    pub point: ScalePoint,
    /// Recorded rounds.
    pub rounds: usize,
    /// Every library's result.
    pub result: RowResult,
}

impl ScalePoint {
    /// Whether the point is one of the big ones (fewer rounds).
    pub const fn big(&self) -> bool {
        match self.row {
            Row::Sparse => self.pages > crate::rows::SPARSE_SPACE_PAGES,
            _ => self.pages > GIB,
        }
    }

    /// The sizes of the point's samples.
    pub fn sizes(&self, cfg: &Config) -> Sizes {
        Sizes {
            pages: if self.row == Row::Sparse {
                cfg.sizes.pages
            } else {
                self.pages
            },
            sparse_ops: cfg.sizes.sparse_ops,
            // About 4 000 pages checked after a 64 GiB sample.
            verify_stride: if self.pages > GIB {
                4099
            } else {
                cfg.sizes.verify_stride
            },
        }
    }
}

/// Runs every point the main table does not measure; the main ones are
/// taken from `main` (the main table's rows).
pub fn run_scaling(cfg: &Config, main: &[RowResult], log: &mut dyn FnMut(&str)) -> Vec<ScaleRow> {
    POINTS
        .iter()
        .filter_map(|p| {
            if p.main {
                let result = main.iter().find(|r| r.row == p.row)?.clone();
                return Some(ScaleRow {
                    point: *p,
                    rounds: cfg.reps,
                    result,
                });
            }
            let reps = if p.big() {
                cfg.reps.min(BIG_REPS)
            } else {
                cfg.reps
            };
            let c = Config {
                sizes: p.sizes(cfg),
                warmup: cfg.warmup,
                reps,
            };
            let sparse = if p.row == Row::Sparse {
                SparseOps::generate_in(cfg.sizes.sparse_ops, p.pages)
            } else {
                SparseOps::generate(0)
            };
            let result = run_row(p.row, &c, &sparse, log);
            log(&format!("  {:<16} {} done", result.name, p.label));
            Some(ScaleRow {
                point: *p,
                rounds: reps,
                result,
            })
        })
        .collect()
}

/// The section of the report (`sparse_ops`: the operations of `sparse`).
pub fn markdown(rows: &[ScaleRow], sparse_ops: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## How the cost grows\n");
    let _ = writeln!(
        s,
        "The same rows at other sizes, every library in the same run, interleaved within each \
         round: `map-4k` and `translate` over 1 MiB, 1 GiB (the main table's figures) and \
         64 GiB of 4 KiB pages from VA 1 GiB; `sparse` (the same {} random one-page maps and \
         unmaps) over 1 GiB, 512 GiB (the main table's) and 256 TiB of address space from VA 0. \
         The 64 GiB and 256 TiB points run {} recorded rounds at most (64 GiB of pages is \
         16 M descriptors and 128 MiB of tables per library; over 256 TiB a library that never \
         frees a table allocates about two per map). A 1 MiB figure is one call of a few hundred \
         nanoseconds timed alone.\n",
        sparse_ops, BIG_REPS
    );
    let _ = writeln!(
        s,
        "| row | size | unit | {} | {} | {} | {} | hvmm vs best peer | rounds |",
        crate::LIBS[0],
        crate::LIBS[1],
        crate::LIBS[2],
        crate::LIBS[3]
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let cell = |i: usize| {
            let c = &r.result.cells[i];
            match (c.stats, c.cannot, &c.error) {
                (Some(st), _, _) => format!("{} ±{:.0}%", fmt(st.median), st.spread_pct() / 2.0),
                (_, Some(_), _) => "—".into(),
                (_, _, Some(e)) => format!("FAILED: {e}"),
                _ => "—".into(),
            }
        };
        let speed = match (r.result.speedup(), r.result.best_peer()) {
            (Some(x), Some((peer, _))) => format!("{x:.2}× vs {peer}"),
            _ => "no peer".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | ns/{} | {} | {} | {} | {} | {speed} | {} |",
            r.result.name,
            r.point.label,
            r.result.unit,
            cell(0),
            cell(1),
            cell(2),
            cell(3),
            r.rounds
        );
    }
    // Growth from the smallest to the largest size, per library.
    let _ = writeln!(s);
    for row in [Row::Map4k, Row::Translate, Row::Sparse] {
        let pts: Vec<&ScaleRow> = rows.iter().filter(|r| r.point.row == row).collect();
        let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
            continue;
        };
        let mut line = format!(
            "- **{}**, {} → {} (ns/{} at the largest size over ns/{} at the smallest):",
            first.result.name,
            first.point.label,
            last.point.label,
            first.result.unit,
            first.result.unit
        );
        for (i, lib) in crate::LIBS.iter().enumerate() {
            if let (Some(a), Some(b)) = (
                first.result.cells[i].stats.map(|x| x.median),
                last.result.cells[i].stats.map(|x| x.median),
            ) {
                let _ = write!(line, " {lib} ×{:.2};", b / a);
            }
        }
        line.pop();
        line.push('.');
        let _ = writeln!(s, "{line}");
    }
    for r in rows {
        if r.result.speedup().is_some_and(|x| x < 1.0) {
            let _ = writeln!(
                s,
                "- **Behind: {} over {}.** {}",
                r.result.name,
                r.point.label,
                behind(r.point)
            );
        }
    }
    let _ = writeln!(s);
    s
}

/// Why hvmm is behind at a point (figures of the run that introduced the
/// text: tables made and freed counted from hvmm's update reports).
fn behind(p: ScalePoint) -> &'static str {
    match p.row {
        Row::Sparse if p.pages <= GIB => {
            "Over 1 GiB the same operations fall into 512 level-3 tables, holding about 100 \
             live pages between them: almost every unmap empties its table and almost every \
             map finds none. hvmm frees a table its update empties (it must: freed emptied \
             tables are part of what its updates guarantee) and makes one for the next map \
             there: 0.42 tables made and 0.42 freed per operation (0.92 over 512 GiB, 1.42 over \
             256 TiB, where the peers pay for new tables too). A table it freed comes back all \
             zero and is not zeroed again; what is left per operation is a walk from the root, \
             the reservation and the unlink with its invalidation. The peers never free a \
             table: after the first few hundred operations all 512 exist, and a map or an \
             unmap writes one descriptor."
        }
        _ => "see the notes.",
    }
}

/// Figures as in the main table, with more digits below 0.1.
fn fmt(x: f64) -> String {
    crate::report::fmt_ns(x)
}
