//! The examples, run and checked so that they cannot rot:
//!
//! - `example-host`: `crates/hvmm/examples/tables.rs` on the host;
//! - `example-readme`: the README's "Use hvmm in your hypervisor" snippet,
//!   built and run as a crate of its own outside the workspace that depends
//!   on the core by path (as an adopter's would, from the README alone);
//! - `example-el2`: `examples/el2-hello` built for `aarch64-unknown-none`
//!   and booted at EL2 on QEMU.
//!
//! Each checks the lines its example must print and its exit status.

use crate::qemu;
use crate::root;
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The lines `el2-hello` prints on success, in order (prefixes).
const EL2_LINES: &[&str] = &[
    "el2-hello: EL2, MMU on with the head's boot tables",
    "el2-hello: stage 1 root ",
    "el2-hello: switched to hvmm's table, WXN on",
    "el2-hello: VA 0x0000000100000000 -> PA ",
    "el2-hello: protect -> AT S1E2W refused (Permission fault); unmap -> AT S1E2R refused (Translation fault)",
    "el2-hello: stage 2 VMID 1: IPA 0x40005000 -> PA 0x0000000048005000 (level 3, read-only, 1 split)",
    "el2-hello: stage 2 destroyed, ",
    "el2-hello: done",
];

/// The lines the host example prints (substrings, in order).
const HOST_LINES: &[&str] = &[
    "stage 1 (arm64 EL2), root ",
    "0x000000200000 +  256 pages -> PA 0x0040200000  level 3  RX Normal",
    "0x000100000000 + 1024 pages -> PA 0x0080000000  level 2  RW Normal",
    "read-write-execute: writable and executable mappings are refused (W^X)",
    "map over the image: 0x0000000000200000 is already mapped",
    "protect 0x100001000: 1 split, 1 table page(s) made",
    "-> PA 0x0000000080001000 RO Normal",
    "stage 2 (arm64, 40-bit IPA), VMID 1",
    "0x000040000000 + 2048 pages -> PA 0x0088000000  level 2  RWX NormalWb",
    "IPA 0x40100123 -> PA 0x0000000088100123",
    "stage 2 destroyed: 5 table pages freed",
];

/// The lines the README's snippet prints (substrings, in order).
const README_LINES: &[&str] = &[
    "stage 1: TTBR 0x4",
    "VA 0x401234 -> PA 0x0000000040401234 (level 2)",
    "stage 2: VTTBR 0x1",
    "IPA 0x40000000 -> PA 0x0000000048000000 (level 3)",
    "stage 1 root frame 0x4",
];

/// The heading of the README section whose snippet is built.
const README_SECTION: &str = "## Use hvmm in your hypervisor";

/// Checks that `output` holds each of `lines`, in order; names the first
/// one missing.
pub fn check_lines(output: &str, lines: &[&str], what: &str) -> Result<()> {
    let mut rest = output;
    for line in lines {
        match rest.find(line) {
            Some(i) => rest = &rest[i + line.len()..],
            None => bail!("{what}: expected line missing (or out of order): {line:?}\n--- output ---\n{output}"),
        }
    }
    Ok(())
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // The outer cargo's flags are for the host build of xtask.
    cmd.env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    cmd
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => root().join("target"),
    }
}

/// Runs `cmd`, returns its stdout and stderr; fails with both when it fails.
fn output_of(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "{what} failed ({})\n{text}",
        out.status
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cargo run -p hvmm --example tables --features host`, checked.
pub fn host() -> Result<()> {
    let out = output_of(
        cargo().current_dir(root()).args([
            "run",
            "-q",
            "-p",
            "hvmm",
            "--example",
            "tables",
            "--features",
            "host",
        ]),
        "the host example",
    )?;
    check_lines(&out, HOST_LINES, "the host example")?;
    println!("example-host: ok ({} lines checked)", HOST_LINES.len());
    Ok(())
}

/// The README section's first `toml` and `rust` blocks.
pub fn readme_snippet(readme: &str) -> Result<(String, String)> {
    let start = readme
        .find(README_SECTION)
        .with_context(|| format!("README has no section {README_SECTION:?}"))?;
    let section = &readme[start + README_SECTION.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let block = |lang: &str| -> Result<String> {
        let open = format!("```{lang}\n");
        let i = section
            .find(&open)
            .with_context(|| format!("the README section has no {lang} block"))?;
        let body = &section[i + open.len()..];
        let end = body
            .find("```")
            .with_context(|| format!("unterminated {lang} block"))?;
        Ok(body[..end].to_string())
    };
    Ok((block("toml")?, block("rust")?))
}

