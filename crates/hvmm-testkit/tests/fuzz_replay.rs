//! Replays every checked-in fuzz corpus (`fuzz/corpus/<target>/`) through
//! the same library functions the cargo-fuzz targets call
//! (`hvmm_testkit::fuzz`), on stable Rust: each corpus file is a regression
//! test.
//!
//! A file whose name starts with `crash-` reproduces a finding that is not
//! fixed yet (see "Findings" in `docs/BAD_INPUTS.md`): the corpus tests skip
//! it, and the `finding_*` test named after it (ignored until the fix lands)
//! replays it with the behaviour the fix must give. When a finding is fixed,
//! its test is un-ignored and the file renamed `findingN-...`, which joins
//! the regression corpus.

use hvmm_testkit::fuzz;
use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.expect("directory entry").path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, data)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the {target} corpus is empty");
    files
}

fn replay(target: &str, f: fn(&[u8])) {
    let files: Vec<_> = corpus(target)
        .into_iter()
        .filter(|(name, _)| !name.starts_with("crash-"))
        .collect();
    for (name, data) in &files {
        let r = std::panic::catch_unwind(|| f(data));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{target}: corpus file {name} fails: {msg}");
        }
    }
    eprintln!("{target}: {} corpus files replayed", files.len());
}

#[test]
fn dtb_boot_corpus() {
    replay("dtb_boot", fuzz::dtb_boot);
}

#[test]
fn dtb_structured_corpus() {
    replay("dtb_structured", fuzz::dtb_structured);
}

#[test]
fn dtb_parse_corpus() {
    replay("dtb_parse", fuzz::dtb_parse);
}

#[test]
fn engine_ops_corpus() {
    replay("engine_ops", fuzz::engine_ops);
}

/// The builder-made seeds are in the corpora (regenerate them with
/// `HVMM_WRITE_SEEDS=1 cargo test -p hvmm-testkit --test fuzz_replay`), and
/// the real QEMU DTBs are there too.
#[test]
fn seeds_are_checked_in() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let write = std::env::var_os("HVMM_WRITE_SEEDS").is_some();
    for (target, name, data) in fuzz::seeds() {
        let p = root.join(target).join(&name);
        if write {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &data).unwrap();
        } else {
            let on_disk = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(on_disk, data, "{} differs from fuzz::seeds()", p.display());
        }
    }
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hvmm-bootinfo/tests/data");
    for (dtb, sel) in [
        ("virt-arm64.dtb", 0u8),
        ("virt-arm64-typed.dtb", 0),
        ("virt-arm32.dtb", 1),
    ] {
        let mut v = vec![sel];
        v.extend(std::fs::read(data.join(dtb)).unwrap());
        for target in ["dtb_boot", "dtb_parse"] {
            let p = root.join(target).join(format!("qemu-{dtb}"));
            if write {
                std::fs::write(&p, &v).unwrap();
            } else {
                assert_eq!(std::fs::read(&p).unwrap(), v, "{}", p.display());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Findings, fixed: each test states the behaviour the fix gives.
// ---------------------------------------------------------------------------

/// FINDING 1 (fuzz, `dtb_structured`; reduced by hand to `dtb_boot`'s
/// `finding1-arm32-xenheap-underflow`; fixed in 6c720e1): on arm32, when the RAM bank chosen for
/// the xenheap (the one ending highest below 4 GiB) contains no 2 MiB
/// boundary, `setup_mm` (crates/hvmm-boot/src/seq.rs, the xenheap block)
/// rounds the bank's end down to 2 MiB *below its base* and computes
/// `end - base`: a debug build panics ("attempt to subtract with
/// overflow"); a release build wraps, maps the xenheap to the 1 GiB of PA
/// below the bank (memory the DTB does not describe), then fails with a
/// misleading "boot allocator exhausted". The fix must refuse with the
/// step's own message ("too small for a xenheap") and map nothing there.
/// Since the xenheap is placed in free RAM (the largest place below 4 GiB,
/// not the bank ending highest), a machine with another bank that can hold
/// it boots, with the xenheap there.
#[test]
fn finding_1_arm32_xenheap_bank_without_a_2mib_boundary() {
    use hvmm_boot::model::{run, ArchKind, Loader, Scenario};
    use hvmm_boot::BootStep;
    // The corpus reproducers: no panic, and a named refusal.
    for (target, f) in [
        ("dtb_boot", fuzz::dtb_boot as fn(&[u8])),
        ("dtb_structured", fuzz::dtb_structured),
    ] {
        for (name, data) in corpus(target) {
            if name.starts_with("finding1-arm32-xenheap-underflow") {
                f(&data);
            }
        }
    }
    let check = |ram: Vec<(u64, u64)>, dtb: Option<Vec<u8>>| {
        let mut s = Scenario::default_for(ArchKind::Arm32);
        s.ram = ram;
        s.loader = Loader::Direct;
        s.dtb_override = dtb;
        let o = run(&s).expect("set-up");
        let e = o
            .result
            .as_ref()
            .expect_err("the boot must refuse")
            .error
            .clone();
        assert_eq!(e.step, BootStep::SetupMm, "{e}");
        assert!(
            e.message.as_str().contains("too small for a xenheap"),
            "{e}"
        );
        assert!(
            !o.log.contains("xenheap: 0x"),
            "the xenheap was mapped:\n{}",
            o.log
        );
    };
    // The only bank has no 2 MiB boundary (the DTB says so; the model has more).
    let dtb = hvmm_bootinfo::builder::VirtBoard::new()
        .arm32()
        .ram(0x4010_0000, 0x8_0000)
        .cpus(4)
        .build();
    check(vec![(0x4000_0000, 0x4000_0000)], Some(dtb));
    // A small bank ending highest below 4 GiB next to 1 GiB of RAM: the
    // xenheap once went to [0x8000_0000, 0xc000_0000), which is not RAM;
    // now it goes to the top of the 1 GiB bank, and the boot goes on.
    let mut s = Scenario::default_for(ArchKind::Arm32);
    s.ram = vec![(0x4000_0000, 0x4000_0000), (0xc010_0000, 0x8_0000)];
    s.loader = Loader::Direct;
    let o = run(&s).expect("set-up");
    assert!(o.result.is_ok(), "{}", o.log);
    assert!(
        o.log
            .contains("(XEN) xenheap: 0x0000000040000000 -> 0x7c000000 (64 MiB"),
        "{}",
        o.log
    );
}
