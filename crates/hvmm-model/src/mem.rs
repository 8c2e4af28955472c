//! Sparse physical memory: declared RAM regions whose 4 KiB frames
//! materialise, zeroed, on first write.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for the model's integer keys (frame numbers, table keys): a
/// multiply-rotate mix, much cheaper than SipHash in debug builds, where the
/// model's maps are its hottest code. Keys are not attacker-controlled.
#[derive(Default, Clone, Copy)]
pub(crate) struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        let h = (self.0.rotate_left(23) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 32);
    }
}

/// A `HashMap` with [`IntHasher`].
pub(crate) type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;
/// A `HashSet` with [`IntHasher`].
pub(crate) type IntSet<K> = HashSet<K, BuildHasherDefault<IntHasher>>;

/// Bytes in a frame.
pub(crate) const FRAME: usize = 4096;
/// log2 of [`FRAME`].
pub(crate) const FRAME_SHIFT: u32 = 12;
const FRAME_U64: u64 = FRAME as u64;

/// Physical memory of the machine.
///
/// Only frames inside a declared RAM region exist; an access anywhere else
/// fails (the caller turns that into a synchronous external abort). Frames
/// that were never written, or were written all-zero by [`PhysMem::zero`],
/// are not stored and read as zero.
#[derive(Clone, Default)]
pub(crate) struct PhysMem {
    /// Materialised frames, by frame number.
    frames: IntMap<u64, Box<[u8; FRAME]>>,
    /// Declared RAM, as `[base, end)` byte ranges, page aligned.
    ram: Vec<(u64, u64)>,
    /// Frames a TLB-filling walk has read descriptors from.
    watched: IntSet<u64>,
    /// Writes to watched frames so far: cached translations may differ from
    /// the tables in memory only if it moved since they were checked.
    gen: u64,
}

impl PhysMem {
    /// Declares `[base, end)` as RAM (the caller checked alignment and limits).
    pub(crate) fn add_ram(&mut self, base: u64, end: u64) {
        self.ram.push((base, end));
    }

    /// Declared RAM regions as `(base, end)`.
    pub(crate) fn ram(&self) -> &[(u64, u64)] {
        &self.ram
    }

    /// Remembers that the frame holding `pa` holds translation tables.
    pub(crate) fn watch(&mut self, pa: u64) {
        self.watched.insert(pa >> FRAME_SHIFT);
    }

    /// How many writes have touched watched frames.
    pub(crate) fn gen(&self) -> u64 {
        self.gen
    }

    /// Number of frames holding data.
    pub(crate) fn materialised(&self) -> usize {
        self.frames.len()
    }

    /// Whether the byte at `pa` is RAM.
    pub(crate) fn is_ram(&self, pa: u64) -> bool {
        self.ram.iter().any(|&(b, e)| pa >= b && pa < e)
    }

    /// Whether every byte of `[pa, pa + len)` is RAM; `Err` gives the first
    /// address that is not.
    fn check(&self, pa: u64, len: usize) -> Result<(), u64> {
        if len == 0 {
            return Ok(());
        }
        let last = pa.checked_add(len as u64 - 1).ok_or(pa)?;
        let mut frame = pa >> FRAME_SHIFT;
        while frame <= last >> FRAME_SHIFT {
            let at = if frame == pa >> FRAME_SHIFT {
                pa
            } else {
                frame << FRAME_SHIFT
            };
            if !self.is_ram(at) {
                return Err(at);
            }
            frame += 1;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `pa`. `Err(first non-RAM address)` reads nothing.
    pub(crate) fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), u64> {
        self.check(pa, buf.len())?;
        let mut done = 0usize;
        while done < buf.len() {
            let at = pa + done as u64;
            let off = (at & (FRAME_U64 - 1)) as usize;
            let n = (FRAME - off).min(buf.len() - done);
            match self.frames.get(&(at >> FRAME_SHIFT)) {
                Some(f) => buf[done..done + n].copy_from_slice(&f[off..off + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }

    /// Writes `data` at `pa`. `Err(first non-RAM address)` writes nothing.
    pub(crate) fn write(&mut self, pa: u64, data: &[u8]) -> Result<(), u64> {
        self.check(pa, data.len())?;
        let mut done = 0usize;
        while done < data.len() {
            let at = pa + done as u64;
            let off = (at & (FRAME_U64 - 1)) as usize;
            let n = (FRAME - off).min(data.len() - done);
            let chunk = &data[done..done + n];
            let key = at >> FRAME_SHIFT;
            if self.watched.contains(&key) {
                self.gen += 1;
            }
            if let Some(f) = self.frames.get_mut(&key) {
                f[off..off + n].copy_from_slice(chunk);
            } else if chunk.iter().any(|&b| b != 0) {
                let mut f = Box::new([0u8; FRAME]);
                f[off..off + n].copy_from_slice(chunk);
                self.frames.insert(key, f);
            }
            done += n;
        }
        Ok(())
    }

    /// Reads a little-endian 64-bit word; `None` outside RAM.
    pub(crate) fn read_u64(&self, pa: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(pa, &mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }

    /// Zeroes the whole frames `[pa, pa + len)` (page aligned, RAM checked
    /// by the caller's translation): materialised frames are dropped, so the
    /// cost follows the frames holding data, not the bytes.
    pub(crate) fn zero_frames(&mut self, pa: u64, len: u64) -> Result<(), u64> {
        self.check(pa, len as usize)?;
        let (first, last) = (pa >> FRAME_SHIFT, (pa + len) >> FRAME_SHIFT);
        let n = last - first;
        let in_range = |k: &u64| (first..last).contains(k);
        // Whichever is smaller: the range, or the frames known.
        let watched = if n <= self.watched.len() as u64 {
            (first..last).any(|k| self.watched.contains(&k))
        } else {
            self.watched.iter().any(in_range)
        };
        if watched {
            self.gen += 1;
        }
        if n <= self.frames.len() as u64 {
            for k in first..last {
                self.frames.remove(&k);
            }
        } else {
            self.frames.retain(|k, _| !in_range(k));
        }
        Ok(())
    }

    /// Whether frame `frame` reads as all zeroes.
    pub(crate) fn frame_is_zero(&self, frame: u64) -> bool {
        match self.frames.get(&frame) {
            Some(f) => f.iter().all(|&b| b == 0),
            None => true,
        }
    }

    /// A copy of frame `frame`.
    pub(crate) fn frame_bytes(&self, frame: u64) -> Vec<u8> {
        match self.frames.get(&frame) {
            Some(f) => f.to_vec(),
            None => vec![0; FRAME],
        }
    }
}
