//! A tiny flattened-device-tree scan, through fixmap windows (the DTB is not
//! mapped otherwise yet): `/chosen/bootargs` (or GRUB's `xen,xen-bootargs`),
//! `/chosen/module@*`, `/cpus/cpu@*` and the `/memory*` banks. Enough for this image's checks; the real FDT handling
//! belongs to the shared boot sequence.

use crate::fixmap::{PhysWindow, SLOT_FDT_A, SLOT_FDT_B};

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// Longest bootargs kept.
pub const BOOTARGS_MAX: usize = 256;
/// Most modules kept.
pub const MODULES_MAX: usize = 8;
/// Most CPUs kept.
pub const CPUS_MAX: usize = 8;
/// Most memory banks kept.
pub const BANKS_MAX: usize = 8;

/// A fixed-capacity string copied out of the FDT.
#[derive(Clone, Copy)]
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    const fn new() -> Self {
        Text {
            buf: [0; N],
            len: 0,
        }
    }
    /// The text (invalid UTF-8 shows as `?`).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
    fn set(&mut self, bytes: &[u8]) {
        let n = bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(bytes.len())
            .min(N);
        self.buf[..n].copy_from_slice(&bytes[..n]);
        self.len = n;
    }
}

/// A `/chosen/module@*` node.
#[derive(Clone, Copy)]
pub struct Module {
    /// Its first `compatible` string.
    pub compatible: Text<32>,
    /// Whether `compatible` lists `multiboot,module` too.
    pub generic: bool,
    /// Physical address.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

/// What the scan found.
pub struct FdtInfo {
    /// Total size of the blob.
    pub total_size: u32,
    /// `/chosen/bootargs`, else `/chosen/xen,xen-bootargs` (GRUB), if any.
    pub bootargs: Option<Text<BOOTARGS_MAX>>,
    /// `(base, size)` of each `reg` entry of the `/memory*` nodes.
    pub memory: [Option<(u64, u64)>; BANKS_MAX],
    /// `/chosen/module@*` nodes.
    pub modules: [Option<Module>; MODULES_MAX],
    /// The `reg` (MPIDR) of each `/cpus/cpu@*` node.
    pub cpus: [Option<u64>; CPUS_MAX],
    /// CPU nodes found (may exceed [`CPUS_MAX`]).
    pub n_cpus: usize,
}

/// Why a blob could not be read.
#[derive(Debug)]
pub enum FdtError {
    /// No FDT magic at the address.
    BadMagic(u32),
    /// The structure block is malformed.
    Malformed(&'static str),
}

impl core::fmt::Display for FdtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FdtError::BadMagic(m) => write!(f, "no FDT magic (found {m:#010x})"),
            FdtError::Malformed(why) => write!(f, "malformed structure block: {why}"),
        }
    }
}

