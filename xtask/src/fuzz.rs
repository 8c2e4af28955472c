//! `cargo xtask fuzz --seconds N`: every cargo-fuzz target in `fuzz/` for N
//! seconds each, on nightly (installed, with cargo-fuzz, when missing), then
//! one line per target with its executions and findings.
//!
//! Each target starts from its checked-in corpus (`fuzz/corpus/<target>`,
//! read only) and a working corpus under `target/fuzz/corpus/<target>` that
//! keeps what earlier runs found; findings (crashes, timeouts, out-of-memory
//! inputs) are written under `target/fuzz/artifacts/<target>/`. Nothing
//! tracked is written to (cargo-fuzz makes empty `fuzz/artifacts/<target>`
//! directories, which git ignores): a finding worth keeping is reduced and
//! checked in by hand (see "Findings" in `docs/BAD_INPUTS.md`).

use crate::root;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Longest one input may run (seconds) before libFuzzer calls it a timeout
/// (inputs run in milliseconds; the engine's biggest in about a second).
const INPUT_TIMEOUT: u64 = 30;

/// What one target's run gave.
#[derive(Debug)]
pub struct TargetRun {
    /// The target's name.
    pub target: String,
    /// Inputs executed.
    pub execs: u64,
    /// Inputs libFuzzer wrote as findings (crash-, timeout-, oom-, leak-...).
    pub findings: Vec<PathBuf>,
    /// libFuzzer's exit status was a failure.
    pub failed: bool,
}

/// The targets `fuzz/Cargo.toml` declares (its `[[bin]]` names).
pub fn targets(manifest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
            continue;
        }
        if in_bin {
            if let Some(v) = line.strip_prefix("name") {
                let v = v.trim_start().trim_start_matches('=').trim();
                out.push(v.trim_matches('"').to_string());
            }
        }
    }
    out
}

/// Executions from libFuzzer's output: the final statistics line
/// (`stat::number_of_executed_units: N`), or else the largest `#N` status
/// line (a run stopped by a crash may not print its statistics).
pub fn executions(log: &str) -> u64 {
    let stat = log.lines().find_map(|l| {
        l.trim()
            .strip_prefix("stat::number_of_executed_units:")
            .and_then(|v| v.trim().parse().ok())
    });
    stat.unwrap_or_else(|| {
        log.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix('#')?;
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .max()
            .unwrap_or(0)
    })
}

fn ensure_nightly() -> Result<()> {
    let list = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("running rustup")?;
    if !String::from_utf8_lossy(&list.stdout)
        .lines()
        .any(|l| l.starts_with("nightly"))
    {
        eprintln!("xtask fuzz: installing the nightly toolchain");
        let ok = Command::new("rustup")
            .args(["toolchain", "install", "nightly", "--profile", "minimal"])
            .status()?
            .success();
        if !ok {
            bail!("rustup could not install the nightly toolchain");
        }
    }
    Ok(())
}

/// `cargo` on the nightly toolchain, through rustup, without what the
/// outer `cargo xtask` put in the environment (`CARGO` names the stable
/// cargo, and cargo-fuzz would run that).
fn nightly_cargo() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo"])
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC");
    c
}

fn ensure_cargo_fuzz() -> Result<()> {
    let present = nightly_cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !present {
        eprintln!("xtask fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)");
        let ok = nightly_cargo()
            .args(["install", "cargo-fuzz", "--locked"])
            .status()?
            .success();
        if !ok {
            bail!("cargo install cargo-fuzz failed");
        }
    }
    Ok(())
}

/// Files in `dir` (none if it does not exist).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

