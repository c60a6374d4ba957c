//! Keeps the tokenizer cache (rust/tokenizer_cache.rs) from growing without end: every build of
//! fastsft writes its own entry per `tokenizer.json` (2-3x its size: 15 MB for Qwen2.5's 5.4 MB,
//! 32 MB for Gemma's 13.7 MB), and nothing else ever removed the entries of builds no longer
//! installed. A machine that followed fastsft's development held 1.9 GB of them
//! (`du -sh ~/.cache/fastsft`).
//!
//! Each time an entry is written (a cold load, once per tokenizer and build), the directory is
//! swept: an entry unused for [`UNUSED_OTHER_BUILD`] is removed when another build wrote it, for
//! [`UNUSED_THIS_BUILD`] when this build did; temporary files older than [`STALE_TEMPORARY`]
//! (a writer that died) go too. "Used" is the entry's modification time, which a read moves
//! forward once a day ([`touch_if_old`]). Two versions of fastsft in use on one machine keep
//! both their entries; anything removed is rebuilt by the next cold load. Files that are not
//! cache entries are never touched.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::tokenizer_cache::CacheDir;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
pub const UNUSED_OTHER_BUILD: Duration = Duration::from_secs(7 * 24 * 60 * 60);
pub const UNUSED_THIS_BUILD: Duration = Duration::from_secs(30 * 24 * 60 * 60);
pub const STALE_TEMPORARY: Duration = Duration::from_secs(60 * 60);

/// Removes what is unused (see the module comment); returns how many files were removed.
/// Errors (a file removed by another process meanwhile, no permission) are skipped.
pub fn prune(dir: &CacheDir, this_build_suffix: &str, now: SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(&dir.0) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(age) = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| now.duration_since(t).ok()) else { continue };
        let limit = if name.starts_with('.') && name.contains(".bin.tmp-") {
            STALE_TEMPORARY
        } else if !is_entry_name(name) {
            continue;
        } else if name.ends_with(this_build_suffix) {
            UNUSED_THIS_BUILD
        } else {
            UNUSED_OTHER_BUILD
        };
        if age > limit && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A read entry whose modification time is more than a day old gets the current time: the
/// mark of use that [`prune`] reads, written at most once a day per entry.
pub fn touch_if_old(path: &Path, now: SystemTime) {
    let Ok(file) = std::fs::File::options().write(true).open(path) else { return };
    let old = file.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| now.duration_since(t).ok()).is_some_and(|age| age > DAY);
    if old {
        let _ = file.set_modified(now);
    }
}

/// `<64 hex digits of sha256>-<build>.bin`, as `CacheDir::entry_path` names entries.
fn is_entry_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    name.len() > 69 && name.ends_with(".bin") && bytes[64] == b'-' && bytes[..64].iter().all(u8::is_ascii_hexdigit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "11e818f948f43497f364722def50c13f419158554961ee4bb095fbd3350895c3";

    fn file_aged(dir: &Path, name: &str, age: Duration, now: SystemTime) {
        let path = dir.join(name);
        std::fs::write(&path, b"x").unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(now - age).unwrap();
    }

    #[test]
    fn removes_only_entries_and_temporaries_unused_past_their_limit() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let this = "-0.1.0+aaaa.bin";
        let hours = |h: u64| Duration::from_secs(h * 3600);
        let files = [
            (format!("{SHA}-0.1.0+bbbb.bin"), 8 * 24, false), // another build, unused 8 days
            (format!("{SHA}-0.1.0+cccc.bin"), 24, true),      // another build, used yesterday
            (format!("{SHA}{this}"), 31 * 24, false),         // this build, unused 31 days
            (format!("{}{this}", "ab".repeat(32)), 10 * 24, true), // this build, 10 days
            (format!(".{SHA}{this}.tmp-123-0-5"), 2, false),  // a dead writer's temporary
            (format!(".{SHA}{this}.tmp-124-0-6"), 0, true),   // a writer at work
            ("notes.txt".to_string(), 100 * 24, true),        // not the cache's
            (format!("{}-0.1.0+bbbb.bin", "zz".repeat(32)), 100 * 24, true), // not a sha256 name
        ];
        for (name, age, _) in &files {
            file_aged(dir.path(), name, hours(*age), now);
        }
        let removed = prune(&CacheDir(dir.path().to_path_buf()), this, now);
        for (name, _, kept) in &files {
            assert_eq!(dir.path().join(name).exists(), *kept, "{name}");
        }
        assert_eq!(removed, files.iter().filter(|f| !f.2).count());
    }

    #[test]
    fn a_read_marks_an_old_entry_used_at_most_once_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let name = format!("{SHA}-0.1.0+aaaa.bin");
        let path = dir.path().join(&name);
        let modified = || std::fs::metadata(&path).unwrap().modified().unwrap();
        file_aged(dir.path(), &name, Duration::from_secs(3 * 3600), now);
        let recent = modified();
        touch_if_old(&path, now);
        assert_eq!(modified(), recent, "used within the day: left alone");
        file_aged(dir.path(), &name, 40 * DAY, now);
        touch_if_old(&path, now);
        assert_eq!(modified(), now);
    }
}
