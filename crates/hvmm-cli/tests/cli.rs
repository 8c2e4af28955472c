//! The `hvmm` command as users run it.

use std::process::Command;

fn hvmm(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hvmm"))
        .args(args)
        .output()
        .expect("run hvmm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../hvmm-bootinfo/tests/data/");

#[test]
fn default_boot_reaches_active_with_four_cpus_and_three_guessed_modules() {
    let (code, out, err) = hvmm(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reached Active with 4 CPU(s)"), "{out}");
    // Domain 0, built from the boot modules and checked through its stage 2.
    assert!(out.contains("*** LOADING DOMAIN 0 ***"), "{out}");
    assert!(
        out.contains("guest pages checked through its stage 2"),
        "{out}"
    );
    assert!(
        out.contains("XSM policy (guessed by reading its first bytes)"),
        "{out}"
    );
    assert!(out.contains("in EarlyBoot via fixmap slot 1"), "{out}");
    assert!(
        out.contains("0 stale TLB entries, 0 break-before-make violations"),
        "{out}"
    );
}

#[test]
fn json_output_has_the_same_facts() {
    let (code, out, _) = hvmm(&["boot", "--arch", "arm32", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["ok"], true);
    assert_eq!(v["summary"]["state"], "Active");
    assert_eq!(v["summary"]["arch"], "arm32");
    assert_eq!(v["summary"]["modules"][2]["kind"], "xsm-policy");
    assert_eq!(v["summary"]["modules"][2]["source"], "guessed-by-reading");
    assert_eq!(v["model"]["stale_tlb_entries"], 0);
}

#[test]
fn boots_a_real_boards_device_tree() {
    for (dtb, arch) in [("virt-arm64.dtb", "arm64"), ("virt-arm32.dtb", "arm32")] {
        let path = format!("{DATA}{dtb}");
        let (code, out, err) = hvmm(&["boot", "--arch", arch, "--dtb", &path]);
        assert_eq!(code, 0, "{dtb}: {out}{err}");
        assert!(out.contains("RAM: 0x0000000040000000"), "{out}");
    }
}

#[test]
fn modules_from_files_with_kinds() {
    let dir = std::env::temp_dir().join(format!("hvmm-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let k = dir.join("kernel");
    let x = dir.join("policy");
    std::fs::write(&k, vec![7u8; 10_000]).unwrap();
    let mut pol = 0xf97c_ff8cu32.to_le_bytes().to_vec();
    pol.extend_from_slice(&[0; 100]);
    std::fs::write(&x, pol).unwrap();
    // (The kernel is not a real one: stop at Active.)
    let (code, out, err) = hvmm(&[
        "boot",
        "--no-dom0",
        "--loader",
        "uboot",
        "--module",
        &format!("{}:kernel", k.display()),
        "--module",
        &format!("{}:xsm", x.display()),
        "--smp",
        "1",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("kernel (typed)") && out.contains("XSM policy (typed)"),
        "{out}"
    );
    let (code, _, err) = hvmm(&[
        "boot",
        "--loader",
        "uboot",
        "--module",
        &k.display().to_string(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("needs typed modules"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_input_is_a_message_and_exit_code_2_or_1() {
    let cases: &[(&[&str], i32, &str)] = &[
        (&["boot", "--smp", "99"], 2, "--smp"),
        (&["boot", "--ram", "lots@0"], 2, "not a number"),
        (&["boot", "--ram", "1G@0x40000800"], 2, "page aligned"),
        (&["boot", "--dtb", "/nonexistent.dtb"], 2, "--dtb"),
        (
            &["boot", "--load-addr", "0x7ffff000"],
            2,
            "does not fit in RAM",
        ),
        (
            &["boot", "--ram", "1G@0", "--load-addr", "0x300800"],
            2,
            "not 4 KiB aligned",
        ),
        (&["boot", "--module", "/nonexistent"], 2, "--module"),
        (
            &["boot", "--dom0-mem", "3M"],
            1,
            "not a non-zero multiple of 2 MiB",
        ),
        (&["boot", "--dom0-mem", "many"], 2, "--dom0-mem"),
    ];
    for (args, want, needle) in cases {
        let (code, out, err) = hvmm(args);
        assert_eq!(code, *want, "{args:?}: {out}{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn an_image_loaded_inside_its_own_link_range_boots() {
    // RAM at 0: loaded at 0x300000, on top of its link range 0x200000.. (the
    // identity map once clashed with the image mapping here).
    let (code, out, err) = hvmm(&[
        "boot",
        "--ram",
        "1G@0",
        "--load-addr",
        "0x300000",
        "--loader",
        "direct",
        "--no-dom0",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("loaded at 0x0000000000300000"), "{out}");
    assert!(
        out.contains("0 hazardous root switches, 0 TLB conflict aborts"),
        "{out}"
    );
}

#[test]
fn dump_prints_the_walk() {
    let (code, out, _) = hvmm(&["boot", "--dump", "0x200000", "--smp", "1"]);
    assert_eq!(code, 0);
    assert!(out.contains("L3[0x000]"), "{out}");
    assert!(out.contains("-> PA"), "{out}");
}

#[test]
fn stress_runs_after_the_boot() {
    let (code, out, err) = hvmm(&["boot", "--arch", "arm32", "--stress", "10"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("SMP stress: 4 CPUs x 10 iterations"), "{out}");
}
