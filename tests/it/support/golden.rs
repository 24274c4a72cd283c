//! Expected text: golden files (`tests/golden/NAME` holds the expected text; `UPDATE_GOLDEN=1` rewrites it;
//! review the diff like code), and lines a text must contain.

use std::path::PathBuf;

pub fn assert_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(actual, expected, "differs from {} (UPDATE_GOLDEN=1 to accept)", path.display());
}

/// Each of `expected` is in `text` (the first missing one named, with the whole text).
pub fn assert_contains_all(text: &str, expected: &[&str]) {
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}
