//! `Table`, the owned handle with plain verbs, on the host back end: each
//! verb does what its name says, sizes are pages everywhere, the read-only
//! verbs need no frame allocator, refusals change nothing, and a provider
//! written the way the docs show compiles and works.

use hvmm::host::{HostArch, HostFrames, HostIdentity, HostMemory};
use hvmm::{
    AccessError, AccessPath, Arch, Arm32, Arm32Stage2, Arm64, Arm64Stage2, Attrs, Error,
    FrameAlloc, Ipa, MapFlags, Mfn, NoFrames, Paddr, S2Attrs, Table, TableAccess, Vaddr, Vmid,
};

type HostTable<'a, F> = Table<F, &'a mut HostArch, &'a mut HostIdentity, &'a mut HostFrames>;

fn stage1(mem: &mut HostMemory) -> HostTable<'_, Arm64> {
    let (arch, access, frames) = mem.parts();
    Table::new(Arm64, arch, access, frames).expect("root")
}

#[test]
fn map_translate_protect_unmap_do_what_they_say() {
    let mut mem = HostMemory::new(64);
    let mut t = stage1(&mut mem);
    let r = t
        .map(Vaddr(0x20_0000), Paddr(0x8000_0000), 16, Attrs::RW)
        .unwrap();
    assert_eq!(r.leaves, 16);
    let leaf = t.translate(Vaddr(0x20_3456)).unwrap().unwrap();
    assert_eq!(
        (leaf.level, leaf.pa, leaf.attrs),
        (3, Paddr(0x8000_3456), Some(Attrs::RW))
    );
    t.protect(Vaddr(0x20_3000), 2, Attrs::RO).unwrap();
    assert_eq!(
        t.translate(Vaddr(0x20_4000)).unwrap().unwrap().attrs,
        Some(Attrs::RO)
    );
    assert_eq!(
        t.translate(Vaddr(0x20_5000)).unwrap().unwrap().attrs,
        Some(Attrs::RW)
    );
    let r = t.unmap(Vaddr(0x20_0000), 16).unwrap();
    assert_eq!(r.leaves, 16);
    assert_eq!(t.translate(Vaddr(0x20_0000)).unwrap(), None);
    assert_eq!(t.translate(Vaddr(0x20_f000)).unwrap(), None);
}

#[test]
fn map_uses_blocks_by_default_and_pages_when_told() {
    let mut mem = HostMemory::new(64);
    let mut t = stage1(&mut mem);
    t.map(Vaddr(0x4000_0000), Paddr(0x4000_0000), 512, Attrs::RW)
        .unwrap();
    assert_eq!(t.translate(Vaddr(0x4000_0000)).unwrap().unwrap().level, 2);
    t.set_map_flags(MapFlags::PAGES);
    assert_eq!(t.map_flags(), MapFlags::PAGES);
    t.map(Vaddr(0x4020_0000), Paddr(0x4020_0000), 512, Attrs::RW)
        .unwrap();
    assert_eq!(t.translate(Vaddr(0x4020_0000)).unwrap().unwrap().level, 3);
}

#[test]
fn walk_reports_pages_as_the_updates_count_them() {
    let mut mem = HostMemory::new(64);
    let mut t = stage1(&mut mem);
    // One 2 MiB block and three pages: 515 pages mapped, 515 pages walked.
    let mapped = 512 + 3;
    t.map(Vaddr(0x4000_0000), Paddr(0x8000_0000), mapped, Attrs::RW)
        .unwrap();
    let mut runs = Vec::new();
    t.walk(Vaddr(0x4000_0000), 1024, |va, pages, leaf| {
        runs.push((va.0, pages, leaf.level, leaf.pa.0))
    })
    .unwrap();
    assert_eq!(
        runs,
        [
            (0x4000_0000, 512, 2, 0x8000_0000),
            (0x4020_0000, 1, 3, 0x8020_0000),
            (0x4020_1000, 1, 3, 0x8020_1000),
            (0x4020_2000, 1, 3, 0x8020_2000),
        ]
    );
    assert_eq!(runs.iter().map(|r| r.1).sum::<u64>(), mapped);
    // A walk that starts inside the block reports only the part it visits.
    let mut part = Vec::new();
    t.walk(Vaddr(0x4010_0000), 4, |va, pages, leaf| {
        part.push((va.0, pages, leaf.pa.0))
    })
    .unwrap();
    assert_eq!(part, [(0x4010_0000, 4, 0x8010_0000)]);
}

