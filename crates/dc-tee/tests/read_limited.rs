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

#[test]
fn a_fifo_is_refused_promptly_not_waited_on() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("record.json");
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Run it on a thread so a regression (a blocking open) fails the test instead of hanging.
    let (tx, rx) = std::sync::mpsc::channel();
    let q = p.clone();
    std::thread::spawn(move || tx.send(dc_tee::read_limited(&q, 10)));
    let e = rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("read_limited blocked on a FIFO with no writer")
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(
        e.to_string(),
        format!("{} is not a regular file", p.display())
    );
}

#[test]
fn a_directory_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let e = dc_tee::read_limited(t.path(), 10).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("is not a regular file"), "{e}");
}
