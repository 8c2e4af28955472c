//! A builder of QEMU-virt-like device trees, for tests and tools (`std`
//! feature).
//!
//! ```
//! use hvmm_bootinfo::builder::VirtBoard;
//! let dtb = VirtBoard::new()
//!     .ram(0x4000_0000, 0x4000_0000)
//!     .bootargs("console=ttyAMA0")
//!     .module(0x4800_0000, 0x10_0000, "multiboot,module")
//!     .cpus(2)
//!     .build();
//! assert_eq!(&dtb[..4], &[0xd0, 0x0d, 0xfe, 0xed]);
//! ```
//!
//! The tree has what QEMU's `virt` machine gives (root with
//! `#address-cells = <2>`, `#size-cells = <2>`, `compatible =
//! "linux,dummy-virt"`, `/psci` with method `"smc"` as with
//! `virtualization=on`, `/cpus` with PSCI-enabled cpu nodes, a PL011 at
//! 0x0900_0000, `/memory@...` banks) plus what boot loaders add: `/chosen`
//! command lines and `module@...` children, `/reserved-memory` children and
//! memory reservation block entries. Knobs that only make sense to build bad
//! trees (odd cell sizes, raw properties) are there too, for tests.

use std::fmt;
use std::string::{String, ToString};
use std::vec::Vec;
use vm_fdt::{FdtReserveEntry, FdtWriter};

/// Why a [`VirtBoard`] could not be written.
#[derive(Debug)]
pub enum BuildError {
    /// A value does not fit in the number of cells chosen for it.
    ValueTooWide {
        /// The value.
        value: u64,
        /// The cells it had to fit in.
        cells: u32,
    },
    /// The FDT writer refused something (e.g. a zero-sized memreserve).
    Writer(vm_fdt::Error),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ValueTooWide { value, cells } => {
                write!(f, "value {value:#x} does not fit in {cells} cell(s)")
            }
            BuildError::Writer(e) => write!(f, "FDT writer error: {e}"),
        }
    }
}

impl std::error::Error for BuildError {}

impl From<vm_fdt::Error> for BuildError {
    fn from(e: vm_fdt::Error) -> Self {
        BuildError::Writer(e)
    }
}

/// One `/chosen/module@...` node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleSpec {
    /// Start address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// The `compatible` strings, in order.
    pub compatible: Vec<String>,
    /// Its `bootargs`, if any.
    pub bootargs: Option<String>,
}

/// A QEMU-virt-like board description that writes itself as a DTB.
#[derive(Clone, Debug)]
pub struct VirtBoard {
    root_cells: (u32, u32),
    chosen_cells: Option<(u32, u32)>,
    memory: Vec<Vec<(u64, u64)>>,
    modules: Vec<ModuleSpec>,
    reserved_memory: Vec<(u64, u64, bool)>,
    memreserve: Vec<(u64, u64)>,
    bootargs: Option<String>,
    xen_bootargs: Option<String>,
    chosen_raw: Vec<(String, Vec<u8>)>,
    cpus: u32,
    cpu_compatible: String,
}

impl Default for VirtBoard {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtBoard {
    /// An arm64 `virt` board with one CPU and no RAM yet (add some with
    /// [`VirtBoard::ram`]).
    pub fn new() -> Self {
        VirtBoard {
            root_cells: (2, 2),
            chosen_cells: Some((2, 2)),
            memory: Vec::new(),
            modules: Vec::new(),
            reserved_memory: Vec::new(),
            memreserve: Vec::new(),
            bootargs: None,
            xen_bootargs: None,
            chosen_raw: Vec::new(),
            cpus: 1,
            cpu_compatible: "arm,cortex-a57".to_string(),
        }
    }

    /// QEMU's default arm64 board: 1 GiB of RAM at 0x4000_0000.
    pub fn qemu_default() -> Self {
        Self::new().ram(0x4000_0000, 0x4000_0000)
    }

    /// Make it an arm32 board (Cortex-A15 CPUs; the tree keeps 2/2 cells as
    /// QEMU's arm32 `virt` does).
    pub fn arm32(mut self) -> Self {
        self.cpu_compatible = "arm,cortex-a15".to_string();
        self
    }

    /// Adds a `/memory@base` node with one bank.
    pub fn ram(mut self, base: u64, size: u64) -> Self {
        self.memory.push(std::vec![(base, size)]);
        self
    }

    /// Adds a `/memory@...` node whose `reg` lists several banks.
    pub fn memory_node(mut self, banks: &[(u64, u64)]) -> Self {
        self.memory.push(banks.to_vec());
        self
    }

    /// Adds a `/chosen/module@addr` node with one compatible string.
    pub fn module(self, addr: u64, size: u64, compatible: &str) -> Self {
        self.module_with(addr, size, &[compatible], None)
    }

    /// Adds a typed `/chosen/module@addr` node as U-Boot scripts write them:
    /// `compatible = kind, "multiboot,module"`.
    pub fn typed_module(self, addr: u64, size: u64, kind: &str) -> Self {
        self.module_with(addr, size, &[kind, "multiboot,module"], None)
    }

