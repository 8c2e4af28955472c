//! The checks, in order: RAM, the probe address, device memory, live
//! write-protect, PSCI. Each prints one line,
//! `hvmm-guest: <check>: ok|FAIL|skipped <details>`.

use crate::arch::{self, Fault};
use crate::fault;
use crate::mm::{self, Attr, PAGE};
use crate::platform::{Arg, Platform};
use crate::psci;
use core::sync::atomic::{AtomicUsize, Ordering};

/// RAM pages tested per bank (spread from its first to its last page).
const PAGES_PER_BANK: u64 = 16;
/// Most RAM pages tested.
const MAX_TEST_PAGES: usize = 64;
/// Other pages written during the write-protect check.
const WP_OTHERS: usize = 8;
/// In the self-test, the write that the guest's own stage 1 makes fault.
const WP_SELFTEST_AT: u64 = 1000;
/// How long the write-protect check waits for the fault.
const WP_TIMEOUT_MS: u64 = 10_000;
/// How long the primary waits for the secondaries.
const SMP_TIMEOUT_MS: u64 = 5_000;
/// Window slots: 0 RAM pages, 1 the probe, 2-3 the UART aliases, 4 the
/// write-protected page, 5.. the other pages of that check.
const SLOT_RAM: usize = 0;
const SLOT_PROBE: usize = 1;
const SLOT_UART_DEVICE: usize = 2;
const SLOT_UART_NORMAL: usize = 3;
const SLOT_WP: usize = 4;
const SLOT_WP_OTHERS: usize = 5;
/// The PL011 flag register plus one: a side-effect-free unaligned target.
const UART_UNALIGNED: usize = 0x19;

/// What a check's line says.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Fail,
    Skipped,
}

/// What the checks need.
pub struct Context<'a> {
    /// The board.
    pub platform: &'a Platform<'a>,
    /// Ranges no check may write: the image (BSS, tables, stacks included)
    /// and the DTB.
    pub avoid: [(u64, u64); 2],
}

impl Context<'_> {
    fn avoided(&self, addr: u64, len: u64) -> bool {
        self.avoid
            .iter()
            .any(|&(s, e)| addr < e && s < addr.saturating_add(len))
    }
}

fn report(check: &str, o: Outcome, details: core::fmt::Arguments<'_>) -> usize {
    let word = match o {
        Outcome::Ok => "ok",
        Outcome::Fail => "FAIL",
        Outcome::Skipped => "skipped",
    };
    println!("hvmm-guest: {check}: {word} {details}");
    usize::from(o == Outcome::Fail)
}

/// Milliseconds since an arbitrary start.
fn now_ms() -> u64 {
    let (count, freq) = arch::counter();
    let freq = if freq == 0 { 62_500_000 } else { freq };
    count / (freq / 1000).max(1)
}

/// Identity maps the RAM (Normal) and the image's physical range, which
/// secondary CPUs execute from with the MMU off. Returns 1 on failure.
pub fn identity_map(p: &Platform<'_>) -> usize {
    for &(base, size) in p.ram() {
        let start = base.div_ceil(PAGE) * PAGE;
        let end = (base + size).min(arch::VA_LIMIT) & !(PAGE - 1);
        if end > start {
            if let Err(e) = mm::map(start as usize, start, end - start, Attr::Normal) {
                return report(
                    "ram",
                    Outcome::Fail,
                    format_args!("identity map of {start:#x}-{end:#x}: {e}"),
                );
            }
        }
    }
    let (s, e) = mm::image_pa();
    let (s, e) = (s & !(PAGE - 1), e.div_ceil(PAGE) * PAGE);
    if let Err(err) = mm::map(s as usize, s, e - s, Attr::Normal) {
        return report(
            "ram",
            Outcome::Fail,
            format_args!("identity map of the image {s:#x}-{e:#x}: {err}"),
        );
    }
    0
}

/// Runs the checks; returns how many failed.
pub fn run_all(c: &Context<'_>) -> usize {
    let mut pages = [0u64; MAX_TEST_PAGES];
    let n = test_pages(c, &mut pages);
    let pages = &pages[..n];
    ram(c, pages) + probe(c) + device(c) + write_protect(c, pages) + psci_smp(c)
}

