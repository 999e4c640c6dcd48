//! The one bounded reader for host-writable files.

#[test]
fn files_over_the_limit_are_refused_at_and_under_are_read() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("f");
    std::fs::write(&p, vec![7u8; 100]).unwrap();
    assert_eq!(dc_tee::read_limited(&p, 100).unwrap(), vec![7u8; 100]);
    let e = dc_tee::read_limited(&p, 99).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("larger than 99 bytes"), "{e}");
    let missing = dc_tee::read_limited(&t.path().join("nope"), 10).unwrap_err();
    assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
}
