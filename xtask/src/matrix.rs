//! `cargo xtask test-qemu`: the QEMU boot matrix — both architectures,
//! direct and U-Boot style boots at several load addresses (default, high
//! in RAM, above 4 GiB on arm64), 1 and 4 CPUs, typed modules (above 4 GiB
//! on arm32 too), and a deliberate fault whose report must show a Data Abort
//! with a level-2 translation fault at the expected address.
//!
//! Ends with `N passed, N failed` on its own line; exits non-zero on any
//! failure.

use crate::image;
use crate::qemu::{self, QemuArgs};
use crate::{setup, uboot, Arch, Loader};
use anyhow::Result;

/// One boot of the matrix.
struct Case {
    name: String,
    args: QemuArgs,
    code: i32,
    expect: Vec<String>,
}

fn base(arch: Arch) -> QemuArgs {
    qemu::base_args(arch)
}

/// The loader's name as `--loader` takes it.
fn loader_name(l: Loader) -> String {
    clap::ValueEnum::to_possible_value(&l)
        .map(|v| v.get_name().to_string())
        .unwrap_or_else(|| format!("{l:?}"))
}

fn ok_lines(arch: Arch, pa: u64, cpus: u32) -> Vec<String> {
    let mut v = base_lines(pa, cpus);
    match arch {
        // Data split around the sealed tables, the xenheap, the
        // frametable; tables from the pool outside the xenheap.
        Arch::Arm32 => {
            v.push("(XEN) verified ".into());
            v.extend(domain_page_pool_lines(cpus));
        }
        // Data split around the sealed tables, the direct map around the
        // table pool and the image's tables: the count follows the banks.
        Arch::Arm64 => {
            v.push("(XEN) verified ".into());
            v.extend(table_pool_lines(cpus));
        }
    }
    v
}

/// What every boot that reaches Active prints, in either mode.
fn base_lines(pa: u64, cpus: u32) -> Vec<String> {
    vec![
        format!("image at PA {pa:#x}-"),
        "hvmm: sections text 0x0000000000200000-".into(),
        "hvmm: AT verified".into(),
        "hvmm: back end checked: root".into(),
        format!("(XEN) hvmm: reached Active with {cpus} CPU(s)"),
        format!("({cpus} CPU{}), ", if cpus == 1 { "" } else { "s" }),
        hvmm_boot::audit::RULES.into(),
        "hvmm: boot checks passed".into(),
    ]
}

/// What every arm64 direct-map boot prints: the table pool left out of the
/// direct map, tables through the mapcache, the image's sealed, and the
/// audit's table rule on with nothing writable.
fn table_pool_lines(cpus: u32) -> Vec<String> {
    vec![
        "(XEN) table pool: ".into(),
        "(XEN) page tables are now reached through image+mapcache (table pool outside the direct map)".into(),
        "read-only: every table page is written through a mapcache slot".into(),
        "no page table writable through a permanent mapping".into(),
        " 0 of them writable through a permanent mapping".into(),
        format!("(XEN) audit: {cpus} root"),
        format!(
            "hvmm: tables through mapcache slots, from a pool outside the direct map: {cpus} CPU roots, CPU 0 holds no mapcache slot"
        ),
    ]
}

/// What every arm32 boot prints: the table pool outside the xenheap, tables
/// through the domain-page slots (theirs through each CPU's window), the
/// image's sealed, and the audit's table rule on with nothing writable.
fn domain_page_pool_lines(cpus: u32) -> Vec<String> {
    vec![
        "(XEN) table pool: 2 MiB at ".into(),
        "domain-page slots written through its window at 0x00000000ffe00000".into(),
        "(XEN) page tables are now reached through image+domain-page (table pool outside the xenheap)".into(),
        "read-only: every table page is written through a domain-page slot".into(),
        "no page table writable through a permanent mapping".into(),
        " 0 of them writable through a permanent mapping".into(),
        format!("(XEN) audit: {cpus} root"),
        format!(
            "hvmm: tables through domain-page slots, from a pool outside the xenheap: {cpus} CPU roots, CPU 0 holds no domain-page reference"
        ),
    ]
}

