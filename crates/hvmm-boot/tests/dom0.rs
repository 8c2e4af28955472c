//! Domain 0 built after Active on the machine model, both architectures:
//! its RAM mapped IPA == PA through its own stage-2 table (pool pages
//! reached through the phase's access path), the kernel, initrd and device
//! tree where the boot protocol wants them, the devices it is given; and
//! each bad input named.

use hvmm::SystemState;
use hvmm_boot::domain::Dom0Config;
use hvmm_boot::model::{run, ArchKind, ModuleFile, Outcome, Scenario};
use hvmm_boot::report::BootStep;
use hvmm_bootinfo::dtb::Dtb;
use hvmm_bootinfo::ModuleKind;

const MIB: u64 = 1 << 20;

fn with_dom0(arch: ArchKind, cfg: Dom0Config) -> Scenario {
    let mut s = Scenario::default_for(arch);
    s.dom0 = Some(cfg);
    s
}

fn boot(s: &Scenario) -> Outcome {
    let o = run(s).expect("scenario set-up");
    assert!(o.stale.is_empty(), "stale TLB entries: {:?}", o.stale);
    assert!(o.bbm.is_empty(), "BBM violations: {:?}", o.bbm);
    o
}

#[test]
fn dom0_is_built_from_the_boot_modules_on_both_architectures() {
    for arch in [ArchKind::Arm64, ArchKind::Arm32] {
        let o = boot(&with_dom0(arch, Dom0Config::default()));
        let sum = match &o.result {
            Ok(s) => s,
            Err(f) => panic!("{arch:?}: {}\n{}", f.error, o.log),
        };
        assert_eq!(sum.state, Some(SystemState::Active));
        let d = sum.dom0.expect("dom0 built");
        assert!(o.log.contains("*** LOADING DOMAIN 0 ***"), "{}", o.log);
        // 128 MiB, 2 MiB aligned, taken from the hypervisor's free RAM.
        assert_eq!(d.ram.1, 128 * MIB);
        assert_eq!(d.ram.0 .0 % (2 * MIB), 0);
        // The kernel where its boot protocol wants it.
        let offset = d.kernel.0 .0 - d.ram.0 .0;
        match arch {
            // image_size 0: a pre-3.17 Image, loaded 0x80000 into RAM.
            ArchKind::Arm64 => assert_eq!(offset, 0x8_0000),
            ArchKind::Arm32 => assert_eq!(offset, 0x8000, "zImage 32 KiB into RAM"),
        }
        assert_eq!(d.entry, d.kernel.0);
        // The initrd at the top, the tree below it, both inside the bank.
        let end = d.ram.0 .0 + d.ram.1;
        assert!(d.initrd.0 .0 + d.initrd.1 <= end && d.initrd.1 == 128 * 1024);
        assert!(d.dtb.0 .0 + d.dtb.1 <= d.initrd.0 .0);
        assert!(d.devices >= 2, "the UART and the interrupt controller");
        assert!(d.checked_pages >= 48, "{}", d.checked_pages);
        // The model's own two-stage translation agrees (its stage-2 walker
        // is written from the architecture, not from the engine).
        match &o.dom0_two_stage {
            Some(Ok(n)) => assert!(*n >= 64, "{n} pages"),
            other => panic!("{arch:?}: two-stage check {other:?}\n{}", o.log),
        }
        assert!(d.pool_used >= 2 && d.pool_used <= d.pool_pages);
        // The guest's tree, read back from its RAM, describes its bank only.
        let mut tree = vec![0u8; d.dtb.1 as usize];
        o.machine.phys_read(d.dtb.0, &mut tree).unwrap();
        let g = Dtb::new(&tree).expect("a valid guest tree");
        let mem: Vec<_> = g
            .root()
            .children()
            .filter(|c| c.name.starts_with("memory@"))
            .collect();
        assert_eq!(mem.len(), 1);
        assert_eq!(
            g.find("/psci")
                .unwrap()
                .property("method")
                .unwrap()
                .as_str(),
            Some("hvc")
        );
        let chosen = g.find("/chosen").unwrap();
        assert_eq!(
            chosen.property("linux,initrd-start").unwrap().value,
            d.initrd.0 .0.to_be_bytes()
        );
        // The kernel's bytes were copied.
        let mut head = [0u8; 64];
        o.machine.phys_read(d.kernel.0, &mut head).unwrap();
        assert_eq!(&head[0x38..0x3c], b"ARMd");
    }
}