/// Pages spread over every RAM bank, avoiding the image, the DTB and the
/// write-protect page.
fn test_pages(c: &Context<'_>, out: &mut [u64; MAX_TEST_PAGES]) -> usize {
    let wp = match c.platform.wp {
        Arg::Value(v) => Some(v & !(PAGE - 1)),
        _ => None,
    };
    let mut n = 0;
    for &(base, size) in c.platform.ram() {
        let first = base.div_ceil(PAGE);
        let last = (base + size) / PAGE;
        if last <= first {
            continue;
        }
        let pages = last - first;
        for k in 0..PAGES_PER_BANK.min(pages) {
            let step = (pages - 1) / (PAGES_PER_BANK - 1).max(1);
            let page = (first + k * step) * PAGE;
            let dup = out[..n].contains(&page);
            if dup || c.avoided(page, PAGE) || Some(page) == wp || n == MAX_TEST_PAGES {
                continue;
            }
            out[n] = page;
            n += 1;
        }
    }
    n
}

fn pattern(ipa: u64, word: usize) -> u64 {
    ipa ^ (word as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a_0000_0000_5a5a
}

fn words(va: usize) -> *mut u64 {
    va as *mut u64
}

fn fill(va: usize, ipa: u64) {
    for i in 0..(PAGE as usize / 8) {
        // SAFETY: `va` maps the RAM page `ipa` (identity or a window), a
        // page of the guest's own RAM outside its image and DTB.
        unsafe { core::ptr::write_volatile(words(va).add(i), pattern(ipa, i)) };
    }
}

/// The first word that differs from `expected(word)`, if any.
fn verify(va: usize, expected: impl Fn(usize) -> u64) -> Option<(usize, u64, u64)> {
    (0..(PAGE as usize / 8)).find_map(|i| {
        // SAFETY: as in `fill`.
        let got = unsafe { core::ptr::read_volatile(words(va).add(i)) };
        (got != expected(i)).then_some((i, got, expected(i)))
    })
}

/// Check 1: write and read back a pattern in pages spread over the RAM.
fn ram(c: &Context<'_>, pages: &[u64]) -> usize {
    if pages.is_empty() {
        return report(
            "ram",
            Outcome::Fail,
            format_args!("no RAM page to test in /memory"),
        );
    }
    let mut windowed = 0;
    for &ipa in pages {
        match mm::reach(SLOT_RAM, ipa, Attr::Normal) {
            Ok(va) => {
                windowed += usize::from(va as u64 != ipa);
                fill(va, ipa);
            }
            Err(e) => return report("ram", Outcome::Fail, format_args!("page {ipa:#x}: {e}")),
        }
    }
    // Read back only after every page was written: aliases show too.
    for &ipa in pages {
        let va = match mm::reach(SLOT_RAM, ipa, Attr::Normal) {
            Ok(va) => va,
            Err(e) => return report("ram", Outcome::Fail, format_args!("page {ipa:#x}: {e}")),
        };
        if let Some((i, got, want)) = verify(va, |i| pattern(ipa, i)) {
            return report(
                "ram",
                Outcome::Fail,
                format_args!("page {ipa:#x} word {i}: read {got:#x}, wrote {want:#x}"),
            );
        }
    }
    let (lo, hi) = (pages.iter().min(), pages.iter().max());
    report(
        "ram",
        Outcome::Ok,
        format_args!(
            "{} pages written and read back, {:#x}..{:#x} ({} through a window), {} RAM range(s)",
            pages.len(),
            lo.copied().unwrap_or(0),
            hi.copied().unwrap_or(0) + PAGE,
            windowed,
            c.platform.ram().len()
        ),
    )
}

/// A fault, for a report line.
struct Described(Fault);

impl core::fmt::Display for Described {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let x = &self.0;
        write!(
            f,
            "{} (status {:#04x}, syndrome {:#x}), FAR {:#x}",
            x.status_name(),
            x.status,
            x.syndrome,
            x.far
        )
    }
}

fn describe(f: &Fault) -> Described {
    Described(*f)
}

