//! What the guest learns from its DTB (read with `hvmm-bootinfo`'s checked
//! reader): its RAM, its console, its CPUs, its PSCI method and the
//! `hvmm.*` bootargs of the test protocol.

use crate::MAX_CPUS;
use hvmm_bootinfo::dtb::{read_cells, reg_entries, Dtb, Node};

/// Most RAM ranges kept.
pub const MAX_RAM: usize = 8;

/// A bootarg of the protocol: absent, a value, or present but unreadable.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Arg<'a> {
    /// Not on the command line.
    Missing,
    /// `key=<hex>`.
    Value(u64),
    /// `key=` followed by something that is not a hexadecimal number.
    Bad(&'a str),
}

/// The guest's view of its board.
pub struct Platform<'a> {
    /// RAM ranges `(base, size)` from the `/memory` nodes.
    pub ram: [(u64, u64); MAX_RAM],
    /// How many of `ram` are used.
    pub ram_count: usize,
    /// The PL011's register page (IPA).
    pub uart: Option<u64>,
    /// MPIDR affinity of each CPU in `/cpus`, in order.
    pub cpus: [u64; MAX_CPUS],
    /// How many of `cpus` are used.
    pub cpu_count: usize,
    /// CPUs in `/cpus` beyond [`MAX_CPUS`] (not started).
    pub cpus_ignored: usize,
    /// `/psci` `method` (`"hvc"` or `"smc"`).
    pub psci_method: Option<&'a str>,
    /// `/chosen/bootargs`.
    pub bootargs: &'a str,
    /// `hvmm.probe=`.
    pub probe: Arg<'a>,
    /// `hvmm.wp=`.
    pub wp: Arg<'a>,
    /// `hvmm.wp-selftest`: the guest write-protects the page itself (its
    /// own stage 1) instead of asking the hypervisor, to test the check.
    pub wp_selftest: bool,
}

/// Reads `key=<hex>` (with or without `0x`, `_` separators allowed) from a
/// command line.
pub fn bootarg<'a>(cmdline: &'a str, key: &str) -> Arg<'a> {
    for word in cmdline.split_ascii_whitespace() {
        if let Some(v) = word.strip_prefix(key).and_then(|r| r.strip_prefix('=')) {
            return parse_hex(v).map_or(Arg::Bad(v), Arg::Value);
        }
    }
    Arg::Missing
}

fn parse_hex(s: &str) -> Option<u64> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let mut value: u64 = 0;
    let mut any = false;
    for c in digits.chars().filter(|&c| c != '_') {
        let d = c.to_digit(16)?;
        value = value.checked_mul(16)?.checked_add(u64::from(d))?;
        any = true;
    }
    any.then_some(value)
}

/// The first `reg` entry of `node`, under a parent giving `cells`.
fn first_reg(node: &Node<'_>, cells: (u32, u32)) -> Option<(u64, u64)> {
    let reg = node.property("reg")?;
    reg_entries(reg.value, cells.0, cells.1).next()?.ok()
}

fn is_pl011(node: &Node<'_>) -> bool {
    node.property("compatible")
        .is_some_and(|c| c.strings().any(|s| s == "arm,pl011"))
}

/// The node at an absolute path, with the cells its parent gives it.
fn find_with_cells<'a>(dtb: &Dtb<'a>, path: &str) -> Option<(Node<'a>, (u32, u32))> {
    let mut node = dtb.root();
    let mut cells = node.child_cells()?;
    let mut found = false;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if found {
            cells = node.child_cells()?;
        }
        node = node.children().find(|c| c.name_matches(part))?;
        found = true;
    }
    Some((node, cells))
}