#[test]
fn a_kernel_module_that_is_no_kernel_is_refused_by_name() {
    for arch in [ArchKind::Arm64, ArchKind::Arm32] {
        let mut s = with_dom0(arch, Dom0Config::default());
        s.modules[0].data = vec![0x5a; 64 * 1024];
        let o = boot(&s);
        let err = &o.result.as_ref().expect_err("refused").error;
        assert_eq!(err.step, BootStep::Dom0);
        let msg = err.to_string();
        assert!(msg.contains("the kernel module is not an arm"), "{msg}");
    }
}

#[test]
fn a_gzip_compressed_kernel_is_refused_with_the_limitation_stated() {
    let mut s = with_dom0(ArchKind::Arm64, Dom0Config::default());
    s.modules[0].data[..2].copy_from_slice(&[0x1f, 0x8b]);
    let o = boot(&s);
    let msg = o.result.as_ref().expect_err("refused").error.to_string();
    assert!(
        msg.contains("gzip-compressed kernel (not decompressed yet"),
        "{msg}"
    );
}

#[test]
fn a_guest_that_does_not_fit_its_ram_is_refused() {
    let cfg = Dom0Config {
        mem: 2 * MIB,
        ..Dom0Config::default()
    };
    let o = boot(&with_dom0(ArchKind::Arm64, cfg));
    let msg = o.result.as_ref().expect_err("refused").error.to_string();
    assert!(msg.contains("does not fit"), "{msg}");
    let odd = Dom0Config {
        mem: 3 * MIB,
        ..Dom0Config::default()
    };
    let o = boot(&with_dom0(ArchKind::Arm64, odd));
    let msg = o.result.as_ref().expect_err("refused").error.to_string();
    assert!(msg.contains("not a non-zero multiple of 2 MiB"), "{msg}");
}

#[test]
fn more_ram_than_the_hypervisor_has_is_refused() {
    let cfg = Dom0Config {
        mem: 2048 * MIB,
        ..Dom0Config::default()
    };
    let o = boot(&with_dom0(ArchKind::Arm32, cfg));
    let msg = o.result.as_ref().expect_err("refused").error.to_string();
    assert!(
        msg.contains("no 2 MiB-aligned bank of 2048 MiB for dom0"),
        "{msg}"
    );
}

#[test]
fn a_stage2_pool_that_runs_dry_is_a_named_error_not_a_fault() {
    for arch in [ArchKind::Arm64, ArchKind::Arm32] {
        // The root alone fills one page (two on arm32's concatenated root).
        let cfg = Dom0Config {
            pool_pages: 2,
            ..Dom0Config::default()
        };
        let o = boot(&with_dom0(arch, cfg));
        let err = &o.result.as_ref().expect_err("refused").error;
        assert!(err.fault.is_none());
        let msg = err.to_string();
        assert!(
            msg.contains("stage-2 pool of 2 pages ran dry") || msg.contains("out of memory"),
            "{msg}"
        );
    }
}

#[test]
fn without_a_kernel_module_there_is_no_dom0() {
    let mut s = with_dom0(ArchKind::Arm64, Dom0Config::default());
    s.modules
        .retain(|m: &ModuleFile| m.kind != ModuleKind::Kernel);
    // Untyped modules: the first one left becomes the kernel; type them.
    for m in &mut s.modules {
        m.kind = ModuleKind::Ramdisk;
    }
    s.modules.truncate(1);
    s.loader = hvmm_boot::model::Loader::Uboot;
    let o = boot(&s);
    let msg = o.result.as_ref().expect_err("refused").error.to_string();
    assert!(msg.contains("no boot module is a kernel"), "{msg}");
}

#[test]
fn test_arguments_name_a_page_of_its_ram_and_an_address_of_the_hypervisors() {
    let cfg = Dom0Config {
        test_args: true,
        ..Dom0Config::default()
    };
    let o = boot(&with_dom0(ArchKind::Arm64, cfg));
    let d = o.result.as_ref().expect("boots").dom0.expect("dom0");
    let mut tree = vec![0u8; d.dtb.1 as usize];
    o.machine.phys_read(d.dtb.0, &mut tree).unwrap();
    let g = Dtb::new(&tree).unwrap();
    let args = g
        .find("/chosen")
        .and_then(|c| c.property("bootargs"))
        .and_then(|p| p.as_str())
        .expect("bootargs")
        .to_string();
    let value = |key: &str| {
        let v = args
            .split(' ')
            .find_map(|a| a.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} missing from {args:?}"));
        u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()
    };
    let (wp, probe) = (value("hvmm.wp="), value("hvmm.probe="));
    let (base, size) = (d.ram.0 .0, d.ram.1);
    assert!(wp >= base && wp < base + size, "{wp:#x} is the guest's");
    assert_eq!(wp % 4096, 0);
    assert!(
        probe < base || probe >= base + size,
        "{probe:#x} is not the guest's"
    );
}
