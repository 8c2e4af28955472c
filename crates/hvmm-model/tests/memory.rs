//! Sparse physical memory.

use hvmm::{Mfn, Paddr};
use hvmm_model::{Machine, ModelError, Regime};

fn machine() -> Machine {
    let mut m = Machine::new(Regime::Arm64El2 { pa_bits: 48 }, 1);
    m.add_ram(Paddr(0x4000_0000), 0x4000_0000).unwrap();
    m
}

#[test]
fn pages_materialise_zeroed_on_first_write() {
    let mut m = machine();
    assert_eq!(m.phys_read_u64(Paddr(0x7fff_fff8)).unwrap(), 0);
    assert_eq!(m.materialised_frames(), 0);
    m.phys_write_u64(Paddr(0x5000_0008), 7).unwrap();
    assert_eq!(m.materialised_frames(), 1);
    assert_eq!(m.phys_read_u64(Paddr(0x5000_0000)).unwrap(), 0);
    assert!(!m.phys_page_is_zero(Paddr(0x5000_0000)).unwrap());
    assert!(m.phys_page_is_zero(Paddr(0x5000_1000)).unwrap());
}

#[test]
fn ram_up_to_the_architectures_limit() {
    let mut m = machine();
    let top = (1u64 << 48) - 0x1000;
    m.add_ram(Paddr(top), 0x1000).unwrap();
    m.phys_write_u64(Paddr(top + 0xff8), 1).unwrap();
    assert!(m.add_ram(Paddr(1 << 48), 0x1000).is_err());
    assert!(m.add_ram(Paddr(0x1234), 0x1000).is_err());
    assert!(m.add_ram(Paddr(0x1000), 0).is_err());
    let mut a32 = Machine::new(Regime::Arm32Hyp, 1);
    assert!(a32.add_ram(Paddr(0xff_ffff_f000), 0x1000).is_ok());
    assert!(a32.add_ram(Paddr(1 << 40), 0x1000).is_err());
}

#[test]
fn physical_access_outside_ram_is_refused() {
    let mut m = machine();
    assert_eq!(
        m.phys_read_u64(Paddr(0x1000)),
        Err(ModelError::NotRam(Paddr(0x1000)))
    );
    // A write straddling the end of RAM writes nothing.
    assert_eq!(
        m.phys_write(Paddr(0x7fff_fffc), &[1; 8]),
        Err(ModelError::NotRam(Paddr(0x8000_0000)))
    );
    assert!(m.phys_page_is_zero(Paddr(0x7fff_f000)).unwrap());
    assert!(m.phys_page_is_zero(Paddr(0x1000)).is_err());
}

#[test]
fn snapshots_show_which_frames_changed() {
    let mut m = machine();
    let frames = [Mfn(0x40000), Mfn(0x40001)];
    let snap = m.snapshot_frames(&frames).unwrap();
    m.phys_write_u64(Paddr(0x4000_1008), 1).unwrap();
    assert_eq!(m.changed_frames(&snap), vec![Mfn(0x40001)]);
    assert_eq!(snap.bytes(Mfn(0x40001)).unwrap()[8], 0);
    assert!(m.snapshot_frames(&[Mfn(1)]).is_err());
}