/// What is wrong with a boot log that reached Active without the audit's
/// verdict: every boot that gets there must print
/// `(XEN) audit: N root(s) (N CPUs), N leaves (N pages): no W+X, ...`.
/// A boot the audit failed (a planted violation) prints its verdict as the
/// PANIC line instead.
pub fn audit_problem(output: &str) -> Option<String> {
    let active = output.contains("(XEN) ---- system state: Active ----");
    let verdict = output.lines().any(|l| {
        (l.starts_with("(XEN) audit: ") && l.contains(hvmm_boot::audit::RULES))
            || l.starts_with("(XEN) PANIC: boot failed in address-space audit (Active): audit: ")
    });
    (active && !verdict).then(|| "reached Active without the audit's line".to_string())
}

fn module_lines(bootargs: &str) -> Vec<String> {
    vec![
        " kernel (typed)".into(),
        " ramdisk (typed)".into(),
        " XSM policy (typed)".into(),
        format!("hvmm: bootargs: \"{bootargs}\""),
    ]
}

fn cases(arch: Arch) -> Vec<Case> {
    let mut v = Vec::new();
    let n = arch.name();
    let (default_pa, fault_regs) = match arch {
        Arch::Arm64 => (0x4020_0000u64, ["ESR_EL2=", "FAR_EL2=0x100bac"]),
        Arch::Arm32 => (0x4001_0000u64, ["HSR=", "HDFAR=0x100bac"]),
    };

    for smp in [1, 4] {
        let mut a = base(arch);
        a.smp = smp;
        v.push(Case {
            name: format!("{n} direct -kernel smp{smp}"),
            args: a,
            code: 0,
            expect: ok_lines(arch, default_pa, smp),
        });
    }

    // Direct boots at chosen addresses (raw loaders + register set-up stub).
    // 4 KiB but not 2 MiB aligned at the bottom of RAM (above the 1 MiB QEMU
    // keeps for its DTB) and near its top, with room left for an 8 MiB image.
    let mut direct: Vec<(u64, &str, u32)> = vec![
        (0x4010_1000, "1G", 1),
        (0x4010_1000, "1G", 4),
        (0x7f60_1000, "1G", 1),
        (0x7f60_1000, "1G", 4),
        (0x7fe0_0000, "1G", 4),
    ];
    match arch {
        // Above 4 GiB: the identity map lands at another L1 entry.
        Arch::Arm64 => {
            direct.push((0x2_0000_5000, "8G", 1));
            direct.push((0x2_0000_5000, "8G", 4));
        }
        // Top of the 32-bit space (L1 index 3).
        Arch::Arm32 => direct.push((0xffe0_0000, "3G", 4)),
    }
    for (pa, ram, smp) in direct {
        let mut a = base(arch);
        a.load_addr = Some(pa);
        a.ram = ram.into();
        a.smp = smp;
        v.push(Case {
            name: format!("{n} direct at {pa:#x} ram {ram} smp{smp}"),
            args: a,
            code: 0,
            expect: ok_lines(arch, pa, smp),
        });
    }

    // U-Boot: typed modules in /chosen, bootargs, chosen addresses; the
    // imitation (QEMU's loader device) and the real firmware, which runs a
    // boot script from a disk (arm64: booti moves an Image off a 2 MiB
    // boundary up to the next one; bootm runs a uImage where asked).
    let bootm = Some(uboot::BootCmd::Bootm);
    let mut uboot = vec![
        (Loader::UbootSim, None, 0x4040_0000, "1G", 1, None),
        (Loader::UbootSim, None, 0x7fe0_1000, "1G", 4, None),
        (Loader::Uboot, None, 0x4040_0000, "1G", 1, None),
        (Loader::Uboot, None, 0x4800_1000, "1G", 4, None),
    ];
    match arch {
        Arch::Arm64 => {
            let high = Some(0x2_3000_0000);
            uboot.push((Loader::UbootSim, None, 0x1_0000_0000, "8G", 2, high));
            uboot.push((Loader::Uboot, None, 0x1_0000_0000, "8G", 2, high));
            uboot.push((Loader::Uboot, bootm, 0x7b60_1000, "1G", 4, None));
        }
        // Modules above 4 GiB: 40-bit PAs through the fixmap.
        Arch::Arm32 => {
            uboot.push((
                Loader::UbootSim,
                None,
                0xbfe0_0000,
                "6G",
                2,
                Some(0x1_4000_0000),
            ));
            uboot.push((Loader::Uboot, bootm, 0x7b60_1000, "1G", 1, None));
        }
    }
    for (loader, uboot_cmd, pa, ram, smp, modules_at) in uboot {
        let mut a = base(arch);
        a.loader = loader;
        a.uboot_cmd = uboot_cmd;
        a.load_addr = Some(pa);
        a.ram = ram.into();
        a.smp = smp;
        a.modules_at = modules_at;
        // QEMU 7.2's arm32 walker truncates table addresses to 32 bits: with
        // RAM above 4 GiB, keep page-table pages below it.
        let bootargs = if arch == Arch::Arm32 && modules_at.is_some_and(|m| m >= 1 << 32) {
            "console=hvc0 hvmm.test=uboot hvmm.tables-below-4g"
        } else {
            "console=hvc0 hvmm.test=uboot"
        };
        a.bootargs = Some(bootargs.into());
        let runs_at = match loader {
            Loader::Uboot => uboot::BootCmd::of(&a).map_or(pa, |c| uboot::runs_at(c, pa)),
            _ => pa,
        };
        let mut expect = ok_lines(arch, runs_at, smp);
        expect.extend(module_lines(bootargs));
        if let Some(m) = modules_at {
            expect.push(format!("(XEN) module 0: {m:#018x}"));
        }
        if loader == Loader::Uboot {
            expect.extend(uboot::handover_lines(arch));
            if runs_at != pa {
                expect.push(format!("Moving Image from {pa:#x} to {runs_at:#x}"));
            }
            if uboot_cmd == bootm {
                expect.push("## Booting kernel from Legacy Image at".into());
            }
        }
        v.push(Case {
            name: format!(
                "{n} {}{} at {pa:#x} ram {ram} smp{smp}{}",
                loader_name(loader),
                if uboot_cmd == bootm { " bootm" } else { "" },
                if modules_at.is_some() {
                    " modules high"
                } else {
                    ""
                }
            ),
            args: a,
            code: 0,
            expect,
        });
    }

    // The deliberate fault, through both loaders.
    let fault_expect: Vec<String> = vec![
        "hvmm: deliberate fault: reading unmapped VA 0x100bac".into(),
        "hvmm: EXCEPTION on CPU 0".into(),
        "hvmm:   phase: before the boot sequence (image checks)".into(),
        fault_regs[0].into(),
        "EC=0x25 (Data Abort from the same level)".into(),
        "translation fault (FSC 0x06) at level 2, on a read".into(),
        fault_regs[1].into(),
    ];
    let mut a = base(arch);
    a.bootargs = Some("hvmm.fault=1".into());
    v.push(Case {
        name: format!("{n} deliberate fault (direct)"),
        args: a,
        code: 3,
        expect: fault_expect.clone(),
    });
    let mut a = base(arch);
    a.loader = Loader::UbootSim;
    a.load_addr = Some(0x7f60_1000);
    a.smp = 4;
    a.bootargs = Some("hvmm.fault=1".into());
    v.push(Case {
        name: format!("{n} deliberate fault (uboot-sim at 0x7f601000 smp4)"),
        args: a,
        code: 3,
        expect: fault_expect.clone(),
    });

    // The same fault once the shared sequence reached Active: the report
    // names the phase.
    let mut a = base(arch);
    a.bootargs = Some("hvmm.fault=active".into());
    let mut expect = vec!["(XEN) hvmm: reached Active".to_string()];
    expect.extend(
        fault_expect
            .iter()
            .map(|l| l.replace("before the boot sequence (image checks)", "Active")),
    );
    v.push(Case {
        name: format!("{n} deliberate fault in Active"),
        args: a,
        code: 3,
        expect,
    });

    // A stack overflow into the guard page below the stack: the fault is
    // taken with SP inside the guard, and the vectors run the report from
    // the top of the CPU's own stack slot, so it still gets out.
    let mut a = base(arch);
    a.smp = 2;
    a.bootargs = Some("hvmm.fault=stack".into());
    v.push(Case {
        name: format!("{n} stack overflow into the guard page is reported"),
        args: a,
        code: 3,
        expect: vec![
            "hvmm: deliberate stack overflow: recursing into the guard page".into(),
            "hvmm: EXCEPTION on CPU 0".into(),
            "hvmm:   phase: Active".into(),
            "EC=0x25 (Data Abort from the same level)".into(),
            "translation fault (FSC 0x07) at level 3, on a write".into(),
            "hvmm:   stack overflow: ".into(),
            "is in CPU 0's stack guard page".into(),
        ],
    });

    // The end-of-boot audit on hardware: a violation planted before it
    // (`hvmm.audit-plant=`) fails the boot naming the rule, the VA, the PA
    // and the attributes; an unknown plant is refused by name.
    let guard = "(XEN) PANIC: boot failed in address-space audit (Active): audit: stack guard page mapped: VA ";
    let plants = [
        (
            "wx",
            "W+X page",
            format!(
                "audit: W+X page: VA 0x0000000000a0e000 (4 KiB at level 3) -> PA {default_pa:#018x}, RWX Normal"
            ),
        ),
        ("guard", "stack guard page mapped", guard.to_string()),
        // A table page (from the pool outside the direct map or the
        // xenheap) mapped writable at a permanent VA.
        (
            "table",
            "page-table page writable through a permanent mapping",
            "(XEN) PANIC: boot failed in address-space audit (Active): audit: page-table page writable through a permanent mapping: VA ".to_string(),
        ),
    ];
    for (plant, rule, line) in plants {
        let mut a = base(arch);
        a.smp = 2;
        a.bootargs = Some(format!("hvmm.audit-plant={plant}"));
        v.push(Case {
            name: format!("{n} audit catches a planted {rule}"),
            args: a,
            code: 1,
            expect: vec![
                format!("(XEN) audit: planted a violation ({rule}) to be caught"),
                line,
                "hvmm: FAILED: boot failed in address-space audit (Active)".into(),
            ],
        });
    }
    let mut a = base(arch);
    a.bootargs = Some("hvmm.audit-plant=nonsense".into());
    v.push(Case {
        name: format!("{n} audit refuses an unknown plant"),
        args: a,
        code: 1,
        expect: vec![format!(
            "hvmm: FAILED: hvmm.audit-plant=nonsense: not a violation the audit knows ({})",
            hvmm_boot::audit::PlantNames
        )],
    });

    // SMP stress: 4 CPUs update own and shared regions concurrently under the
    // engine's lock and check by AT what they see (arm32: domain-page slots
    // hammered from every CPU).
    let mut a = base(arch);
    a.smp = 4;
    a.bootargs = Some("hvmm.stress=300".into());
    let mut expect = ok_lines(arch, default_pa, 4);
    expect.push("(XEN) SMP stress: 4 CPUs x 300 iterations:".into());
    expect.push("no inconsistency".into());
    if arch == Arch::Arm32 {
        expect.push(" 9600 domain-page maps".into());
    }
    v.push(Case {
        name: format!("{n} SMP stress smp4"),
        args: a,
        code: 0,
        expect,
    });

    // Domain 0: hvmm's test guest under hvmm's stage 2. It checks its RAM,
    // an injected abort for hvmm's memory, the UART, a live split by another
    // CPU (write-protect) and PSCI with every vCPU, then powers off.
    {
        for (loader, smp) in [(Loader::Direct, 1), (Loader::Direct, 4), (Loader::Uboot, 4)] {
            let mut a = base(arch);
            a.smp = smp;
            a.loader = loader;
            a.guest = Some(crate::qemu::GuestKind::Test);
            let mut expect: Vec<String> = [
                "(XEN) *** LOADING DOMAIN 0 ***",
                "hvmm: entering dom0 at IPA",
                "hvmm-guest: ram: ok",
                "is not dom0's: synchronous external abort injected",
                "hvmm-guest: probe: ok",
                "hvmm-guest: wp: ok",
                "made read-only while the guest runs: 1 split(s)",
                "hvmm-guest: psci: ok",
                "hvmm-guest: PASS",
                "hvmm: dom0 powered off (PSCI SYSTEM_OFF)",
            ]
            .map(String::from)
            .to_vec();
            if smp > 1 {
                expect.push(format!("{} other CPU(s) started", smp - 1));
            }
            let through = if loader == Loader::Uboot {
                expect.extend(uboot::handover_lines(arch));
                " through real U-Boot"
            } else {
                ""
            };
            v.push(Case {
                name: format!("{n} dom0 test guest{through} smp{smp}"),
                args: a,
                code: 0,
                expect,
            });
        }
        // Debian's Linux as domain 0 with xtask's initramfs (arm64, and
        // armmp-lpae on arm32), U-Boot style and (arm64) through the real
        // GRUB + UEFI (untyped `xen_module`s).
        let mut linux = vec![(Loader::UbootSim, 1), (Loader::UbootSim, 4)];
        if arch == Arch::Arm64 {
            linux.push((Loader::Grub, 4));
        }
        for (loader, smp) in linux {
            let mut a = base(arch);
            a.smp = smp;
            a.loader = loader;
            a.guest = Some(crate::qemu::GuestKind::Linux);
            a.timeout = 120;
            let mut expect: Vec<String> = [
                "(XEN) *** LOADING DOMAIN 0 ***",
                "(XEN) dom0: initrd at",
                "Booting Linux on physical CPU",
                crate::linux::INIT_LINE,
                "hvmm: dom0 powered off (PSCI SYSTEM_OFF)",
            ]
            .map(String::from)
            .to_vec();
            expect.push(format!("smp: Brought up 1 node, {smp} CPU"));
            v.push(Case {
                name: format!("{n} dom0 Debian Linux {} smp{smp}", loader_name(loader)),
                args: a,
                code: 0,
                expect,
            });
        }
        if arch == Arch::Arm64 {
            let mut a = base(arch);
            a.loader = Loader::Grub;
            a.guest = Some(crate::qemu::GuestKind::Test);
            v.push(Case {
                name: format!("{n} dom0 test guest through GRUB smp1"),
                args: a,
                code: 0,
                expect: vec!["hvmm-guest: wp: ok".into(), "hvmm-guest: PASS".into()],
            });
        }
    }
    if arch == Arch::Arm64 {
        v.extend(secret_free_cases());
    } else {
        // arm32 has no direct map to remove: the option is refused by name.
        let mut a = base(arch);
        a.bootargs = Some("hvmm.directmap=off".into());
        v.push(Case {
            name: format!("{n} secret-free refused by name"),
            args: a,
            code: 1,
            expect: vec![
                "(XEN) PANIC: boot failed in ".into(),
                "the secret-free mode (no direct map) exists on arm64 only: arm32 keeps its xenheap mapped".into(),
            ],
        });
    }
    v
}

