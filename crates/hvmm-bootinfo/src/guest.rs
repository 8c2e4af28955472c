//! The device tree a guest (domain 0) boots with, written from the host's.
//!
//! What the guest sees: the host's root properties, CPUs, timer, clocks and
//! the devices it is given (whose `reg` ranges all lie in
//! [`GuestDt::devices`] — entries outside are dropped, and a node left with
//! none is left out, so a GICv2 keeps its distributor and CPU interface but
//! loses the hypervisor's GICH / GICV), its own `/memory`, a `/chosen` with
//! its bootargs, its initrd and the host's `stdout-path`, and a `/psci` node
//! that calls the hypervisor (`method = "hvc"`). The host's memory,
//! reserved-memory, chosen and psci nodes are not copied.

use crate::dtb::{reg_entries, Dtb, Node};
use crate::writer::{FdtWriter, WriteError};
use core::fmt;

/// What goes into a guest's tree.
#[derive(Copy, Clone, Debug)]
pub struct GuestDt<'a> {
    /// The guest's RAM banks, as (IPA, size).
    pub ram: &'a [(u64, u64)],
    /// Device ranges mapped into the guest, as (IPA, size): a host node is
    /// copied only with the `reg` entries inside these.
    pub devices: &'a [(u64, u64)],
    /// The guest's command line.
    pub bootargs: Option<&'a str>,
    /// The initrd, as (IPA of its first byte, IPA past its last).
    pub initrd: Option<(u64, u64)>,
}

/// Why the guest's tree could not be written.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuestDtError {
    /// The host tree's root does not use 2 address and 2 size cells (every
    /// board hvmm supports does).
    UnsupportedCells {
        /// `#address-cells` of the root.
        address: u32,
        /// `#size-cells` of the root.
        size: u32,
    },
    /// A `reg` property of the host tree could not be decoded.
    BadReg {
        /// Offset of nothing: the node's name.
        node: &'static str,
    },
    /// Writing the tree failed.
    Write(WriteError),
}

impl From<WriteError> for GuestDtError {
    fn from(e: WriteError) -> Self {
        GuestDtError::Write(e)
    }
}

impl fmt::Display for GuestDtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestDtError::UnsupportedCells { address, size } => write!(
                f,
                "the host tree's root has {address} address and {size} size cells; the guest tree needs 2 and 2"
            ),
            GuestDtError::BadReg { node } => write!(f, "a reg property of {node} does not decode"),
            GuestDtError::Write(e) => write!(f, "guest device tree: {e}"),
        }
    }
}

impl core::error::Error for GuestDtError {}

/// Root children never copied: the guest gets its own.
fn replaced(name: &str) -> bool {
    let base = name.split('@').next().unwrap_or(name);
    matches!(base, "memory" | "chosen" | "reserved-memory" | "psci")
}

fn inside(devices: &[(u64, u64)], a: u64, s: u64) -> bool {
    devices
        .iter()
        .any(|&(b, l)| a >= b && a.checked_add(s).is_some_and(|e| e <= b.saturating_add(l)))
}

/// Writes the guest's tree into `out` (`strings` is scratch for property
/// names); returns its size.
pub fn write_guest_dt(
    host: &Dtb<'_>,
    cfg: &GuestDt<'_>,
    out: &mut [u8],
    strings: &mut [u8],
) -> Result<usize, GuestDtError> {
    let root = host.root();
    let cells = |n: &str| {
        root.property(n)
            .and_then(|p| p.as_u32())
            .unwrap_or(if n == "#size-cells" { 1 } else { 2 })
    };
    let (ac, sc) = (cells("#address-cells"), cells("#size-cells"));
    if (ac, sc) != (2, 2) {
        return Err(GuestDtError::UnsupportedCells {
            address: ac,
            size: sc,
        });
    }
    let mut w = FdtWriter::new(out, strings)?;
    w.begin_node("")?;
    for p in root.properties() {
        w.prop(p.name, p.value)?;
    }
    for child in root.children() {
        if !replaced(child.name) {
            copy_filtered(&mut w, &child, (ac, sc), cfg.devices)?;
        }
    }
    for &(base, size) in cfg.ram {
        let mut name = NameBuf::default();
        let _ = fmt::write(&mut name, format_args!("memory@{base:x}"));
        w.begin_node(name.as_str())?;
        w.prop_str("device_type", "memory")?;
        w.prop_reg("reg", &[(base, size)])?;
        w.end_node()?;
    }
    w.begin_node("chosen")?;
    if let Some(args) = cfg.bootargs {
        w.prop_str("bootargs", args)?;
    }
    if let Some((start, end)) = cfg.initrd {
        w.prop_u64("linux,initrd-start", start)?;
        w.prop_u64("linux,initrd-end", end)?;
    }
    if let Some(p) = host.find("/chosen").and_then(|c| c.property("stdout-path")) {
        w.prop(p.name, p.value)?;
    }
    w.end_node()?;
    w.begin_node("psci")?;
    w.prop("compatible", b"arm,psci-1.0\0arm,psci-0.2\0arm,psci\0")?;
    w.prop_str("method", "hvc")?;
    w.end_node()?;
    w.end_node()?;
    Ok(w.finish()?)
}