#[test]
fn read_only_verbs_need_no_frame_allocator() {
    let mut mem = HostMemory::new(64);
    let mut t = stage1(&mut mem);
    t.map(Vaddr(0x20_0000), Paddr(0x8000_0000), 4, Attrs::RX)
        .unwrap();
    let (raw, arch, access, _frames) = t.into_parts();
    // The same table with no allocator at all: translate, walk and dump work.
    let mut view = Table::from_parts(raw, arch, access, ());
    assert_eq!(
        view.translate(Vaddr(0x20_1000)).unwrap().unwrap().pa,
        Paddr(0x8000_1000)
    );
    let mut n = 0;
    view.walk(Vaddr(0x20_0000), 8, |_, pages, _| n += pages)
        .unwrap();
    assert_eq!(n, 4);
    let mut out = String::new();
    view.dump(Vaddr(0x20_1000), &mut out).unwrap();
    assert!(out.contains("L3[0x001]"), "{out}");
    assert!(out.contains("-> PA 0x0000000080001000"), "{out}");
}

#[test]
fn a_table_with_no_frames_refuses_to_grow_and_changes_nothing() {
    let mut mem = HostMemory::new(64);
    let t = stage1(&mut mem);
    let (raw, arch, access, _) = t.into_parts();
    let mut t = Table::from_parts(raw, arch, access, NoFrames);
    let before = t.arch().snapshot();
    let e = t
        .map(Vaddr(0x20_0000), Paddr(0x8000_0000), 1, Attrs::RW)
        .unwrap_err();
    assert_eq!(
        e,
        Error::OutOfMemory {
            needed: 3,
            available: 0
        }
    );
    assert_eq!(t.arch().snapshot(), before);
}

#[test]
fn refusals_leave_the_table_as_it_was() {
    let mut mem = HostMemory::new(64);
    let mut t = stage1(&mut mem);
    t.map(Vaddr(0x20_0000), Paddr(0x8000_0000), 4, Attrs::RW)
        .unwrap();
    let before = t.arch().snapshot();
    let used = t.frames().in_use();
    type Verb<'a> = fn(&mut HostTable<'a, Arm64>) -> Result<hvmm::UpdateReport, Error>;
    let cases: [(&str, Verb); 5] = [
        ("overlapping map", |t| {
            t.map(Vaddr(0x1f_e000), Paddr(0x9000_0000), 4, Attrs::RW)
        }),
        ("empty map", |t| {
            t.map(Vaddr(0x40_0000), Paddr(0), 0, Attrs::RW)
        }),
        ("misaligned VA", |t| {
            t.map(Vaddr(0x40_0010), Paddr(0), 1, Attrs::RW)
        }),
        ("protect of a hole", |t| {
            t.protect(Vaddr(0x20_3000), 2, Attrs::RO)
        }),
        ("beyond 48 bits", |t| {
            t.map(Vaddr(1 << 48), Paddr(0), 1, Attrs::RW)
        }),
    ];
    for (what, verb) in cases {
        let e = verb(&mut t).expect_err(what);
        assert!(!e.to_string().is_empty(), "{what}");
        assert_eq!(t.arch().snapshot(), before, "{what} changed the tables");
        assert_eq!(t.frames().in_use(), used, "{what} kept frames");
    }
}

#[test]
fn stage2_table_maps_ipas_and_reports_its_registers() {
    let mut mem = HostMemory::new(64);
    let (arch, access, frames) = mem.parts();
    let mut g = Table::new_stage2(Arm64Stage2::<40>, Vmid(7), arch, access, frames).unwrap();
    assert_eq!(g.vmid(), Vmid(7));
    assert_eq!(g.vttbr(), g.root().paddr().0 | (7 << 48));
    // 40-bit IPA: T0SZ 24, start level 1 (SL0 = 1).
    assert_eq!(g.vtcr() & 0x3f, 24);
    assert_eq!((g.vtcr() >> 6) & 3, 1);
    g.map(Ipa(0x4000_0000), Paddr(0x8000_0000), 512, S2Attrs::RAM)
        .unwrap();
    let r = g.protect(Ipa(0x4000_5000), 1, S2Attrs::RAM_RO).unwrap();
    assert_eq!(r.splits, 1, "a page inside a 2 MiB block splits it");
    let leaf = g.translate(Ipa(0x4000_5008)).unwrap().unwrap();
    assert_eq!(
        (leaf.level, leaf.pa, leaf.attrs),
        (3, Paddr(0x8000_5008), Some(S2Attrs::RAM_RO))
    );
    // An IPA beyond 40 bits is refused, never folded onto a lower one.
    assert!(matches!(
        g.translate(Ipa(1 << 40)),
        Err(Error::VaOutOfRange { va_bits: 40, .. })
    ));
    let freed = g.destroy().unwrap();
    assert_eq!(freed, 2 + 1 + 1, "two root pages, an L2 and an L3 table");
    assert_eq!(mem.frames.in_use(), 0);
}

