//! A device-tree writer for bare metal: `no_std`, no allocation, into a
//! buffer the caller owns.
//!
//! The `std`-only `builder` module (on `vm-fdt`) writes test boards; the
//! hypervisor itself must write a guest's tree at run time, with no heap, so
//! this is our own: nodes and properties are appended to the structure block
//! in the output buffer as they come, names to a strings block kept in a
//! second caller-provided buffer (deduplicated), and [`FdtWriter::finish`]
//! moves the strings behind the structure and writes the header (version 17,
//! an empty memory-reservation map). Every overflow is
//! [`WriteError::BufferFull`] naming the block, never a panic.

use crate::dtb::Node;
use core::fmt;

const FDT_MAGIC: u32 = 0xd00d_feed;
const HEADER: usize = 40;
/// The memory reservation map: one terminating (0, 0) entry.
const RSVMAP: usize = 16;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const END: u32 = 9;

/// Why a tree could not be written.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    /// The output (or strings) buffer is too small.
    BufferFull {
        /// Which block ran out: "structure" or "strings".
        block: &'static str,
        /// The buffer's size.
        capacity: usize,
    },
    /// `end_node` without a matching `begin_node`, or `finish` with nodes
    /// still open.
    Unbalanced,
    /// A node or property name with a NUL byte.
    BadName,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::BufferFull { block, capacity } => write!(
                f,
                "the device tree's {block} block does not fit its {capacity}-byte buffer"
            ),
            WriteError::Unbalanced => write!(f, "device-tree nodes opened and closed unevenly"),
            WriteError::BadName => write!(f, "a device-tree name contains a NUL byte"),
        }
    }
}

impl core::error::Error for WriteError {}

/// Writes one flattened device tree.
pub struct FdtWriter<'a> {
    out: &'a mut [u8],
    strings: &'a mut [u8],
    /// End of the structure block (absolute offset in `out`).
    pos: usize,
    strings_len: usize,
    depth: usize,
}