/// Check 2: reading `hvmm.probe` (an IPA that is not the guest's) gives a
/// synchronous external abort (or a translation fault) at that address.
fn probe(c: &Context<'_>) -> usize {
    let ipa = match c.platform.probe {
        Arg::Missing => {
            return report(
                "probe",
                Outcome::Skipped,
                format_args!("(no hvmm.probe=<hex IPA> in /chosen/bootargs)"),
            )
        }
        Arg::Bad(s) => {
            return report(
                "probe",
                Outcome::Fail,
                format_args!("hvmm.probe={s} is not a hexadecimal address"),
            )
        }
        Arg::Value(v) => v & !3,
    };
    if c.platform.in_ram(ipa, 4) {
        return report(
            "probe",
            Outcome::Fail,
            format_args!("hvmm.probe={ipa:#x} lies inside the guest's RAM (/memory)"),
        );
    }
    let page = ipa & !(PAGE - 1);
    let va = if mm::identity_possible(page, PAGE)
        && mm::map(page as usize, page, PAGE, Attr::Device).is_ok()
    {
        Ok(ipa as usize)
    } else {
        mm::window(SLOT_PROBE, ipa, Attr::Device)
    };
    let va = match va {
        Ok(va) => va,
        Err(e) => {
            return report(
                "probe",
                Outcome::Fail,
                format_args!("mapping {ipa:#x}: {e}"),
            )
        }
    };
    let mut value = 0;
    let Some(f) = fault::expect(|| value = arch::probe_load32(va)) else {
        return report(
            "probe",
            Outcome::Fail,
            format_args!("reading {ipa:#x} (VA {va:#x}) returned {value:#x} without an abort"),
        );
    };
    let status_ok = f.status == arch::STATUS_EXTERNAL || arch::is_translation(f.status);
    let o = if f.data_abort && status_ok && f.far == va && !f.write {
        Outcome::Ok
    } else {
        Outcome::Fail
    };
    report(
        "probe",
        o,
        format_args!(
            "reading {ipa:#x} (VA {va:#x}) took a data abort: {}",
            describe(&f)
        ),
    )
}

/// Check 3: the UART prints (this line is the proof), and where the CPU
/// raises alignment faults on Device memory, an unaligned read through a
/// Normal stage-1 alias of the UART faults too because stage 2 makes it
/// Device.
fn device(c: &Context<'_>) -> usize {
    let Some(uart) = c.platform.uart else {
        return report("device", Outcome::Fail, format_args!("no PL011 in the DTB"));
    };
    let aliases = (
        mm::window(SLOT_UART_DEVICE, uart, Attr::Device),
        mm::window(SLOT_UART_NORMAL, uart, Attr::Normal),
    );
    let (Ok(dev), Ok(normal)) = aliases else {
        return report(
            "device",
            Outcome::Fail,
            format_args!("cannot map the UART aliases"),
        );
    };
    let dev_fault = fault::expect(|| {
        arch::probe_load16(dev + UART_UNALIGNED);
    });
    let normal_fault = fault::expect(|| {
        arch::probe_load16(normal + UART_UNALIGNED);
    });
    mm::unmap_window(SLOT_UART_NORMAL);
    let aligned = |f: &Option<Fault>| {
        f.as_ref()
            .is_some_and(|f| f.data_abort && f.status == arch::STATUS_ALIGNMENT)
    };
    let prints = format_args!("the PL011 at {uart:#x} prints (Device-nGnRnE at stage 1);");
    if !aligned(&dev_fault) {
        return report(
            "device",
            Outcome::Ok,
            format_args!(
                "{prints} stage-2 memory type not observable: an unaligned read of a stage-1 \
                 Device mapping did not fault{} (this CPU model does not raise Device alignment faults)",
                match dev_fault {
                    Some(_) => " with an alignment fault",
                    None => "",
                }
            ),
        );
    }
    match (aligned(&normal_fault), arch::el2_implemented()) {
        (true, _) => report(
            "device",
            Outcome::Ok,
            format_args!(
                "{prints} an unaligned read through a Normal stage-1 alias took an alignment \
                 fault: stage 2 makes the UART Device memory"
            ),
        ),
        (false, true) => report(
            "device",
            Outcome::Fail,
            format_args!(
                "{prints} an unaligned read through a Normal stage-1 alias did not fault: \
                 stage 2 maps the UART as Normal memory"
            ),
        ),
        (false, false) => report(
            "device",
            Outcome::Ok,
            format_args!(
                "{prints} Device alignment faults are raised; the Normal alias does not fault \
                 (no EL2 implemented: no stage 2 here)"
            ),
        ),
    }
}

/// The marker written to word `n % 512` of other page `j` in iteration `n`.
fn marker(n: u64, j: usize) -> u64 {
    (n << 32) | 0xabc0_0000 | j as u64
}