/// Copies `node` and its subtree, keeping of each `reg` only the entries
/// inside `devices`, and leaving out a node that had `reg` entries and keeps
/// none. Children of a node are decoded with its own cells (2 / 1 unless it
/// says otherwise).
fn copy_filtered(
    w: &mut FdtWriter<'_>,
    node: &Node<'_>,
    (ac, sc): (u32, u32),
    devices: &[(u64, u64)],
) -> Result<(), GuestDtError> {
    let mut keep = [(0u64, 0u64); 8];
    let mut kept = 0;
    let mut had_reg = false;
    // A `reg` without sizes (a CPU's MPIDR under /cpus) is no address range:
    // copied as it is.
    let ranges = sc > 0;
    if let Some(reg) = node.property("reg").filter(|_| ranges) {
        had_reg = true;
        for e in reg_entries(reg.value, ac, sc) {
            let (a, s) = e.map_err(|()| GuestDtError::BadReg {
                node: "a host node",
            })?;
            if inside(devices, a, s) && kept < keep.len() {
                keep[kept] = (a, s);
                kept += 1;
            }
        }
    }
    if had_reg && kept == 0 {
        return Ok(());
    }
    w.begin_node(node.name)?;
    for p in node.properties() {
        if p.name == "reg" && ranges {
            // Entries in the parent's cells, as the host tree had them.
            let mut buf = [0u8; 8 * 16];
            let mut len = 0;
            for &(a, s) in &keep[..kept] {
                for (v, cells) in [(a, ac), (s, sc)] {
                    for c in (0..cells).rev() {
                        let word = if c >= 2 { 0 } else { (v >> (32 * c)) as u32 };
                        if let Some(dst) = buf.get_mut(len..len + 4) {
                            dst.copy_from_slice(&word.to_be_bytes());
                        }
                        len += 4;
                    }
                }
            }
            w.prop("reg", buf.get(..len).unwrap_or(&[]))?;
        } else {
            w.prop(p.name, p.value)?;
        }
    }
    let child_cells = node.child_cells().unwrap_or((2, 1));
    for child in node.children() {
        copy_filtered(w, &child, child_cells, devices)?;
    }
    w.end_node()?;
    Ok(())
}

/// A node name built without allocation.
#[derive(Default)]
struct NameBuf {
    buf: [u8; 32],
    len: usize,
}

impl NameBuf {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("memory")
    }
}