    /// Adds a `/chosen/module@addr` node with several compatible strings and
    /// optional `bootargs`.
    pub fn module_with(
        mut self,
        addr: u64,
        size: u64,
        compatible: &[&str],
        bootargs: Option<&str>,
    ) -> Self {
        self.modules.push(ModuleSpec {
            addr,
            size,
            compatible: compatible.iter().map(|s| s.to_string()).collect(),
            bootargs: bootargs.map(str::to_string),
        });
        self
    }

    /// Sets `/chosen/bootargs`.
    pub fn bootargs(mut self, args: &str) -> Self {
        self.bootargs = Some(args.to_string());
        self
    }

    /// Sets `/chosen/xen,xen-bootargs`.
    pub fn xen_bootargs(mut self, args: &str) -> Self {
        self.xen_bootargs = Some(args.to_string());
        self
    }

    /// Adds a raw property to `/chosen` (to build malformed trees).
    pub fn chosen_raw_property(mut self, name: &str, value: &[u8]) -> Self {
        self.chosen_raw.push((name.to_string(), value.to_vec()));
        self
    }

    /// Adds a `/reserved-memory` child with `reg = <base size>` and `no-map`.
    pub fn reserved_memory(self, base: u64, size: u64) -> Self {
        self.reserved_memory_with(base, size, true)
    }

    /// Adds a `/reserved-memory` child with `reg = <base size>`, with
    /// `no-map` or without it.
    pub fn reserved_memory_with(mut self, base: u64, size: u64, no_map: bool) -> Self {
        self.reserved_memory.push((base, size, no_map));
        self
    }

    /// Adds a memory reservation block entry (`/memreserve/`).
    pub fn memreserve(mut self, base: u64, size: u64) -> Self {
        self.memreserve.push((base, size));
        self
    }

    /// Sets the number of CPUs (at least one node is always written).
    pub fn cpus(mut self, n: u32) -> Self {
        self.cpus = n;
        self
    }

    /// Sets the root's `#address-cells` / `#size-cells` (default 2/2).
    pub fn root_cells(mut self, address: u32, size: u32) -> Self {
        self.root_cells = (address, size);
        self
    }

    /// Sets `/chosen`'s `#address-cells` / `#size-cells` (default 2/2), or
    /// leaves them out with `None` (readers then assume 2/1).
    pub fn chosen_cells(mut self, cells: Option<(u32, u32)>) -> Self {
        self.chosen_cells = cells;
        self
    }

    /// The modules added so far.
    pub fn modules(&self) -> &[ModuleSpec] {
        &self.modules
    }

    /// Writes the DTB.
    ///
    /// # Panics
    /// When [`VirtBoard::try_build`] fails: this is a tool for tests.
    pub fn build(&self) -> Vec<u8> {
        match self.try_build() {
            Ok(v) => v,
            Err(e) => panic!("VirtBoard::build: {e}"),
        }
    }