/// What every secret-free boot (`hvmm.directmap=off`) prints: no direct
/// map, tables through the mapcache, the image's tables sealed, every
/// CPU on its own root, no slot held at the end.
fn secret_free_lines(pa: u64, cpus: u32) -> Vec<String> {
    let mut v: Vec<String> = base_lines(pa, cpus);
    v.extend(
        [
            "(XEN) secret-free: DTB mapping trimmed to its ",
            "(XEN) secret-free: no direct map of the ",
            "(XEN) page tables are now reached through image+mapcache",
            "read-only: every table page is written through a mapcache slot",
            // text, rodata, data around the sealed tables, the frametable.
            "(XEN) verified 6 regions",
            // The audit with the mode's two rules, a root per CPU.
            "no RAM outside the allowed set, no page table writable through a permanent mapping",
            " of them writable through a permanent mapping",
        ]
        .map(String::from),
    );
    v.push(format!("(XEN) audit: {cpus} root"));
    v.push(format!(
        "hvmm: secret-free: no direct map, {cpus} CPU roots, CPU 0 holds no mapcache slot"
    ));
    v
}

/// The arm64 secret-free mode through every boot path: direct (1 and 4
/// CPUs, above 4 GiB), real U-Boot, real GRUB + UEFI (1 and 4 CPUs, 1 and
/// 4 GiB), the SMP stress (each CPU's slots hammered too), a fault in
/// Active, and domain 0 (hvmm's test guest: its vCPUs started by CPU_ON
/// after the image's tables are read-only, the live split by CPU 1 through
/// its own slots; Debian's Linux through GRUB).
fn secret_free_cases() -> Vec<Case> {
    const ARGS: &str = "hvmm.directmap=off";
    let arch = Arch::Arm64;
    let default_pa = 0x4020_0000u64;
    let mut v = Vec::new();
    let mut push = |name: String, a: QemuArgs, code: i32, expect: Vec<String>| {
        v.push(Case {
            name: format!("arm64 secret-free {name}"),
            args: a,
            code,
            expect,
        })
    };
    for smp in [1, 4] {
        let mut a = base(arch);
        a.smp = smp;
        a.bootargs = Some(ARGS.into());
        push(
            format!("direct -kernel smp{smp}"),
            a,
            0,
            secret_free_lines(default_pa, smp),
        );
    }
    let mut a = base(arch);
    a.load_addr = Some(0x2_0000_5000);
    a.ram = "8G".into();
    a.smp = 4;
    a.bootargs = Some(ARGS.into());
    push(
        "direct at 0x200005000 ram 8G smp4".into(),
        a,
        0,
        secret_free_lines(0x2_0000_5000, 4),
    );
    let mut a = base(arch);
    a.loader = Loader::Uboot;
    a.load_addr = Some(0x4800_1000);
    a.smp = 4;
    let bootargs = format!("console=hvc0 hvmm.test=uboot {ARGS}");
    a.bootargs = Some(bootargs.clone());
    let runs_at = uboot::BootCmd::of(&a).map_or(0x4800_1000, |c| uboot::runs_at(c, 0x4800_1000));
    let mut expect = secret_free_lines(runs_at, 4);
    expect.extend(module_lines(&bootargs));
    expect.extend(uboot::handover_lines(arch));
    push("uboot at 0x48001000 ram 1G smp4".into(), a, 0, expect);
    for (ram, smp) in [("1G", 1), ("4G", 4)] {
        let mut a = base(arch);
        a.loader = Loader::Grub;
        a.ram = ram.into();
        a.smp = smp;
        a.bootargs = Some(format!("console=dtuart hvmm.test=grub {ARGS}"));
        // GRUB places the image near the top of RAM: the lines without
        // the load address.
        let mut expect: Vec<String> = secret_free_lines(0, smp)
            .into_iter()
            .filter(|l| !l.starts_with("image at PA"))
            .collect();
        expect.extend(
            [
                "hvmm: EFI entry: finding the device tree, exiting boot services",
                " XSM policy (guessed by reading its first bytes)",
                " 4 bytes) in EarlyBoot via fixmap slot 1: table maps image ",
            ]
            .map(String::from),
        );
        push(format!("grub+uefi ram {ram} smp{smp}"), a, 0, expect);
    }
    let mut a = base(arch);
    a.smp = 4;
    a.bootargs = Some(format!("hvmm.stress=300 {ARGS}"));
    let mut expect = secret_free_lines(default_pa, 4);
    expect.push("(XEN) SMP stress: 4 CPUs x 300 iterations:".into());
    expect.push("no inconsistency".into());
    // 8 mapcache maps per iteration per CPU, each checked unmapped after.
    expect.push(" 9600 domain-page maps".into());
    push("SMP stress smp4".into(), a, 0, expect);
    let mut a = base(arch);
    a.bootargs = Some(format!("hvmm.fault=active {ARGS}"));
    push(
        "deliberate fault in Active".into(),
        a,
        3,
        [
            "(XEN) hvmm: reached Active",
            "hvmm: EXCEPTION on CPU 0",
            "hvmm:   phase: Active",
            "translation fault (FSC 0x06) at level 2, on a read",
            "FAR_EL2=0x100bac",
        ]
        .map(String::from)
        .to_vec(),
    );
    // The audit with a planted W+X page: planted through a slot, the
    // image's tables being read-only by then.
    let mut a = base(arch);
    a.smp = 2;
    a.bootargs = Some(format!("hvmm.audit-plant=wx {ARGS}"));
    push(
        "audit catches a planted W+X page".into(),
        a,
        1,
        vec![
            "(XEN) audit: planted a violation (W+X page) to be caught".into(),
            format!(
                "audit: W+X page: VA 0x0000000000a0e000 (4 KiB at level 3) -> PA {default_pa:#018x}, RWX Normal"
            ),
            "hvmm: FAILED: boot failed in address-space audit (Active)".into(),
        ],
    );
    let mut a = base(arch);
    a.smp = 4;
    a.guest = Some(crate::qemu::GuestKind::Test);
    a.bootargs = Some(ARGS.into());
    push(
        "dom0 test guest smp4".into(),
        a,
        0,
        [
            "(XEN) secret-free: no direct map of the ",
            "(XEN) *** LOADING DOMAIN 0 ***",
            "hvmm: secret-free: no direct map, 4 CPU roots, CPU 0 holds no mapcache slot",
            "hvmm-guest: ram: ok",
            "hvmm-guest: probe: ok",
            "hvmm-guest: wp: ok",
            "made read-only while the guest runs: 1 split(s)",
            "hvmm-guest: psci: ok",
            "3 other CPU(s) started",
            "hvmm-guest: PASS",
            "hvmm: dom0 powered off (PSCI SYSTEM_OFF)",
        ]
        .map(String::from)
        .to_vec(),
    );
    let mut a = base(arch);
    a.smp = 4;
    a.loader = Loader::Grub;
    a.guest = Some(crate::qemu::GuestKind::Linux);
    a.timeout = 120;
    a.bootargs = Some(format!("console=dtuart hvmm.test=grub {ARGS}"));
    push(
        "dom0 Debian Linux grub smp4".into(),
        a,
        0,
        [
            "(XEN) secret-free: no direct map of the ",
            "(XEN) *** LOADING DOMAIN 0 ***",
            "(XEN) dom0: initrd at",
            "Booting Linux on physical CPU",
            crate::linux::INIT_LINE,
            "smp: Brought up 1 node, 4 CPU",
            "hvmm: dom0 powered off (PSCI SYSTEM_OFF)",
        ]
        .map(String::from)
        .to_vec(),
    );
    v
}