impl fmt::Write for NameBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::VirtBoard;

    #[test]
    fn the_guest_tree_has_its_own_memory_chosen_and_psci_and_only_its_devices() {
        let host = VirtBoard::qemu_default().bootargs("hvmm args").build();
        let host = Dtb::new(&host).unwrap();
        let uart = (0x900_0000, 0x1000);
        let cfg = GuestDt {
            ram: &[(0x5000_0000, 0x800_0000)],
            devices: &[uart],
            bootargs: Some("console=ttyAMA0"),
            initrd: Some((0x5700_0000, 0x5710_0000)),
        };
        let mut out = [0u8; 16 * 1024];
        let mut strings = [0u8; 1024];
        let n = write_guest_dt(&host, &cfg, &mut out, &mut strings).unwrap();
        let g = Dtb::new(&out[..n]).unwrap();
        let mem = g.find("/memory@50000000").unwrap();
        let reg = mem.property("reg").unwrap().value;
        assert_eq!(
            reg,
            [0x5000_0000u64.to_be_bytes(), 0x800_0000u64.to_be_bytes()].concat()
        );
        assert!(
            g.find("/memory@40000000").is_none(),
            "the host's RAM is not the guest's"
        );
        let chosen = g.find("/chosen").unwrap();
        assert_eq!(
            chosen.property("bootargs").unwrap().as_str(),
            Some("console=ttyAMA0")
        );
        assert_eq!(
            chosen.property("linux,initrd-start").unwrap().value,
            0x5700_0000u64.to_be_bytes()
        );
        assert_eq!(
            g.find("/psci")
                .unwrap()
                .property("method")
                .unwrap()
                .as_str(),
            Some("hvc")
        );
        assert!(g
            .root()
            .children()
            .any(|c| c.name.starts_with("pl011@9000000")));
        // Nodes with registers the guest is not given are left out.
        for c in g.root().children() {
            if let Some(reg) = c.property("reg") {
                for e in reg_entries(reg.value, 2, 2) {
                    let (a, s) = e.unwrap();
                    assert!(
                        inside(cfg.devices, a, s) || cfg.ram.contains(&(a, s)),
                        "{}",
                        c.name
                    );
                }
            }
        }
    }

    #[test]
    fn a_root_with_other_cells_is_refused() {
        let mut blob = [0u8; 512];
        let mut strings = [0u8; 64];
        let mut w = FdtWriter::new(&mut blob, &mut strings).unwrap();
        w.begin_node("").unwrap();
        w.prop_u32("#address-cells", 1).unwrap();
        w.prop_u32("#size-cells", 1).unwrap();
        w.end_node().unwrap();
        let n = w.finish().unwrap();
        let host = Dtb::new(&blob[..n]).unwrap();
        let cfg = GuestDt {
            ram: &[],
            devices: &[],
            bootargs: None,
            initrd: None,
        };
        let mut out = [0u8; 1024];
        let mut s2 = [0u8; 256];
        assert_eq!(
            write_guest_dt(&host, &cfg, &mut out, &mut s2),
            Err(GuestDtError::UnsupportedCells {
                address: 1,
                size: 1
            })
        );
    }
}

#[cfg(test)]
mod qemu_tree {
    use super::*;

    /// QEMU's own `virt` tree (virtualization=on: a GICv2 with GICH / GICV
    /// and a GICv2m frame, flash, virtio, PCIe, RTC, GPIO...).
    #[test]
    fn qemus_virt_tree_keeps_the_gic_distributor_and_cpu_interface_only() {
        let host = include_bytes!("../tests/data/virt-arm64.dtb");
        let host = Dtb::new(host).unwrap();
        let gicd = (0x800_0000, 0x1_0000);
        let gicc = (0x801_0000, 0x1_0000);
        let uart = (0x900_0000, 0x1000);
        let cfg = GuestDt {
            ram: &[(0x4800_0000, 0x1000_0000)],
            devices: &[gicd, gicc, uart],
            bootargs: Some("console=ttyAMA0"),
            initrd: None,
        };
        let mut out = [0u8; 64 * 1024];
        let mut strings = [0u8; 2048];
        let n = write_guest_dt(&host, &cfg, &mut out, &mut strings).unwrap();
        let g = Dtb::new(&out[..n]).unwrap();
        let gic = g
            .root()
            .children()
            .find(|c| c.name.starts_with("intc@"))
            .expect("the interrupt controller");
        let regs: std::vec::Vec<_> = reg_entries(gic.property("reg").unwrap().value, 2, 2)
            .map(Result::unwrap)
            .collect();
        assert_eq!(regs, [gicd, gicc], "GICH and GICV are the hypervisor's");
        assert!(gic.children().next().is_none(), "no GICv2m frame");
        for gone in [
            "flash@",
            "virtio_mmio@",
            "pcie@",
            "pl031@",
            "pl061@",
            "fw-cfg@",
        ] {
            assert!(
                !g.root().children().any(|c| c.name.starts_with(gone)),
                "{gone} was copied"
            );
        }
        for kept in ["cpus", "timer", "pl011@", "apb-pclk"] {
            assert!(
                g.root().children().any(|c| c.name.starts_with(kept)),
                "{kept} lost"
            );
        }
        assert_eq!(
            g.find("/chosen")
                .unwrap()
                .property("stdout-path")
                .unwrap()
                .as_str(),
            host.find("/chosen")
                .unwrap()
                .property("stdout-path")
                .unwrap()
                .as_str()
        );
    }
}