#[test]
fn a_vmid_too_wide_is_refused_and_takes_no_frame() {
    let mut mem = HostMemory::new(8);
    let (arch, access, frames) = mem.parts();
    let e = Table::new_stage2(Arm32Stage2, Vmid(256), arch, access, frames).unwrap_err();
    assert_eq!(
        e,
        Error::VmidTooWide {
            vmid: Vmid(256),
            bits: 8
        }
    );
    assert_eq!(mem.frames.in_use(), 0);
}

#[test]
fn arm32_table_maps_above_4_gib_of_physical_memory() {
    let mut mem = HostMemory::new(16);
    let (arch, access, frames) = mem.parts();
    let mut t = Table::new(Arm32, arch, access, frames).unwrap();
    t.map(Vaddr(0x8000_0000), Paddr(0x80_4000_0000), 1, Attrs::RW)
        .unwrap();
    assert_eq!(
        t.translate(Vaddr(0x8000_0004)).unwrap().unwrap().pa,
        Paddr(0x80_4000_0004)
    );
    assert!(t
        .map(Vaddr(0x8000_1000), Paddr(1 << 40), 1, Attrs::RW)
        .is_err());
}

/// A provider written as the crate's docs show it: `self.can_reach(mfn)`
/// inside `map_table` of a generic `impl<A: Arch>` names one method.
struct Window {
    base: u64,
    size: u64,
    maps: u64,
}

impl AccessPath for Window {
    fn name(&self) -> &'static str {
        "window"
    }
    fn can_reach(&self, mfn: Mfn) -> bool {
        mfn.paddr().0.wrapping_sub(self.base) < self.size
    }
}

impl<A: Arch> TableAccess<A> for Window {
    fn map_table(&mut self, _arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
        if !self.can_reach(mfn) {
            return Err(AccessError::Unreachable {
                provider: self.name(),
            });
        }
        self.maps += 1;
        Ok(Vaddr(mfn.paddr().0))
    }
    fn unmap_table(&mut self, _arch: &mut A, _mfn: Mfn, _va: Vaddr) {}
}

#[test]
fn an_unreachable_table_frame_is_named_once() {
    let mut mem = HostMemory::new(16);
    let base = Mfn(0x4_0000).paddr().0;
    // The window reaches the root's frame only.
    let window = Window {
        base,
        size: 0x1000,
        maps: 0,
    };
    let mut frames = HostFrames::new(Mfn(0x4_0000), 16);
    let mut t = Table::new(Arm64, &mut mem.arch, window, &mut frames).unwrap();
    let root = t.root();
    let e = t
        .map(Vaddr(0x20_0000), Paddr(0x8000_0000), 1, Attrs::RW)
        .unwrap_err();
    let Error::TableAccess { mfn, err } = e else {
        panic!("{e:?}")
    };
    assert_ne!(mfn, root);
    assert_eq!(err, AccessError::Unreachable { provider: "window" });
    let msg = e.to_string();
    assert_eq!(
        msg,
        format!("cannot map table frame {mfn}: out of the reach of window")
    );
    assert_eq!(msg.matches(&mfn.to_string()).count(), 1, "{msg}");
    assert!(t.access().maps > 0);
}

#[test]
fn errors_are_std_errors_with_messages() {
    fn is_error<E: core::error::Error>(e: E) -> String {
        e.to_string()
    }
    assert_eq!(
        is_error(hvmm::OutOfFrames {
            needed: 3,
            available: 1
        }),
        "out of frames: 3 needed, 1 available"
    );
    assert_eq!(
        is_error(AccessError::SlotsExhausted {
            provider: "pmap",
            slots: 8
        }),
        "all 8 pmap slots are in use"
    );
    assert_eq!(
        is_error(Error::VaMisaligned(Vaddr(0x1010))),
        "virtual address 0x0000000000001010 is not 4 KiB aligned"
    );
}

#[test]
fn the_parts_come_back() {
    let mut mem = HostMemory::new(16);
    let mut frames = HostFrames::new(Mfn(0x4_0000), 16);
    let t = Table::new(Arm64, &mut mem.arch, &mut mem.access, &mut frames).unwrap();
    let root = t.root();
    let (raw, _, _, frames_back) = t.into_parts();
    assert_eq!(raw.root(), root);
    assert_eq!(frames_back.in_use(), 1);
    assert_eq!(frames.available(), 15);
    // FrameAlloc is implemented for `&mut` of an allocator.
    fn takes<M: FrameAlloc>(_: M) {}
    takes(&mut frames);
}
