//! A tiny flattened-device-tree scan, through fixmap windows (the DTB is not
//! mapped otherwise yet): `/chosen/xen,xen-bootargs` (else `bootargs`),
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
    /// `/chosen/xen,xen-bootargs` (GRUB, U-Boot scripts), else
    /// `/chosen/bootargs`, if any: the hypervisor's line first, as Xen and
    /// the shared boot read it.
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

/// Reads the NUL-terminated node name at `off` into `name` (truncated to
/// its size); returns the name's full length (without the NUL).
fn node_name(s: &mut PhysWindow, off: u64, name: &mut [u8]) -> Result<usize, FdtError> {
    let mut len = 0usize;
    loop {
        let mut b = [0u8; 1];
        s.read(off + len as u64, &mut b);
        if b[0] == 0 {
            return Ok(len);
        }
        if len < name.len() {
            name[len] = b[0];
        }
        len += 1;
        if len > 1024 {
            return Err(FdtError::Malformed("node name too long"));
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
    let mut have_xen_bootargs = false;
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
                let len = node_name(s, off, &mut name)?;
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
                            if pname == b"xen,xen-bootargs" || !have_xen_bootargs =>
                        {
                            have_xen_bootargs |= pname == b"xen,xen-bootargs";
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

    /// The word after `key=` in the bootargs (`hvmm.audit-plant=wx`), if any.
    pub fn bootarg_value(&self, key: &str) -> Option<&str> {
        let b = self.bootargs.as_ref()?;
        b.as_str()
            .split_ascii_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
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

/// A UART hvmm can print on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// Arm PL011 (`arm,pl011`): QEMU's `virt`.
    Pl011,
    /// Cadence UART (`cdns,uart-r1p12`, `cdns,uart-r1p8`, `xlnx,xuartps`):
    /// the Xilinx ZynqMP (ZCU102).
    Cadence,
}

/// The console the device tree names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uart {
    /// Its driver.
    pub kind: UartKind,
    /// Physical address of its registers.
    pub base: u64,
}

fn uart_kind(compatible: &[u8]) -> Option<UartKind> {
    compatible.split(|&b| b == 0).find_map(|c| match c {
        b"arm,pl011" => Some(UartKind::Pl011),
        b"cdns,uart-r1p12" | b"cdns,uart-r1p8" | b"xlnx,xuartps" => Some(UartKind::Cadence),
        _ => None,
    })
}

/// Longest node path followed.
const PATH_MAX: usize = 128;
/// Deepest node followed.
const DEPTH_MAX: usize = 8;

/// Walks the structure block, calling `f(path, depth, parent_cells, prop,
/// value_pa, len)` for every property, with the node's full path (`/` for
/// the root) and its parent's `(#address-cells, #size-cells)`. Nodes deeper
/// than [`DEPTH_MAX`] or with longer paths than [`PATH_MAX`] are skipped.
fn walk_props(
    pa: u64,
    s: &mut PhysWindow,
    strings: &mut PhysWindow,
    mut f: impl FnMut(&[u8], (u32, u32), &[u8], u64, u64, &mut PhysWindow),
) -> Result<(), FdtError> {
    if s.be32(pa) != FDT_MAGIC {
        return Err(FdtError::BadMagic(s.be32(pa)));
    }
    let off_struct = u64::from(s.be32(pa + 8));
    let off_strings = u64::from(s.be32(pa + 12));
    let size_struct = u64::from(s.be32(pa + 36));
    let mut path = [0u8; PATH_MAX];
    // Path length and (#address-cells, #size-cells) of each open node.
    let mut lens = [0usize; DEPTH_MAX + 1];
    let mut cells = [(2u32, 1u32); DEPTH_MAX + 1];
    let mut open = 0usize;
    let mut skip_from: Option<usize> = None;
    let mut off = pa + off_struct;
    let end = off + size_struct;
    while off < end {
        let token = s.be32(off);
        off += 4;
        match token {
            FDT_BEGIN_NODE => {
                let mut name = [0u8; 64];
                let len = node_name(s, off, &mut name)?;
                off += (len as u64 + 1 + 3) & !3;
                open += 1;
                let depth = open - 1;
                if skip_from.is_some() {
                    continue;
                }
                let parent_len = if depth == 0 { 0 } else { lens[depth - 1] };
                let sep = usize::from(depth > 1);
                let new_len = parent_len + sep + len;
                if depth > DEPTH_MAX || len > name.len() || new_len > PATH_MAX {
                    skip_from = Some(depth);
                    continue;
                }
                if sep == 1 {
                    path[parent_len] = b'/';
                }
                path[parent_len + sep..new_len].copy_from_slice(&name[..len]);
                lens[depth] = if depth == 0 { 0 } else { new_len };
                cells[depth] = (2, 1);
            }
            FDT_END_NODE => {
                open = open
                    .checked_sub(1)
                    .ok_or(FdtError::Malformed("unbalanced END_NODE"))?;
                if skip_from == Some(open) {
                    skip_from = None;
                }
            }
            FDT_PROP => {
                let len = u64::from(s.be32(off));
                let nameoff = u64::from(s.be32(off + 4));
                let value = off + 8;
                off = value + ((len + 3) & !3);
                if skip_from.is_some() || open == 0 {
                    continue;
                }
                let depth = open - 1;
                let mut pname = [0u8; 32];
                strings.read(pa + off_strings + nameoff, &mut pname);
                let n = pname.iter().position(|&b| b == 0).unwrap_or(pname.len());
                match &pname[..n] {
                    b"#address-cells" if len == 4 => cells[depth].0 = s.be32(value),
                    b"#size-cells" if len == 4 => cells[depth].1 = s.be32(value),
                    _ => {}
                }
                let node: &[u8] = if depth == 0 {
                    b"/"
                } else {
                    &path[..lens[depth]]
                };
                let parent = if depth == 0 { (2, 1) } else { cells[depth - 1] };
                f(node, parent, &pname[..n], value, len, s);
            }
            FDT_NOP => {}
            FDT_END => break,
            _ => return Err(FdtError::Malformed("unknown token")),
        }
    }
    Ok(())
}

/// The console: the node `/chosen/stdout-path` names (directly or through
/// `/aliases`; options after `:` ignored), if it is a UART hvmm drives; else
/// the first such UART whose `status` is not `disabled`. Its `reg` is read
/// with its parent's cells and taken as a physical address (buses with
/// non-identity `ranges` are not translated).
pub fn find_console(pa: u64) -> Result<Option<Uart>, FdtError> {
    let mut s = PhysWindow::new(SLOT_FDT_A);
    let mut strings = PhysWindow::new(SLOT_FDT_B);
    let r = find_console_with(pa, &mut s, &mut strings);
    s.release();
    strings.release();
    r
}

fn find_console_with(
    pa: u64,
    s: &mut PhysWindow,
    strings: &mut PhysWindow,
) -> Result<Option<Uart>, FdtError> {
    // Pass 1: stdout-path, then the alias it names.
    let mut stdout = Text::<PATH_MAX>::new();
    walk_props(pa, s, strings, |node, _, prop, value, len, s| {
        if node == b"/chosen" && (prop == b"stdout-path" || prop == b"linux,stdout-path") {
            let mut buf = [0u8; PATH_MAX];
            let n = (len as usize).min(PATH_MAX);
            s.read(value, &mut buf[..n]);
            let end = buf[..n]
                .iter()
                .position(|&b| b == 0 || b == b':')
                .unwrap_or(n);
            if prop == b"stdout-path" || stdout.len == 0 {
                stdout.set(&buf[..end]);
            }
        }
    })?;
    let mut target = stdout;
    if target.len > 0 && target.buf[0] != b'/' {
        let alias = stdout;
        let mut found = Text::<PATH_MAX>::new();
        walk_props(pa, s, strings, |node, _, prop, value, len, s| {
            if node == b"/aliases" && prop == &alias.buf[..alias.len] {
                let mut buf = [0u8; PATH_MAX];
                let n = (len as usize).min(PATH_MAX);
                s.read(value, &mut buf[..n]);
                found.set(&buf[..n]);
            }
        })?;
        target = found;
    }

    // Pass 2: each node's compatible, status and first reg entry.
    #[derive(Clone, Copy)]
    struct Cand {
        kind: Option<UartKind>,
        base: Option<u64>,
        disabled: bool,
        chosen: bool,
    }
    let mut best: Option<Uart> = None;
    let mut first: Option<Uart> = None;
    let mut cur_path = Text::<PATH_MAX>::new();
    let mut cur = Cand {
        kind: None,
        base: None,
        disabled: false,
        chosen: false,
    };
    fn settle(c: &Cand, best: &mut Option<Uart>, first: &mut Option<Uart>) {
        if let (Some(kind), Some(base)) = (c.kind, c.base) {
            let u = Uart { kind, base };
            if c.chosen {
                *best = Some(u);
            } else if !c.disabled && first.is_none() {
                *first = Some(u);
            }
        }
    }
    walk_props(pa, s, strings, |node, parent, prop, value, len, s| {
        if node != &cur_path.buf[..cur_path.len] {
            settle(&cur, &mut best, &mut first);
            cur_path.set(node);
            cur = Cand {
                kind: None,
                base: None,
                disabled: false,
                chosen: target.len > 0 && node == &target.buf[..target.len],
            };
        }
        match prop {
            b"compatible" => {
                let mut buf = [0u8; 96];
                let n = (len as usize).min(buf.len());
                s.read(value, &mut buf[..n]);
                cur.kind = uart_kind(&buf[..n]);
            }
            b"status" => {
                let mut buf = [0u8; 8];
                let n = (len as usize).min(buf.len());
                s.read(value, &mut buf[..n]);
                cur.disabled = buf[..n].starts_with(b"disabled");
            }
            b"reg" => {
                let ac = parent.0 as usize * 4;
                if (4..=8).contains(&ac) && len as usize >= ac {
                    let mut buf = [0u8; 8];
                    s.read(value, &mut buf[..ac]);
                    cur.base = Some(be_cells(&buf[..ac]));
                }
            }
            _ => {}
        }
    })?;
    settle(&cur, &mut best, &mut first);
    Ok(best.or(first))
}
