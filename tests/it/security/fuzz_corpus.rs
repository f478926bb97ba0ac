//! Replays every file of `fuzz/corpus/<target>/` through the harness function
//! of that target, so CI exercises the seeds and every crash ever found
//! (saved there as `regress-*`) without running a fuzzer.

use super::fuzz_harness::TARGETS;

#[test]
fn every_fuzz_corpus_file_replays_cleanly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    for (target, run) in TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds for {target}");
        for file in files {
            let input = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&input));
            assert!(outcome.is_ok(), "{target}: {} fails", file.display());
            replayed += 1;
        }
    }
    // Every target directory exists and has seeds.
    for entry in std::fs::read_dir(&root).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "corpus dir {name} has no harness"
        );
    }
    assert!(replayed >= TARGETS.len());
}
