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
    // The end-of-boot audit's line: a root per CPU (each with its mapcache
    // slots) and the page-table rule on, holding.
    assert!(
        out.contains("(XEN) audit: 4 roots (4 CPUs), ")
            && out.contains(
                "no W+X, X only in .text, device only for devices, nothing outside declared regions"
            )
            && out.contains("no page table writable through a permanent mapping")
            && out.contains(" 0 of them writable through a permanent mapping"),
        "{out}"
    );
}

#[test]
fn no_directmap_boots_secret_free_to_active_and_arm32_refuses_it() {
    let (code, out, err) = hvmm(&["boot", "--no-directmap"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reached Active with 4 CPU(s)"), "{out}");
    assert!(out.contains("secret-free: no direct map"), "{out}");
    assert!(
        out.contains("no mapcache slot held on any of the 4 CPU(s)"),
        "{out}"
    );
    assert!(out.contains("*** LOADING DOMAIN 0 ***"), "{out}");
    let (code, out, _) = hvmm(&["boot", "--no-directmap", "--json", "--no-dom0"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["summary"]["secret_free"], true);
    let (code, out, err) = hvmm(&["boot", "--arch", "arm32", "--no-directmap"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("arm64 only"), "{err}");
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
    // The audit: a root per CPU on arm32, no violation.
    let a = &v["summary"]["audit"];
    assert_eq!(a["roots"], 4);
    assert_eq!(a["violations"], 0);
    assert!(a["leaves"].as_u64().is_some_and(|n| n > 0), "{a}");
    assert_eq!(a["first"], serde_json::Value::Null);
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

const BOARDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../hvmm-bootinfo/tests/data/boards/"
);

#[test]
fn help_says_how_dtb_and_ram_combine() {
    let (code, out, _) = hvmm(&["boot", "--help"]);
    assert_eq!(code, 0);
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("With --dtb, --ram replaces the tree's /memory (or supplies it) as U-Boot's memory fix-up does"),
        "{out}"
    );
    assert!(flat.contains("need --ram"), "{out}");
}

#[test]
fn a_boards_tree_without_usable_memory_boots_with_ram() {
    for (tree, ram, had) in [
        ("rpi4-like.dtb", "1G@0", "only 1 empty RAM bank(s)"),
        ("pine64-like.dtb", "512M@0x40000000", "no /memory node"),
    ] {
        let dtb = format!("{BOARDS}{tree}");
        let (code, _, err) = hvmm(&["boot", "--dtb", &dtb]);
        assert_eq!(code, 2, "{tree}: {err}");
        assert!(
            err.contains(had) && err.contains("--ram SIZE@BASE"),
            "{err}"
        );
        let (code, out, err) = hvmm(&["boot", "--dtb", &dtb, "--ram", ram, "--smp", "1"]);
        assert_eq!(code, 0, "{tree}: {out}{err}");
        assert!(
            out.starts_with(&format!("loader: the device tree has {had}; --ram")),
            "{out}"
        );
        assert!(
            out.contains("supplies it, as U-Boot's memory fix-up does"),
            "{out}"
        );
    }
    // --ram replacing real banks: the reserved range left outside is noted.
    let dtb = format!("{BOARDS}zynqmp-like.dtb");
    let (code, out, err) = hvmm(&["boot", "--dtb", &dtb, "--ram", "512M@0", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    let notes = v["loader_notes"].as_array().unwrap();
    assert!(
        notes[0].as_str().unwrap().contains("replaces it"),
        "{notes:?}"
    );
    assert!(
        notes[1].as_str().unwrap().contains("lies outside RAM"),
        "{notes:?}"
    );
    let r = &v["summary"]["reserved"][0];
    assert_eq!(r["no_map"], true);
    assert_eq!(r["in_ram"], false);
    assert_eq!(r["source"], "reserved-memory");
}

#[test]
fn an_image_loaded_in_no_map_memory_is_refused() {
    let dtb = format!("{BOARDS}zynqmp-like.dtb");
    let (code, _, err) = hvmm(&["boot", "--dtb", &dtb, "--load-addr", "0x3ed00000"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("boot_fdt_info") && err.contains("no-map /reserved-memory range"),
        "{err}"
    );
}

#[test]
fn placements_that_used_to_collide_or_wrap() {
    let cases: &[(&[&str], i32, &str)] = &[
        // GRUB-style placement took 64 MiB off the top of 32 MiB.
        (&["boot", "--ram", "32M@0", "--dom0-mem", "8M"], 0, ""),
        // U-Boot-style placement put the DTB on the first module.
        (
            &[
                "boot",
                "--ram",
                "256M@0x80000000",
                "--loader",
                "uboot",
                "--dom0-mem",
                "64M",
            ],
            0,
            "",
        ),
        // Truly too small: the sizes, not a wrapped address.
        (
            &["boot", "--ram", "256K@0"],
            2,
            "RAM is too small: no room for the image",
        ),
    ];
    for (args, want, needle) in cases {
        let (code, out, err) = hvmm(args);
        assert_eq!(code, *want, "{args:?}: {out}{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn json_carries_every_entry() {
    // 20 reserved ranges and 20 modules: more than the 16 a list kept.
    let dir = std::env::temp_dir().join(format!("hvmm-cli-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut board = hvmm_bootinfo::builder::VirtBoard::new().ram(0x4000_0000, 1 << 30);
    for i in 0..20u64 {
        board = board.reserved_memory(0x5000_0000 + i * 0x10_0000, 0x1000);
    }
    let dtb = dir.join("many.dtb");
    std::fs::write(&dtb, board.build()).unwrap();
    let mut args: Vec<String> = ["boot", "--json", "--no-dom0", "--smp", "1", "--dtb"]
        .map(String::from)
        .to_vec();
    args.push(dtb.display().to_string());
    for i in 0..20 {
        let m = dir.join(format!("m{i}"));
        std::fs::write(&m, vec![i as u8 + 1; 4096]).unwrap();
        args.push("--module".into());
        args.push(m.display().to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = hvmm(&refs);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["summary"]["reserved"].as_array().unwrap().len(), 20);
    let mods = v["summary"]["modules"].as_array().unwrap();
    assert_eq!(mods.len(), 20);
    assert_eq!(mods[19]["kind"], "unknown");
    assert_eq!(v["summary"]["early_copies"].as_array().unwrap().len(), 19);
}

#[test]
fn svg_writes_the_memory_map_and_names_a_path_it_cannot_write() {
    let path = std::env::temp_dir().join(format!("hvmm-cli-map-{}.svg", std::process::id()));
    let p = path.to_str().unwrap();
    let (code, out, err) = hvmm(&["boot", "--svg", p]);
    assert_eq!(code, 0, "{out}{err}");
    let svg = std::fs::read_to_string(&path).expect("the SVG file");
    let _ = std::fs::remove_file(&path);
    assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
    for kind in [
        "ram",
        "image",
        "dtb",
        "module",
        "tables",
        "guest-ram",
        "mapped",
    ] {
        assert!(
            svg.contains(&format!("data-kind=\"{kind}\"")),
            "no {kind} box"
        );
    }
    let (code, _, err) = hvmm(&["boot", "--svg", "/nonexistent-dir/map.svg"]);
    assert_eq!(code, 2);
    assert!(err.contains("--svg /nonexistent-dir/map.svg"), "{err}");
}