impl<'a> FdtWriter<'a> {
    /// A writer into `out`, keeping property names in `strings` until
    /// [`FdtWriter::finish`].
    pub fn new(out: &'a mut [u8], strings: &'a mut [u8]) -> Result<Self, WriteError> {
        let start = HEADER + RSVMAP;
        if out.len() < start {
            return Err(WriteError::BufferFull {
                block: "structure",
                capacity: out.len(),
            });
        }
        out[..start].fill(0);
        Ok(FdtWriter {
            out,
            strings,
            pos: start,
            strings_len: 0,
            depth: 0,
        })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let full = WriteError::BufferFull {
            block: "structure",
            capacity: self.out.len(),
        };
        let end = self.pos.checked_add(bytes.len()).ok_or(full)?;
        self.out
            .get_mut(self.pos..end)
            .ok_or(full)?
            .copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    fn put_u32(&mut self, v: u32) -> Result<(), WriteError> {
        self.put(&v.to_be_bytes())
    }

    fn pad(&mut self) -> Result<(), WriteError> {
        while !self.pos.is_multiple_of(4) {
            self.put(&[0])?;
        }
        Ok(())
    }

    /// The offset of `name` in the strings block, adding it if new.
    fn string(&mut self, name: &str) -> Result<u32, WriteError> {
        if name.as_bytes().contains(&0) {
            return Err(WriteError::BadName);
        }
        let have = &self.strings[..self.strings_len];
        let mut at = 0;
        while at < have.len() {
            let end = have[at..]
                .iter()
                .position(|&b| b == 0)
                .map_or(have.len(), |e| at + e);
            if &have[at..end] == name.as_bytes() {
                return Ok(at as u32);
            }
            at = end + 1;
        }
        let off = self.strings_len;
        let full = WriteError::BufferFull {
            block: "strings",
            capacity: self.strings.len(),
        };
        let end = off + name.len() + 1;
        let dst = self.strings.get_mut(off..end).ok_or(full)?;
        dst[..name.len()].copy_from_slice(name.as_bytes());
        dst[name.len()] = 0;
        self.strings_len = end;
        Ok(off as u32)
    }

    /// Opens a node (the root is named "").
    pub fn begin_node(&mut self, name: &str) -> Result<(), WriteError> {
        if name.as_bytes().contains(&0) {
            return Err(WriteError::BadName);
        }
        self.put_u32(BEGIN_NODE)?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.depth += 1;
        Ok(())
    }

    /// Closes the node opened last.
    pub fn end_node(&mut self) -> Result<(), WriteError> {
        if self.depth == 0 {
            return Err(WriteError::Unbalanced);
        }
        self.put_u32(END_NODE)?;
        self.depth -= 1;
        Ok(())
    }

    /// A property with a raw value.
    pub fn prop(&mut self, name: &str, value: &[u8]) -> Result<(), WriteError> {
        let nameoff = self.string(name)?;
        self.put_u32(PROP)?;
        self.put_u32(value.len() as u32)?;
        self.put_u32(nameoff)?;
        self.put(value)?;
        self.pad()
    }

    /// A one-cell property.
    pub fn prop_u32(&mut self, name: &str, v: u32) -> Result<(), WriteError> {
        self.prop(name, &v.to_be_bytes())
    }

    /// A two-cell (64-bit) property.
    pub fn prop_u64(&mut self, name: &str, v: u64) -> Result<(), WriteError> {
        self.prop(name, &v.to_be_bytes())
    }

    /// A string property (NUL-terminated in the tree).
    pub fn prop_str(&mut self, name: &str, s: &str) -> Result<(), WriteError> {
        let nameoff = self.string(name)?;
        self.put_u32(PROP)?;
        self.put_u32(s.len() as u32 + 1)?;
        self.put_u32(nameoff)?;
        self.put(s.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    /// A `reg` property of (address, size) pairs, two cells each.
    pub fn prop_reg(&mut self, name: &str, entries: &[(u64, u64)]) -> Result<(), WriteError> {
        let nameoff = self.string(name)?;
        self.put_u32(PROP)?;
        self.put_u32((entries.len() * 16) as u32)?;
        self.put_u32(nameoff)?;
        for &(a, s) in entries {
            self.put(&a.to_be_bytes())?;
            self.put(&s.to_be_bytes())?;
        }
        Ok(())
    }

    /// Copies `node` with its properties and its whole subtree; `keep`
    /// decides for each descendant (not `node` itself) whether it is
    /// copied.
    pub fn copy_node(
        &mut self,
        node: &Node<'_>,
        keep: &mut dyn FnMut(&Node<'_>) -> bool,
    ) -> Result<(), WriteError> {
        self.begin_node(node.name)?;
        for p in node.properties() {
            self.prop(p.name, p.value)?;
        }
        for child in node.children() {
            if keep(&child) {
                self.copy_node(&child, keep)?;
            }
        }
        self.end_node()
    }

    /// Ends the tree: writes the END token, moves the strings behind the
    /// structure block, fills the header. Returns the tree's size.
    pub fn finish(mut self) -> Result<usize, WriteError> {
        if self.depth != 0 {
            return Err(WriteError::Unbalanced);
        }
        self.put_u32(END)?;
        let off_struct = HEADER + RSVMAP;
        let size_struct = self.pos - off_struct;
        let off_strings = self.pos;
        let total = off_strings + self.strings_len;
        let full = WriteError::BufferFull {
            block: "structure",
            capacity: self.out.len(),
        };
        self.out
            .get_mut(off_strings..total)
            .ok_or(full)?
            .copy_from_slice(&self.strings[..self.strings_len]);
        let header = [
            FDT_MAGIC,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            HEADER as u32,
            17,
            16,
            0,
            self.strings_len as u32,
            size_struct as u32,
        ];
        for (i, w) in header.iter().enumerate() {
            self.out[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dtb;

    #[test]
    fn a_written_tree_reads_back() {
        let mut out = [0u8; 1024];
        let mut strings = [0u8; 128];
        let mut w = FdtWriter::new(&mut out, &mut strings).unwrap();
        w.begin_node("").unwrap();
        w.prop_u32("#address-cells", 2).unwrap();
        w.prop_u32("#size-cells", 2).unwrap();
        w.begin_node("memory@40000000").unwrap();
        w.prop_str("device_type", "memory").unwrap();
        w.prop_reg("reg", &[(0x4000_0000, 0x800_0000)]).unwrap();
        w.end_node().unwrap();
        w.begin_node("chosen").unwrap();
        w.prop_str("bootargs", "console=ttyAMA0").unwrap();
        w.prop_u64("linux,initrd-start", 0x4800_0000).unwrap();
        w.end_node().unwrap();
        w.end_node().unwrap();
        let n = w.finish().unwrap();
        let dtb = Dtb::new(&out[..n]).unwrap();
        let mem = dtb.find("/memory@40000000").unwrap();
        assert_eq!(
            mem.property("device_type").unwrap().as_str(),
            Some("memory")
        );
        let chosen = dtb.find("/chosen").unwrap();
        assert_eq!(
            chosen.property("bootargs").unwrap().as_str(),
            Some("console=ttyAMA0")
        );
        assert_eq!(
            chosen.property("linux,initrd-start").unwrap().value,
            &0x4800_0000u64.to_be_bytes()
        );
    }

    #[test]
    fn overflow_and_imbalance_are_errors_not_panics() {
        let mut out = [0u8; 80];
        let mut strings = [0u8; 8];
        let mut w = FdtWriter::new(&mut out, &mut strings).unwrap();
        w.begin_node("").unwrap();
        assert_eq!(
            w.prop_str("a-long-property-name", "x"),
            Err(WriteError::BufferFull {
                block: "strings",
                capacity: 8
            })
        );
        assert!(matches!(
            w.prop("p", &[0u8; 64]),
            Err(WriteError::BufferFull {
                block: "structure",
                ..
            })
        ));
        let mut out = [0u8; 256];
        let mut strings = [0u8; 64];
        let w = {
            let mut w = FdtWriter::new(&mut out, &mut strings).unwrap();
            w.begin_node("").unwrap();
            w
        };
        assert_eq!(w.finish(), Err(WriteError::Unbalanced));
        let mut out = [0u8; 10];
        let mut strings = [0u8; 64];
        assert!(FdtWriter::new(&mut out, &mut strings).is_err());
    }
}