    /// Writes the DTB, or says why it cannot.
    pub fn try_build(&self) -> Result<Vec<u8>, BuildError> {
        let rsv = self
            .memreserve
            .iter()
            .map(|&(a, s)| FdtReserveEntry::new(a, s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut w = FdtWriter::new_with_mem_reserv(&rsv)?;
        let (ac, sc) = self.root_cells;
        let root = w.begin_node("")?;
        w.property_u32("#address-cells", ac)?;
        w.property_u32("#size-cells", sc)?;
        w.property_string("compatible", "linux,dummy-virt")?;
        w.property_string("model", "linux,dummy-virt")?;
        w.property_u32("interrupt-parent", 0x8002)?;

        let psci = w.begin_node("psci")?;
        w.property_string_list(
            "compatible",
            ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )?;
        w.property_string("method", "smc")?;
        w.property_u32("cpu_suspend", 0xc400_0001)?;
        w.property_u32("cpu_off", 0x8400_0002)?;
        w.property_u32("cpu_on", 0xc400_0003)?;
        w.property_u32("migrate", 0xc400_0005)?;
        w.end_node(psci)?;

        for banks in &self.memory {
            let base = banks.first().map_or(0, |b| b.0);
            let node = w.begin_node(&format_name("memory", base))?;
            w.property_string("device_type", "memory")?;
            w.property("reg", &reg_bytes(banks, ac, sc)?)?;
            w.end_node(node)?;
        }

        if !self.reserved_memory.is_empty() {
            let rmem = w.begin_node("reserved-memory")?;
            w.property_u32("#address-cells", ac)?;
            w.property_u32("#size-cells", sc)?;
            w.property_null("ranges")?;
            for (i, &(base, size, no_map)) in self.reserved_memory.iter().enumerate() {
                // Unique names even for two regions at one address (trees
                // that overlap are for tests of their refusal).
                let name = match i {
                    0 => format_name("region", base),
                    _ => std::format!("region{i}@{base:x}"),
                };
                let n = w.begin_node(&name)?;
                w.property("reg", &reg_bytes(&[(base, size)], ac, sc)?)?;
                if no_map {
                    w.property_null("no-map")?;
                }
                w.end_node(n)?;
            }
            w.end_node(rmem)?;
        }

        // QEMU virt with virtualization=on: a GICv2 whose reg also holds the
        // hypervisor's GICH and GICV frames, the architected timer, and the
        // UART's clock.
        let intc = w.begin_node("intc@8000000")?;
        w.property_u32("phandle", 0x8002)?;
        w.property_array_u32("interrupts", &[1, 9, 4])?;
        w.property(
            "reg",
            &reg_bytes(
                &[
                    (0x0800_0000, 0x1_0000),
                    (0x0801_0000, 0x1_0000),
                    (0x0803_0000, 0x1_0000),
                    (0x0804_0000, 0x1_0000),
                ],
                ac,
                sc,
            )
            .unwrap_or_default(),
        )?;
        w.property_string("compatible", "arm,cortex-a15-gic")?;
        w.property_null("interrupt-controller")?;
        w.property_u32("#interrupt-cells", 3)?;
        w.end_node(intc)?;
        let timer = w.begin_node("timer")?;
        w.property_array_u32(
            "interrupts",
            &[1, 13, 0xf04, 1, 14, 0xf04, 1, 11, 0xf04, 1, 10, 0xf04],
        )?;
        w.property_string("compatible", "arm,armv8-timer")?;
        w.end_node(timer)?;
        let clk = w.begin_node("apb-pclk")?;
        w.property_u32("phandle", 0x8000)?;
        w.property_string("clock-output-names", "clk24mhz")?;
        w.property_u32("clock-frequency", 24_000_000)?;
        w.property_u32("#clock-cells", 0)?;
        w.property_string("compatible", "fixed-clock")?;
        w.end_node(clk)?;

        let pl011 = w.begin_node("pl011@9000000")?;
        w.property_string_list(
            "compatible",
            std::vec!["arm,pl011".to_string(), "arm,primecell".to_string()],
        )?;
        w.property(
            "reg",
            &reg_bytes(&[(0x0900_0000, 0x1000)], ac, sc).unwrap_or_default(),
        )?;
        w.property_array_u32("interrupts", &[0, 1, 4])?;
        w.property_string_list(
            "clock-names",
            std::vec!["uartclk".to_string(), "apb_pclk".to_string()],
        )?;
        w.property_array_u32("clocks", &[0x8000, 0x8000])?;
        w.end_node(pl011)?;

        let cpus = w.begin_node("cpus")?;
        w.property_u32("#address-cells", 1)?;
        w.property_u32("#size-cells", 0)?;
        for i in 0..self.cpus.max(1) {
            let cpu = w.begin_node(&std::format!("cpu@{i:x}"))?;
            w.property_string("device_type", "cpu")?;
            w.property_string("compatible", &self.cpu_compatible)?;
            w.property_u32("reg", i)?;
            if self.cpus > 1 {
                w.property_string("enable-method", "psci")?;
            }
            w.end_node(cpu)?;
        }
        w.end_node(cpus)?;

        let chosen = w.begin_node("chosen")?;
        w.property_string("stdout-path", "/pl011@9000000")?;
        if let Some(args) = &self.bootargs {
            w.property_string("bootargs", args)?;
        }
        if let Some(args) = &self.xen_bootargs {
            w.property_string("xen,xen-bootargs", args)?;
        }
        for (name, value) in &self.chosen_raw {
            w.property(name, value)?;
        }
        let (mac, msc) = self.chosen_cells.unwrap_or((2, 1));
        if let Some((a, s)) = self.chosen_cells {
            w.property_u32("#address-cells", a)?;
            w.property_u32("#size-cells", s)?;
        }
        for m in &self.modules {
            let node = w.begin_node(&format_name("module", m.addr))?;
            w.property_string_list("compatible", m.compatible.clone())?;
            w.property("reg", &reg_bytes(&[(m.addr, m.size)], mac, msc)?)?;
            if let Some(args) = &m.bootargs {
                w.property_string("bootargs", args)?;
            }
            w.end_node(node)?;
        }
        w.end_node(chosen)?;

        w.end_node(root)?;
        Ok(w.finish()?)
    }
}

fn format_name(base: &str, addr: u64) -> String {
    std::format!("{base}@{addr:x}")
}

fn push_cells(out: &mut Vec<u8>, value: u64, cells: u32) -> Result<(), BuildError> {
    let too_wide = BuildError::ValueTooWide { value, cells };
    match cells {
        0 if value == 0 => {}
        0 => return Err(too_wide),
        1 => out.extend_from_slice(&u32::try_from(value).map_err(|_| too_wide)?.to_be_bytes()),
        n => {
            for _ in 2..n {
                out.extend_from_slice(&0u32.to_be_bytes());
            }
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
    Ok(())
}

/// Encodes `(address, size)` pairs with the given cell counts. A size written
/// with 0 cells must be 0.
pub fn reg_bytes(
    entries: &[(u64, u64)],
    address_cells: u32,
    size_cells: u32,
) -> Result<Vec<u8>, BuildError> {
    let mut out = Vec::new();
    for &(a, s) in entries {
        push_cells(&mut out, a, address_cells)?;
        push_cells(&mut out, s, size_cells)?;
    }
    Ok(out)
}
