//! The secret-free cost section: what it counts is what each mode does.

use hvmm_bench::secret::{insert_section, markdown, run_secret};

#[test]
fn each_mode_reaches_tables_only_through_its_own_path_and_every_slot_is_given_back() {
    let r = run_secret(1).expect("both modes boot and run the rows");
    assert_eq!(r.boots.len(), 4);
    for b in &r.boots {
        let dm: u64 = b.phases.iter().map(|p| p.access.directmap).sum();
        let mc: u64 = b.phases.iter().map(|p| p.access.domain_page).sum();
        // Both arm64 modes reach tables through mapcache slots (the
        // direct-map mode's tables come from a pool it does not map).
        assert!(dm == 0 && mc > 0, "{b:?}");
    }
    assert_eq!(r.rows.len(), 10, "five rows in two modes");
    for row in &r.rows {
        let (_, dm, mc) = row.maps;
        assert_eq!(dm, 0, "{row:?}");
        assert!(mc > 0, "{row:?}");
        // Every slot map outside the image is given back, invalidated.
        assert_eq!(row.slot_tlbi, mc, "{row:?}");
        assert!(row.ns_per_unit > 0.0, "{row:?}");
    }
}

#[test]
fn the_section_goes_before_the_notes() {
    let r = run_secret(1);
    let md = insert_section("# B\n\n## Targets\n\n## Notes\n\n- n\n".into(), &r);
    let s = md.find("## The arm64 secret-free mode").expect("section");
    assert!(s < md.find("## Notes").unwrap());
    assert!(md.contains("| map-single | secret-free |"));
    assert!(markdown(&Err("boom".into())).contains("FAILED: boom"));
}