/// Check 4: hvmm write-protects `hvmm.wp` from another CPU while this one
/// keeps writing; the first write that faults must be a permission fault at
/// that page, and every other write must have landed.
fn write_protect(c: &Context<'_>, pages: &[u64]) -> usize {
    let wp = match c.platform.wp {
        Arg::Missing => {
            return report(
                "wp",
                Outcome::Skipped,
                format_args!("(no hvmm.wp=<hex IPA> in /chosen/bootargs)"),
            )
        }
        Arg::Bad(s) => {
            return report(
                "wp",
                Outcome::Fail,
                format_args!("hvmm.wp={s} is not a hexadecimal address"),
            )
        }
        Arg::Value(v) => v & !(PAGE - 1),
    };
    if !c.platform.in_ram(wp, PAGE) || c.avoided(wp, PAGE) {
        return report(
            "wp",
            Outcome::Fail,
            format_args!("hvmm.wp={wp:#x} is not a free page of the guest's RAM"),
        );
    }
    let selftest = c.platform.wp_selftest;
    // The self-test needs the page under a 4 KiB entry of its own: a window.
    let wva = if selftest {
        mm::window(SLOT_WP, wp, Attr::Normal)
    } else {
        mm::reach(SLOT_WP, wp, Attr::Normal)
    };
    let wva = match wva {
        Ok(va) => va,
        Err(e) => return report("wp", Outcome::Fail, format_args!("mapping {wp:#x}: {e}")),
    };
    let mut others = [(0u64, 0usize); WP_OTHERS];
    let mut count = 0;
    for &ipa in pages.iter().filter(|&&p| p != wp).take(WP_OTHERS) {
        match mm::reach(SLOT_WP_OTHERS + count, ipa, Attr::Normal) {
            Ok(va) => {
                fill(va, ipa);
                others[count] = (ipa, va);
                count += 1;
            }
            Err(e) => return report("wp", Outcome::Fail, format_args!("mapping {ipa:#x}: {e}")),
        }
    }
    let others = &others[..count];
    // The page as this CPU last wrote it, word by word.
    let mut expected = [0u32; PAGE as usize / 4];
    for (i, e) in expected.iter_mut().enumerate() {
        *e = i as u32 ^ 0x5a5a_0000;
        arch::probe_store32(wva + 4 * i, *e);
    }

    let r = if selftest {
        0
    } else {
        psci::call(psci::HVMM_WRITE_PROTECT, wp, 0, 0)
    };
    if r == psci::NOT_SUPPORTED {
        return report(
            "wp",
            Outcome::Skipped,
            format_args!(
                "(HVC {:#x} returned NOT_SUPPORTED: no hvmm write-protect service)",
                psci::HVMM_WRITE_PROTECT
            ),
        );
    }
    if r < 0 {
        return report(
            "wp",
            Outcome::Fail,
            format_args!(
                "HVC {:#x} for {wp:#x} returned {r}",
                psci::HVMM_WRITE_PROTECT
            ),
        );
    }

    let start = now_ms();
    let mut n: u64 = 0;
    let f = loop {
        let word = (n % 512) as usize;
        for (j, &(ipa, va)) in others.iter().enumerate() {
            let p = words(va);
            // SAFETY: `va` maps a RAM page of the guest's own (see `fill`).
            let got = unsafe {
                core::ptr::write_volatile(p.add(word), marker(n, j));
                core::ptr::read_volatile(p.add(word))
            };
            if got != marker(n, j) {
                return report(
                    "wp",
                    Outcome::Fail,
                    format_args!(
                        "page {ipa:#x} word {word}: read {got:#x} right after writing {:#x}",
                        marker(n, j)
                    ),
                );
            }
        }
        if selftest && n == WP_SELFTEST_AT {
            mm::protect_window(SLOT_WP);
        }
        let slot = (n % 1024) as usize;
        let value = n as u32 | 0x8000_0000;
        if let Some(f) = fault::expect(|| arch::probe_store32(wva + 4 * slot, value)) {
            break (f, slot);
        }
        expected[slot] = value;
        n += 1;
        if now_ms().wrapping_sub(start) > WP_TIMEOUT_MS {
            return report(
                "wp",
                Outcome::Fail,
                format_args!(
                    "no permission fault on {wp:#x} after {n} writes in {WP_TIMEOUT_MS} ms"
                ),
            );
        }
    };
    let (f, slot) = f;
    let elapsed = now_ms().wrapping_sub(start);
    let at = wva + 4 * slot;
    if !(f.data_abort && arch::is_permission(f.status) && f.write && f.far == at) {
        return report(
            "wp",
            Outcome::Fail,
            format_args!("write {n} to {at:#x} took the wrong abort: {} (want a permission fault on a write, FAR {at:#x})", describe(&f)),
        );
    }
    // Every other write landed: the other pages hold the last markers over
    // the pattern, the protected page what was written before the fault.
    for (j, &(ipa, va)) in others.iter().enumerate() {
        // Iterations 0..=n wrote word m % 512; the latest one wins.
        let expect = |w: usize| {
            let w64 = w as u64;
            if w64 > n {
                pattern(ipa, w)
            } else {
                marker(w64 + 512 * ((n - w64) / 512), j)
            }
        };
        if let Some((w, got, want)) = verify(va, expect) {
            return report(
                "wp",
                Outcome::Fail,
                format_args!(
                    "after the fault, page {ipa:#x} word {w} reads {got:#x}, not {want:#x}"
                ),
            );
        }
    }
    for (i, &e) in expected.iter().enumerate() {
        let got = arch::probe_load32(wva + 4 * i);
        if got != e {
            return report(
                "wp",
                Outcome::Fail,
                format_args!("after the fault, {wp:#x} word {i} reads {got:#x}, not {e:#x} (a write before the protection was lost)"),
            );
        }
    }
    report(
        "wp",
        Outcome::Ok,
        format_args!(
            "{}; write {n} to {at:#x} took {} after {elapsed} ms; \
             {} other pages and every earlier write intact",
            Service(selftest, r),
            describe(&f),
            others.len()
        ),
    )
}

