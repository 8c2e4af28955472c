//! cargo fuzz target: see `hvmm_testkit::fuzz::dtb_parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hvmm_testkit::fuzz::dtb_parse(data);
});