/// The PL011 named by `/chosen/stdout-path` (a path or an alias, options
/// after `:` ignored), else the first `arm,pl011` node (two levels deep).
fn find_uart(dtb: &Dtb<'_>) -> Option<u64> {
    let chosen = dtb.find("/chosen");
    let stdout = chosen
        .and_then(|c| {
            c.property("stdout-path")
                .or_else(|| c.property("linux,stdout-path"))
        })
        .and_then(|p| p.as_str());
    if let Some(s) = stdout {
        let name = s.split(':').next().unwrap_or("");
        let path = if name.starts_with('/') {
            Some(name)
        } else {
            dtb.find("/aliases")
                .and_then(|a| a.property(name))
                .and_then(|p| p.as_str())
        };
        if let Some((node, cells)) = path.and_then(|p| find_with_cells(dtb, p)) {
            if is_pl011(&node) {
                if let Some((base, _)) = first_reg(&node, cells) {
                    return Some(base);
                }
            }
        }
    }
    let root = dtb.root();
    let cells = root.child_cells()?;
    for node in root.children() {
        if is_pl011(&node) && node.is_available() {
            return first_reg(&node, cells).map(|r| r.0);
        }
        let Some(inner) = node.child_cells() else {
            continue;
        };
        for child in node.children() {
            if is_pl011(&child) && child.is_available() {
                // Assumes the bus maps its children 1:1 (`ranges;`).
                return first_reg(&child, inner).map(|r| r.0);
            }
        }
    }
    None
}

/// Reads the platform from a validated DTB.
pub fn read<'a>(dtb: &Dtb<'a>) -> Platform<'a> {
    let root = dtb.root();
    let cells = root.child_cells().unwrap_or((2, 1));
    let mut p = Platform {
        ram: [(0, 0); MAX_RAM],
        ram_count: 0,
        uart: find_uart(dtb),
        cpus: [0; MAX_CPUS],
        cpu_count: 0,
        cpus_ignored: 0,
        psci_method: dtb
            .find("/psci")
            .and_then(|n| n.property("method"))
            .and_then(|m| m.as_str()),
        bootargs: dtb
            .find("/chosen")
            .and_then(|c| c.property("bootargs"))
            .and_then(|b| b.as_str())
            .unwrap_or(""),
        probe: Arg::Missing,
        wp: Arg::Missing,
        wp_selftest: false,
    };
    p.probe = bootarg(p.bootargs, "hvmm.probe");
    p.wp = bootarg(p.bootargs, "hvmm.wp");
    p.wp_selftest = p
        .bootargs
        .split_ascii_whitespace()
        .any(|w| w == "hvmm.wp-selftest");

    for node in root.children().filter(|n| n.name_matches("memory")) {
        if !node.is_available() {
            continue;
        }
        let Some(reg) = node.property("reg") else {
            continue;
        };
        for (base, size) in reg_entries(reg.value, cells.0, cells.1).flatten() {
            if size > 0 && p.ram_count < MAX_RAM {
                p.ram[p.ram_count] = (base, size);
                p.ram_count += 1;
            }
        }
    }

    if let Some(cpus) = dtb.find("/cpus") {
        let addr_cells = cpus.child_cells().map_or(1, |c| c.0);
        for cpu in cpus.children().filter(|n| n.name_matches("cpu")) {
            let Some(mpidr) = cpu
                .property("reg")
                .and_then(|r| read_cells(r.value, addr_cells))
            else {
                continue;
            };
            if !cpu.is_available() {
                continue;
            }
            if p.cpu_count < MAX_CPUS {
                p.cpus[p.cpu_count] = mpidr;
                p.cpu_count += 1;
            } else {
                p.cpus_ignored += 1;
            }
        }
    }
    p
}

impl Platform<'_> {
    /// The RAM ranges.
    pub fn ram(&self) -> &[(u64, u64)] {
        &self.ram[..self.ram_count]
    }

    /// Whether `[addr, addr + len)` overlaps RAM.
    pub fn in_ram(&self, addr: u64, len: u64) -> bool {
        self.ram()
            .iter()
            .any(|&(b, s)| addr < b.saturating_add(s) && b < addr.saturating_add(len))
    }
}