fn be_cells(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// Scans the blob at physical address `pa`.
pub fn scan(pa: u64) -> Result<FdtInfo, FdtError> {
    let mut s = PhysWindow::new(SLOT_FDT_A);
    let mut strings = PhysWindow::new(SLOT_FDT_B);
    let r = scan_with(pa, &mut s, &mut strings);
    s.release();
    strings.release();
    r
}

fn scan_with(pa: u64, s: &mut PhysWindow, strings: &mut PhysWindow) -> Result<FdtInfo, FdtError> {
    let magic = s.be32(pa);
    if magic != FDT_MAGIC {
        return Err(FdtError::BadMagic(magic));
    }
    let total_size = s.be32(pa + 4);
    let off_struct = u64::from(s.be32(pa + 8));
    let off_strings = u64::from(s.be32(pa + 12));
    let size_struct = u64::from(s.be32(pa + 36));
    let mut info = FdtInfo {
        total_size,
        bootargs: None,
        memory: [None; BANKS_MAX],
        modules: [None; MODULES_MAX],
        cpus: [None; CPUS_MAX],
        n_cpus: 0,
    };

    // Names of the nodes at depth 1 and 2. `open` counts open nodes; a node
    // is at depth `open - 1` (the root 0, its children 1, theirs 2).
    let mut names: [Text<32>; 3] = [Text::new(), Text::new(), Text::new()];
    let mut open: usize = 0;
    let mut chosen_cells = (2u32, 1u32); // #address-cells, #size-cells
    let mut root_cells = (2u32, 1u32);
    let mut n_banks = 0;
    let mut have_bootargs = false;
    let mut module: Option<Module> = None;
    let mut n_modules = 0;

    let mut off = pa + off_struct;
    let end = off + size_struct;
    while off < end {
        let token = s.be32(off);
        off += 4;
        match token {
            FDT_BEGIN_NODE => {
                let mut name = [0u8; 32];
                let mut len = 0;
                loop {
                    let mut b = [0u8; 1];
                    s.read(off + len as u64, &mut b);
                    if b[0] == 0 {
                        break;
                    }
                    if len < name.len() {
                        name[len] = b[0];
                    }
                    len += 1;
                    if len > 1024 {
                        return Err(FdtError::Malformed("node name too long"));
                    }
                }
                off += (len as u64 + 1 + 3) & !3;
                open += 1;
                let depth = open - 1;
                if depth < names.len() {
                    names[depth].set(&name[..len.min(32)]);
                }
                if depth == 2
                    && names[1].as_str() == "chosen"
                    && names[2].as_str().starts_with("module")
                {
                    module = Some(Module {
                        compatible: Text::new(),
                        generic: false,
                        start: 0,
                        size: 0,
                    });
                }
            }
            FDT_END_NODE => {
                if open == 3 {
                    if let Some(m) = module.take() {
                        if n_modules < MODULES_MAX {
                            info.modules[n_modules] = Some(m);
                            n_modules += 1;
                        }
                    }
                }
                open = open
                    .checked_sub(1)
                    .ok_or(FdtError::Malformed("unbalanced END_NODE"))?;
            }
            FDT_PROP => {
                let len = u64::from(s.be32(off));
                let nameoff = u64::from(s.be32(off + 4));
                let value = off + 8;
                off = value + ((len + 3) & !3);
                let mut pname = [0u8; 32];
                strings.read(pa + off_strings + nameoff, &mut pname);
                let pname_len = pname.iter().position(|&b| b == 0).unwrap_or(pname.len());
                let pname = &pname[..pname_len];
                let depth = open.wrapping_sub(1);
                let n1 = names[1].as_str();
                let n2 = names[2].as_str();
                if depth == 0 {
                    match pname {
                        b"#address-cells" if len == 4 => root_cells.0 = s.be32(value),
                        b"#size-cells" if len == 4 => root_cells.1 = s.be32(value),
                        _ => {}
                    }
                } else if depth == 1
                    && (n1 == "memory" || n1.starts_with("memory@"))
                    && pname == b"reg"
                {
                    let ac = u64::from(root_cells.0) * 4;
                    let sc = u64::from(root_cells.1) * 4;
                    if (1..=8).contains(&ac) && (1..=8).contains(&sc) {
                        let mut at = value;
                        while at + ac + sc <= value + len && n_banks < BANKS_MAX {
                            let mut buf = [0u8; 16];
                            s.read(at, &mut buf[..(ac + sc) as usize]);
                            let base = be_cells(&buf[..ac as usize]);
                            let size = be_cells(&buf[ac as usize..(ac + sc) as usize]);
                            if size != 0 {
                                info.memory[n_banks] = Some((base, size));
                                n_banks += 1;
                            }
                            at += ac + sc;
                        }
                    }
                } else if depth == 1 && n1 == "chosen" {
                    match pname {
                        b"bootargs" | b"xen,xen-bootargs"
                            if pname == b"bootargs" || !have_bootargs =>
                        {
                            have_bootargs |= pname == b"bootargs";
                            let mut buf = [0u8; BOOTARGS_MAX];
                            let n = (len as usize).min(BOOTARGS_MAX);
                            s.read(value, &mut buf[..n]);
                            let mut t = Text::new();
                            t.set(&buf[..n]);
                            info.bootargs = Some(t);
                        }
                        b"#address-cells" if len == 4 => chosen_cells.0 = s.be32(value),
                        b"#size-cells" if len == 4 => chosen_cells.1 = s.be32(value),
                        _ => {}
                    }
                } else if depth == 2 && n1 == "chosen" {
                    if let Some(m) = module.as_mut() {
                        match pname {
                            b"compatible" => {
                                let mut buf = [0u8; 64];
                                let n = (len as usize).min(buf.len());
                                s.read(value, &mut buf[..n]);
                                m.compatible.set(&buf[..n]);
                                m.generic = buf[..n]
                                    .split(|&b| b == 0)
                                    .any(|c| c == b"multiboot,module");
                            }
                            b"reg" => {
                                let ac = chosen_cells.0 as usize * 4;
                                let sc = chosen_cells.1 as usize * 4;
                                if len as usize >= ac + sc && ac <= 8 && sc <= 8 {
                                    let mut buf = [0u8; 16];
                                    s.read(value, &mut buf[..ac + sc]);
                                    m.start = be_cells(&buf[..ac]);
                                    m.size = be_cells(&buf[ac..ac + sc]);
                                }
                            }
                            _ => {}
                        }
                    }
                } else if depth == 2 && n1 == "cpus" && n2.starts_with("cpu@") && pname == b"reg" {
                    let n = (len as usize).min(8);
                    let mut buf = [0u8; 8];
                    s.read(value, &mut buf[..n]);
                    if info.n_cpus < CPUS_MAX {
                        info.cpus[info.n_cpus] = Some(be_cells(&buf[..n]));
                    }
                    info.n_cpus += 1;
                }
            }
            FDT_NOP => {}
            FDT_END => break,
            _ => return Err(FdtError::Malformed("unknown token")),
        }
    }
    Ok(info)
}

impl FdtInfo {
    /// Whether `/chosen/bootargs` holds the word `word`.
    pub fn has_bootarg(&self, word: &str) -> bool {
        self.bootargs
            .as_ref()
            .is_some_and(|b| b.as_str().split_ascii_whitespace().any(|w| w == word))
    }

    /// The number after `key=` in the bootargs (`hvmm.stress=100`), if any.
    pub fn bootarg_number(&self, key: &str) -> Option<u64> {
        let b = self.bootargs.as_ref()?;
        b.as_str()
            .split_ascii_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
    }
}