fn run_target(target: &str, seconds: u64) -> Result<TargetRun> {
    let root = root();
    let work = root.join("target/fuzz");
    let corpus = work.join("corpus").join(target);
    let artifacts = work.join("artifacts").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| corpus.display().to_string())?;
    std::fs::create_dir_all(&artifacts).with_context(|| artifacts.display().to_string())?;
    let before = files_in(&artifacts);
    let seeds = root.join("fuzz/corpus").join(target);
    let mut cmd = nightly_cargo();
    cmd.current_dir(&root)
        .args(["fuzz", "run", target])
        // New inputs go to the first directory: the working corpus.
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT}"))
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    if target.starts_with("dtb_") && target != "dtb_structured" {
        cmd.arg(format!("-dict={}", root.join("fuzz/dtb.dict").display()));
    }
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running cargo fuzz run {target}"))?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(work.join(format!("{target}.log")), &log)?;
    let findings: Vec<PathBuf> = files_in(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let failed = !out.status.success();
    if failed && findings.is_empty() {
        // No input to show: the build or the tool failed. Say so with its words.
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "cargo fuzz run {target} failed without a finding:\n{}",
            tail.join("\n")
        );
    }
    Ok(TargetRun {
        target: target.to_string(),
        execs: executions(&log),
        findings,
        failed,
    })
}

/// Runs every target for `seconds` each (or only those named in `only`);
/// exit code 0 when nothing was found.
pub fn fuzz_command(seconds: u64, only: &[String]) -> Result<i32> {
    if seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    let manifest = root().join("fuzz/Cargo.toml");
    let all = targets(
        &std::fs::read_to_string(&manifest).with_context(|| manifest.display().to_string())?,
    );
    if all.is_empty() {
        bail!("{} declares no fuzz target", manifest.display());
    }
    for t in only {
        if !all.contains(t) {
            bail!("no fuzz target named {t} (targets: {})", all.join(", "));
        }
    }
    let chosen: Vec<String> = if only.is_empty() {
        all
    } else {
        all.into_iter().filter(|t| only.contains(t)).collect()
    };
    ensure_nightly()?;
    ensure_cargo_fuzz()?;
    let mut runs = Vec::new();
    for t in &chosen {
        eprintln!("xtask fuzz: {t} for {seconds} s");
        let r = run_target(t, seconds)?;
        println!(
            "{:<16} {:>10} execs  {:>3} finding(s)",
            r.target,
            r.execs,
            r.findings.len()
        );
        runs.push(r);
    }
    let found: Vec<&TargetRun> = runs.iter().filter(|r| r.failed).collect();
    if found.is_empty() {
        println!(
            "fuzz: {} target(s), {} s each, {} executions, nothing found",
            runs.len(),
            seconds,
            runs.iter().map(|r| r.execs).sum::<u64>()
        );
        return Ok(0);
    }
    for r in &found {
        for f in &r.findings {
            println!("FINDING {}: {}", r.target, f.display());
        }
        println!(
            "  (log: target/fuzz/{}.log; reproduce: cargo +nightly fuzz run {} <input>)",
            r.target, r.target
        );
    }
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_the_bin_names_of_the_manifest() {
        let m = "[package]\nname = \"hvmm-fuzz\"\n\n[[bin]]\nname = \"dtb_boot\"\npath = \"a.rs\"\n\n[profile.release]\ndebug = 1\n\n[[bin]]\nname = \"engine_ops\"\n";
        assert_eq!(targets(m), ["dtb_boot", "engine_ops"]);
    }

    #[test]
    fn the_real_manifest_names_the_four_targets() {
        let m = std::fs::read_to_string(root().join("fuzz/Cargo.toml")).unwrap();
        assert_eq!(
            targets(&m),
            ["dtb_boot", "dtb_structured", "dtb_parse", "engine_ops"]
        );
    }

    #[test]
    fn executions_come_from_the_final_stats_or_the_last_status_line() {
        let done = "#2\tINITED cov: 10\n#4096\tpulse  cov: 20\n#9000\tDONE   cov: 21\nDone 9000 runs in 2 second(s)\nstat::number_of_executed_units: 9001\n";
        assert_eq!(executions(done), 9001);
        let crashed =
            "#2\tINITED cov: 10\n#1500\tNEW    cov: 20\n==1== ERROR: libFuzzer: deadly signal\n";
        assert_eq!(executions(crashed), 1500);
        assert_eq!(executions("no output"), 0);
    }
}