/// The dependencies the README's `toml` block names, as path dependencies
/// on this repository's crates (`hvmm` with the `host` feature, as the
/// block's comment tells a reader who runs the snippet on the host).
pub fn readme_manifest(toml: &str, crates: &Path) -> Result<String> {
    let mut deps = Vec::new();
    for line in toml.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        let name = line
            .split('=')
            .next()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .with_context(|| format!("not a dependency line: {line:?}"))?;
        let dir = crates.join(name);
        ensure!(
            dir.join("Cargo.toml").exists(),
            "the README depends on {name:?}, which is not a crate of this repository"
        );
        let features = if name == "hvmm" {
            ", features = [\"host\"]"
        } else {
            ""
        };
        deps.push(format!("{name} = {{ path = {:?}{features} }}", dir));
    }
    ensure!(
        deps.iter().any(|d| d.starts_with("hvmm = ")),
        "the README's dependency block does not name hvmm"
    );
    Ok(format!(
        "[package]\nname = \"readme-example\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[workspace]\n\n[dependencies]\n{}\n",
        deps.join("\n")
    ))
}

/// Builds and runs the README's snippet as a crate outside the workspace.
pub fn readme() -> Result<()> {
    let text = std::fs::read_to_string(root().join("README.md")).context("reading README.md")?;
    let (toml, code) = readme_snippet(&text)?;
    ensure!(
        !code.contains("hvmm_xen") && !code.contains("hvmm_boot"),
        "the README's snippet uses more than the core"
    );
    let dir = target_dir().join("readme-example");
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join("Cargo.toml"),
        readme_manifest(&toml, &root().join("crates"))?,
    )?;
    std::fs::write(dir.join("src/main.rs"), &code)?;
    let out = output_of(
        cargo()
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", dir.join("target"))
            .args(["run", "-q", "--offline"]),
        "the README's snippet (a crate outside the workspace)",
    )?;
    let lock = std::fs::read_to_string(dir.join("Cargo.lock")).unwrap_or_default();
    ensure!(
        !lock.contains("name = \"hvmm-xen\""),
        "the README's snippet pulls in hvmm-xen"
    );
    check_lines(&out, README_LINES, "the README's snippet")?;
    println!(
        "example-readme: ok (built outside the workspace in {}, {} lines checked)",
        dir.display(),
        README_LINES.len()
    );
    Ok(())
}

/// Builds `examples/el2-hello` and returns its ELF.
pub fn build_el2() -> Result<PathBuf> {
    let manifest = root().join("examples/el2-hello/Cargo.toml");
    let out = target_dir().join("el2-hello");
    let status = cargo()
        .args([
            "build",
            "--release",
            "--target",
            "aarch64-unknown-none",
            "--manifest-path",
        ])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &out)
        .status()
        .context("running cargo to build el2-hello")?;
    ensure!(status.success(), "building el2-hello failed ({status})");
    Ok(out.join("aarch64-unknown-none/release/el2-hello"))
}

/// Builds `el2-hello`, boots it at EL2 on QEMU and checks what it prints
/// and its exit status.
pub fn el2(verbose: bool) -> Result<()> {
    let elf = build_el2()?;
    let mut cmd = Command::new("qemu-system-aarch64");
    cmd.args([
        "-M",
        "virt,virtualization=on",
        "-cpu",
        "cortex-a57",
        "-m",
        "128M",
        "-nographic",
        "-semihosting",
        "-kernel",
    ])
    .arg(&elf);
    let o = qemu::run(&mut cmd, Some(Duration::from_secs(60)), verbose)?;
    ensure!(
        !o.timed_out,
        "el2-hello did not finish within 60 s\n{}",
        o.output
    );
    ensure!(
        o.code == Some(0),
        "el2-hello exited with {:?}\n{}",
        o.code,
        o.output
    );
    check_lines(&o.output, EL2_LINES, "el2-hello")?;
    println!(
        "example-el2: ok (QEMU at EL2, {} lines checked, exit 0, {:.2} s)",
        EL2_LINES.len(),
        o.elapsed.as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_must_all_appear_in_order() {
        assert!(check_lines("a\nb\nc\n", &["a", "c"], "t").is_ok());
        assert!(check_lines("a\nb\nc\n", &["c", "a"], "t").is_err());
        assert!(check_lines("a\nb\n", &["a", "d"], "t").is_err());
    }

    #[test]
    fn the_readme_snippet_is_found_and_its_dependencies_become_paths() {
        let text = std::fs::read_to_string(root().join("README.md")).unwrap();
        let (toml, code) = readme_snippet(&text).unwrap();
        assert!(code.contains("fn main()"));
        let m = readme_manifest(&toml, &root().join("crates")).unwrap();
        assert!(m.contains("hvmm = { path = "), "{m}");
        assert!(m.contains("features = [\"host\"]"), "{m}");
        assert!(!m.contains("hvmm-xen"), "{m}");
    }

    #[test]
    fn a_readme_without_the_section_or_naming_unknown_crates_is_refused() {
        assert!(readme_snippet("# nothing here\n").is_err());
        let crates = root().join("crates");
        assert!(readme_manifest("not-a-crate = \"1\"\n", &crates).is_err());
        assert!(readme_manifest("hvmm-arch = \"0.1\"\n", &crates).is_err());
    }
}
