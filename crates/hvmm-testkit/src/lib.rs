//! # hvmm-testkit — what hvmm's tests and fuzz targets share
//!
//! Not a product crate and not published: the rigs that run hvmm on the
//! machine model ([`hvmm_model`]) and judge what it did, in one place, so
//! that no product crate carries test code and no test suite keeps its own
//! copy.
//!
//! - [`tables`]: hand-built arm64 / arm32 tables for the model's own tests
//!   (walks, TLBs, break-before-make, stage 2);
//! - [`engine`]: the update engine on the model — a direct-map window over
//!   the live tables of the model's MMU, a frame pool, a reference map, and
//!   the checks (translations on every CPU, stale TLB entries, BBM, the
//!   table bytes read independently of hvmm's descriptor code, leaks, the
//!   errors the rules allow). The model's `engine_*` tests and the
//!   `engine_ops` fuzz target run on it;
//! - [`boot`]: whole boots on the model and what a good boot or a clean
//!   refusal must look like (the boot crate's tests, the DTB fuzz targets);
//! - [`fuzz`]: the fuzz targets' logic (`fuzz/` calls it; the corpora are
//!   replayed on stable by `tests/fuzz_replay.rs`).
//!
//! Descriptor bits are read here with positions from the Arm ARM, not
//! through hvmm's own descriptor code, so that a mistake there cannot hide.

pub mod boot;
pub mod engine;
pub mod fuzz;
pub mod tables;