/// Runs the matrix; returns the exit code.
pub fn test_qemu(only: Option<Arch>, verbose: bool, filter: Option<&str>) -> Result<i32> {
    setup::setup()?;
    let wanted = |name: &str| filter.is_none_or(|f| name.contains(f));
    let arches: Vec<Arch> = match only {
        Some(a) => vec![a],
        None => vec![Arch::Arm64, Arch::Arm32],
    };
    let (mut passed, mut failed) = (0usize, 0usize);
    for arch in arches {
        let img = match image::build(arch) {
            Ok(i) => i,
            Err(e) => {
                println!("FAIL {} image build: {e:#}", arch.name());
                failed += 1;
                continue;
            }
        };
        println!("== {} image: {}", arch.name(), img.bin.display());
        for case in cases(arch).into_iter().filter(|c| wanted(&c.name)) {
            if run_case(&case, &img, verbose) {
                passed += 1;
            } else {
                failed += 1;
            }
        }
        if arch == Arch::Arm64 {
            // Through the real GRUB and UEFI firmware (crate::grub).
            let (p, f) = crate::grub::test_cases(&img, verbose, &wanted);
            passed += p;
            failed += f;
            // The ZCU102: RAM at 0, loads sharing table slots with the link
            // address (crate::zcu102).
            let (p, f) = crate::zcu102::test_cases(&img, verbose, &wanted);
            passed += p;
            failed += f;
        }
        let (p, f) = big_image_cases(arch, verbose, &wanted);
        passed += p;
        failed += f;
    }
    for arch in [Arch::Arm64, Arch::Arm32]
        .into_iter()
        .filter(|a| only.is_none_or(|o| o == *a))
    {
        type Check = Box<dyn Fn() -> Result<String>>;
        let n = arch.name();
        let mut checks: Vec<(String, Check)> = vec![
            (
                format!("{n} real U-Boot refuses an image without its loader magic"),
                Box::new(move || {
                    image::build(arch)
                        .and_then(|img| uboot::refuses_image_without_magic(arch, &img))
                        .map(|s| format!("{s:.2} s"))
                }),
            ),
            (
                format!("{n} real U-Boot boot script stops at a missing module"),
                Box::new(move || {
                    image::build(arch)
                        .and_then(|img| uboot::stops_at_a_missing_module(arch, &img))
                        .map(|s| format!("{s:.2} s"))
                }),
            ),
            (
                format!("{n} boot log on QEMU == boot log on the model"),
                Box::new(move || {
                    image::build(arch)
                        .and_then(|img| crate::compare::compare(arch, &img, false))
                        .map(|lines| format!("{lines} lines"))
                }),
            ),
        ];
        if arch == Arch::Arm64 {
            checks.push((
                format!("{n} secret-free boot log on QEMU == boot log on the model"),
                Box::new(move || {
                    image::build(arch)
                        .and_then(|img| crate::compare::compare(arch, &img, true))
                        .map(|lines| format!("{lines} lines"))
                }),
            ));
        }
        for (name, check) in checks.into_iter().filter(|(name, _)| wanted(name)) {
            match check() {
                Ok(what) => {
                    passed += 1;
                    println!("PASS {name} ({what})");
                }
                Err(e) => {
                    failed += 1;
                    println!("FAIL {name}: {e:#}");
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Runs one case on `img`; prints PASS or FAIL (and the console when it
/// failed or `verbose`); whether it passed.
fn run_case(case: &Case, img: &image::Image, verbose: bool) -> bool {
    let r = qemu::run_image(&case.args, img, false);
    let problems: Vec<String> = match &r {
        Err(e) => vec![format!("{e:#}")],
        Ok(o) => {
            let mut p = Vec::new();
            if o.timed_out {
                p.push(format!("timed out after {} s", case.args.timeout));
            } else if o.stopped {
                p.push(qemu::stop_reason(case.args.loader, &o.output));
            } else if o.code != Some(case.code) {
                p.push(format!("exit code {:?}, expected {}", o.code, case.code));
            }
            for e in &case.expect {
                if !o.output.contains(e.as_str()) {
                    p.push(format!("missing {e:?}"));
                }
            }
            p.extend(audit_problem(&o.output));
            p
        }
    };
    let secs = r.as_ref().map(|o| o.elapsed.as_secs_f64()).unwrap_or(0.0);
    if problems.is_empty() {
        println!("PASS {} ({secs:.2} s)", case.name);
    } else {
        println!("FAIL {} ({secs:.2} s): {}", case.name, problems.join("; "));
    }
    if let Ok(o) = &r {
        if verbose || !problems.is_empty() {
            println!("  $ {}", o.command);
            for l in o.output.lines() {
                println!("  | {l}");
            }
        }
    }
    problems.is_empty()
}

/// The `big-image` variant (6 MiB more of BSS, so the image spans all four
/// level-3 tables of its 8 MiB range): a direct boot at a 4 KiB-aligned
/// address with 4 CPUs, and on arm64 the ZCU102 one page above the link
/// address (the head then turns the MMU on from the image's last page).
fn big_image_cases(arch: Arch, verbose: bool, wanted: &dyn Fn(&str) -> bool) -> (usize, usize) {
    let n = arch.name();
    let pa = 0x4010_1000;
    let mut a = base(arch);
    a.load_addr = Some(pa);
    a.smp = 4;
    let mut expect = ok_lines(arch, pa, 4);
    expect.push("hvmm: boot checks passed".into());
    let direct = Case {
        name: format!("{n} 7 MiB image (big-image) direct at {pa:#x} smp4"),
        args: a,
        code: 0,
        expect,
    };
    let zcu = format!("{n} 7 MiB image (big-image) zcu102 at 0x201000 smp4");
    let run_direct = wanted(&direct.name);
    let run_zcu = arch == Arch::Arm64 && wanted(&zcu);
    if !run_direct && !run_zcu {
        return (0, 0);
    }
    let img = match image::build_variant(arch, true) {
        Ok(i) if i.mem_size > 6 << 20 => i,
        Ok(i) => {
            println!(
                "FAIL {n} big-image build: {} bytes, not above 6 MiB",
                i.mem_size
            );
            return (0, 1);
        }
        Err(e) => {
            println!("FAIL {n} big-image build: {e:#}");
            return (0, 1);
        }
    };
    let (mut passed, mut failed) = (0, 0);
    if run_direct {
        if run_case(&direct, &img, verbose) {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    if run_zcu {
        let r = crate::zcu102::run(&img, 0x20_1000, 4, std::time::Duration::from_secs(60));
        let missing: Vec<String> = match &r {
            Ok(o) if o.code == Some(0) => crate::zcu102::ok_lines(0x20_1000, 4)
                .into_iter()
                .filter(|l| !o.output.contains(l.as_str()))
                .chain(audit_problem(&o.output))
                .collect(),
            Ok(o) => vec![format!("exit code {:?}", o.code)],
            Err(e) => vec![format!("{e:#}")],
        };
        if missing.is_empty() {
            passed += 1;
            println!("PASS {zcu}");
        } else {
            failed += 1;
            println!("FAIL {zcu}: {}", missing.join("; "));
            if let Ok(o) = &r {
                for l in o.output.lines() {
                    println!("  | {l}");
                }
            }
        }
        let _ = verbose;
    }
    (passed, failed)
}

#[cfg(test)]
mod tests {
    use super::audit_problem;

    #[test]
    fn a_boot_that_reached_active_needs_the_audit_line() {
        let active = "(XEN) ---- system state: Active ----\n";
        let line = format!(
            "(XEN) audit: 1 root (4 CPUs), 468 leaves (265677 pages): {}\n",
            hvmm_boot::audit::RULES
        );
        assert!(audit_problem(active).is_some());
        assert_eq!(audit_problem(&format!("{active}{line}")), None);
        // Not at the start of a line, or without the rules: not the line.
        assert!(audit_problem(&format!("{active}x{line}")).is_some());
        assert!(audit_problem(&format!("{active}(XEN) audit: 1 root\n")).is_some());
        // A boot that stopped before Active (a deliberate early fault).
        assert_eq!(audit_problem("hvmm: EXCEPTION on CPU 0\n"), None);
    }
}
