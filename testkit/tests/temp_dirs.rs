//! A test's temporary directories are removed when it passes and kept when it fails.
use caldera_testkit::harness::temp_dir;

#[test]
fn a_passing_tests_directories_are_removed_and_a_failing_tests_are_kept() {
    let passed = std::thread::spawn(|| {
        let d = temp_dir("cleanup-pass");
        std::fs::write(d.join("journal"), b"x").unwrap();
        std::fs::create_dir_all(d.join("sub/dir")).unwrap();
        d
    })
    .join()
    .unwrap();
    assert!(
        !passed.exists(),
        "{} left behind by a passing test",
        passed.display()
    );

    let (tx, rx) = std::sync::mpsc::channel();
    let failed = std::thread::spawn(move || {
        let d = temp_dir("cleanup-fail");
        std::fs::write(d.join("node.log"), b"why it failed").unwrap();
        tx.send(d).unwrap();
        panic!("a failing test (expected in this test)");
    })
    .join();
    assert!(failed.is_err());
    let kept = rx.recv().unwrap();
    assert!(
        kept.join("node.log").exists(),
        "a failing test's directory must be kept"
    );
    std::fs::remove_dir_all(&kept).unwrap();
}