/// Who write-protected the page, for the report.
struct Service(bool, i32);

impl core::fmt::Display for Service {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Service(true, _) => write!(
                f,
                "self-test: the guest's own stage 1 made the page read-only before write {WP_SELFTEST_AT}"
            ),
            Service(false, r) => write!(f, "HVC {:#x} returned {r}", psci::HVMM_WRITE_PROTECT),
        }
    }
}

/// Secondaries that reached Rust.
static UP: AtomicUsize = AtomicUsize::new(0);

/// A secondary CPU: says it is up, counts itself in, turns itself off.
pub fn secondary(slot: usize) -> ! {
    println!("hvmm-guest: cpu {slot} up (MPIDR {:#x})", arch::mpidr());
    UP.fetch_add(1, Ordering::SeqCst);
    let r = psci::call(psci::CPU_OFF, 0, 0, 0);
    println!("hvmm-guest: cpu {slot}: CPU_OFF returned {r}");
    loop {
        arch::wait_for_event();
    }
}

/// Check 5: PSCI over HVC: version, CPU_ON's features, every other CPU of
/// `/cpus` started, up, counted and off.
fn psci_smp(c: &Context<'_>) -> usize {
    let (major, minor) = psci::version();
    let method = c.platform.psci_method.unwrap_or("none");
    if major < 1 || major == 0xffff {
        return report(
            "psci",
            Outcome::Fail,
            format_args!(
                "PSCI_VERSION says {major}.{minor}, want 1.0 or later (DTB method {method:?})"
            ),
        );
    }
    let feat = psci::call(psci::FEATURES, u64::from(arch::PSCI_CPU_ON), 0, 0);
    if feat < 0 {
        return report(
            "psci",
            Outcome::Fail,
            format_args!("PSCI {major}.{minor}: PSCI_FEATURES(CPU_ON) returned {feat}"),
        );
    }
    extern "C" {
        static secondary_entry: u8;
    }
    let entry = mm::image_symbol_pa(&raw const secondary_entry as usize);
    let me = arch::mpidr();
    let mut started = 0;
    for &mpidr in &c.platform.cpus[..c.platform.cpu_count] {
        if mpidr == me {
            continue;
        }
        let slot = started + 1;
        if slot >= crate::MAX_CPUS {
            // No stack for it (the boot CPU is missing from /cpus).
            break;
        }
        let r = psci::cpu_on(mpidr, entry, slot as u64);
        if r != 0 {
            return report(
                "psci",
                Outcome::Fail,
                format_args!("CPU_ON({mpidr:#x}, entry {entry:#x}) returned {r}"),
            );
        }
        started += 1;
    }
    let start = now_ms();
    while UP.load(Ordering::SeqCst) < started {
        if now_ms().wrapping_sub(start) > SMP_TIMEOUT_MS {
            return report(
                "psci",
                Outcome::Fail,
                format_args!(
                    "{} of {started} CPUs came up within {SMP_TIMEOUT_MS} ms",
                    UP.load(Ordering::SeqCst)
                ),
            );
        }
        core::hint::spin_loop();
    }
    let ignored = c.platform.cpus_ignored;
    report(
        "psci",
        Outcome::Ok,
        format_args!(
            "PSCI {major}.{minor} over HVC (DTB method {method:?}), PSCI_FEATURES(CPU_ON) = {feat}, \
             {started} other CPU(s) started and counted in{}",
            if ignored > 0 { " (more CPUs in /cpus than the guest runs)" } else { "" }
        ),
    )
}
