//! `hvmm-bench`: hvmm's engine against aarch64-paging, page_table_multiarch
//! and the Xen-2019 baseline, in one run; early-boot counts on the model.
//!
//! Options: `--quick` (fewer rounds, for a CI smoke run), `--write PATH`
//! (write the Markdown report, e.g. `docs/BENCHMARKS.md`), `--only ROW` (one
//! row, its median, minimum and quartiles only: for profiling; `secret`,
//! `scaling` or `boot`: that section alone).

use hvmm_bench::report::{markdown, targets, MachineInfo};
use hvmm_bench::rows::Sizes;
use hvmm_bench::{run_all, Config};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut quick = false;
    let mut write = None;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--write" => match args.next() {
                Some(p) => write = Some(p),
                None => {
                    eprintln!("--write needs a path");
                    return ExitCode::from(2);
                }
            },
            "--only" => only = args.next(),
            "-h" | "--help" => {
                println!(
                    "usage: hvmm-bench [--quick] [--write docs/BENCHMARKS.md] [--only ROW|secret|scaling|boot]"
                );
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown option {other} (try --help)");
                return ExitCode::from(2);
            }
        }
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run with --release for meaningful numbers");
    }
    let cfg = Config {
        sizes: Sizes::FULL,
        warmup: 1,
        reps: if quick { 3 } else { 15 },
    };
    // The secret-free mode's section alone (hvmm_bench::secret).
    if only.as_deref() == Some("secret") {
        let r = hvmm_bench::secret::run_secret(cfg.reps.min(5));
        println!("{}", hvmm_bench::secret::markdown(&r));
        return if r.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    // The default boot's exact counts alone (no timing).
    if only.as_deref() == Some("boot") {
        let boot = hvmm_bench::early::boot_phases();
        print!("{}", hvmm_bench::report::boot_section(&boot));
        return if boot.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    // The section on how the cost grows alone (hvmm_bench::scale).
    if only.as_deref() == Some("scaling") {
        let sparse = hvmm_bench::rows::SparseOps::generate(cfg.sizes.sparse_ops);
        let main: Vec<_> = [
            hvmm_bench::libs::Row::Map4k,
            hvmm_bench::libs::Row::Translate,
            hvmm_bench::libs::Row::Sparse,
        ]
        .into_iter()
        .map(|r| hvmm_bench::run_row(r, &cfg, &sparse, &mut |m| eprintln!("{m}")))
        .collect();
        let rows = hvmm_bench::scale::run_scaling(&cfg, &main, &mut |m| eprintln!("{m}"));
        println!(
            "{}",
            hvmm_bench::scale::markdown(&rows, cfg.sizes.sparse_ops)
        );
        return ExitCode::SUCCESS;
    }
    if let Some(row) = only {
        let Some(&(r, _, _)) = hvmm_bench::ROWS.iter().find(|x| x.1 == row) else {
            eprintln!("no row {row}");
            return ExitCode::from(2);
        };
        let sparse = hvmm_bench::rows::SparseOps::generate(cfg.sizes.sparse_ops);
        let res = hvmm_bench::run_row(r, &cfg, &sparse, &mut |m| eprintln!("{m}"));
        let names = hvmm_bench::LIBS.iter().chain([&hvmm_bench::LIVE_NAME]);
        for (lib, c) in names.zip(&res.cells) {
            match (c.stats, c.cannot, &c.error) {
                (Some(s), _, _) => println!(
                    "{row:<16} {lib:<22} median {:.5} min {:.5} p25 {:.5} p75 {:.5} ns/unit",
                    s.median, s.min, s.p25, s.p75
                ),
                (None, Some(why), _) => println!("{row:<16} {lib:<22} cannot: {why}"),
                (None, None, e) => println!("{row:<16} {lib:<22} failed: {e:?}"),
            }
        }
        return ExitCode::SUCCESS;
    }
    let machine = MachineInfo::detect();
    eprintln!(
        "hvmm-bench: {} rounds per row on {} ({} CPUs)",
        cfg.reps, machine.cpu, machine.cores
    );
    let result = run_all(&cfg, &mut |m| eprintln!("{m}"));
    let md = markdown(&result, &machine);
    let secret = hvmm_bench::secret::run_secret(cfg.reps.min(5));
    let md = hvmm_bench::secret::insert_section(md, &secret);
    println!("{md}");
    let failed = result
        .rows
        .iter()
        .flat_map(|r| &r.cells)
        .any(|c| c.error.is_some())
        || result.early.is_err()
        || result.boot.is_err()
        || secret.is_err();
    let missed = targets(&result).iter().filter(|t| !t.met).count();
    if missed > 0 {
        eprintln!("hvmm-bench: {missed} target(s) missed (see \"Targets\")");
    }
    if let Some(path) = write {
        if let Err(e) = std::fs::write(&path, &md) {
            eprintln!("writing {path}: {e}");
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {path}");
    }
    if failed {
        eprintln!("hvmm-bench: a library failed a row or a check (see FAILED)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
