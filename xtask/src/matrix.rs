//! `cargo xtask test-qemu`: the QEMU boot matrix.
pub fn test_qemu(_arch: Option<crate::Arch>, _verbose: bool) -> anyhow::Result<i32> {
    anyhow::bail!("not yet")
}
