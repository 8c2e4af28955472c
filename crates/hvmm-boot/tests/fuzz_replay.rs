//! Replays every checked-in fuzz corpus (`fuzz/corpus/<target>/`) through
//! the same library functions the cargo-fuzz targets call
//! (`hvmm_boot::fuzzing`), on stable Rust: each corpus file is a regression
//! test. A file whose name starts with `crash-` is a reproducer of a finding
//! (see `docs/BAD_INPUTS.md`); it is replayed like the rest.

use hvmm_boot::fuzzing;
use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
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
    let files = corpus(target);
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
    replay("dtb_boot", fuzzing::dtb_boot);
}

#[test]
fn dtb_structured_corpus() {
    replay("dtb_structured", fuzzing::dtb_structured);
}

#[test]
fn dtb_parse_corpus() {
    replay("dtb_parse", fuzzing::dtb_parse);
}

#[test]
fn engine_ops_corpus() {
    replay("engine_ops", fuzzing::engine_ops);
}

/// The builder-made seeds are in the corpora (regenerate them with
/// `HVMM_WRITE_SEEDS=1 cargo test -p hvmm-boot --test fuzz_replay`), and
/// the real QEMU DTBs are there too.
#[test]
fn seeds_are_checked_in() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let write = std::env::var_os("HVMM_WRITE_SEEDS").is_some();
    for (target, name, data) in fuzzing::seeds() {
        let p = root.join(target).join(&name);
        if write {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &data).unwrap();
        } else {
            let on_disk = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(
                on_disk,
                data,
                "{} differs from fuzzing::seeds()",
                p.display()
            );
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
