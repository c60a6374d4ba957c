//! Keeps the last encoder a process loaded, for its next run with the same tokenizer, template
//! and options, when the process asks for it ([`set_enabled`]).
//!
//! For the workers of `fastsft prep --engine ray`: a worker runs one work unit after another in
//! the same process, and loading the encoder (tokenizer from its cache, template, self-checks)
//! costs 18-80 ms a unit (Llama 3.1 18 ms, Qwen2.5 35 ms, Gemma 80 ms; benches/RESULTS.md), which
//! decides how small units can be and so how well they balance. Off by default: an encoder holds
//! tens to hundreds of MB, which a process that preps once should not keep.
//!
//! A kept encoder is used again only when everything its loading read is unchanged: the same
//! paths, and for each file it read the same device, inode, size, modification and change time
//! (the change time moves on every write and cannot be set back), the same
//! `FASTSFT_TOKENIZER`, and the same template choice and options. Otherwise it is loaded anew
//! (and kept in place of the old one).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::encode::{EncodeOptions, Encoder};
use crate::error::Result;
use crate::schema::SchemaOptions;

static ENABLED: AtomicBool = AtomicBool::new(false);
static KEPT: Mutex<Option<(Key, Arc<Encoder>)>> = Mutex::new(None);

/// Turns keeping on or off for this process; off also drops the kept encoder.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::SeqCst);
    if !enabled {
        *KEPT.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The encoder for these arguments: the kept one when its key matches, else newly loaded (and
/// kept, when keeping is on).
pub fn load(tokenizer: &Path, template: Option<&str>, schema: SchemaOptions, options: EncodeOptions) -> Result<Arc<Encoder>> {
    if !ENABLED.load(Ordering::SeqCst) {
        return Ok(Arc::new(Encoder::load(tokenizer, template, schema, options)?));
    }
    let key = Key::new(tokenizer, template, &schema, &options);
    {
        let kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((kept_key, encoder)) = kept.as_ref() {
            if *kept_key == key {
                return Ok(Arc::clone(encoder));
            }
        }
    }
    let encoder = Arc::new(Encoder::load(tokenizer, template, schema, options)?);
    // Kept only if nothing changed while it loaded: what it read is then what the key says.
    if Key::new(tokenizer, template, encoder.schema(), encoder.options()) == key {
        *KEPT.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, Arc::clone(&encoder)));
    }
    Ok(encoder)
}

#[derive(Debug, PartialEq, Eq)]
struct Key {
    tokenizer: PathBuf,
    template: Option<String>,
    /// Every file the load may read, and what its metadata said (None: absent).
    files: Vec<(PathBuf, Option<Stamp>)>,
    tokenizer_env: Option<std::ffi::OsString>,
    /// The options, as their Debug text (every field, in a fixed order).
    options: String,
}

#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Key {
    fn new(tokenizer: &Path, template: Option<&str>, schema: &SchemaOptions, options: &EncodeOptions) -> Key {
        let dir = if tokenizer.is_dir() { tokenizer.to_path_buf() } else { tokenizer.parent().map(Path::to_path_buf).unwrap_or_default() };
        let mut paths = vec![dir.join("tokenizer.json"), dir.join("tokenizer_config.json"), dir.join("chat_template.jinja")];
        if tokenizer.is_file() {
            paths.push(tokenizer.to_path_buf());
        }
        if let Some(file) = template.filter(|t| *t != "chatml") {
            paths.push(PathBuf::from(file));
        }
        Key {
            tokenizer: tokenizer.to_path_buf(),
            template: template.map(str::to_string),
            files: paths.into_iter().map(|p| (p.clone(), stamp(&p))).collect(),
            tokenizer_env: std::env::var_os("FASTSFT_TOKENIZER"),
            options: format!("{schema:?} {options:?}"),
        }
    }
}

#[cfg(unix)]
fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        device: m.dev(),
        inode: m.ino(),
        size: m.size(),
        modified: (m.mtime(), m.mtime_nsec()),
        changed: (m.ctime(), m.ctime_nsec()),
    })
}

#[cfg(not(unix))]
fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    let nanos = |t: std::io::Result<std::time::SystemTime>| {
        t.ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or((0, 0), |d| (d.as_secs() as i64, i64::from(d.subsec_nanos())))
    };
    Some(Stamp { device: 0, inode: 0, size: m.len(), modified: nanos(m.modified()), changed: nanos(m.created()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_of_qwen(dir: &Path) -> PathBuf {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tokenizers/qwen2.5");
        let target = dir.join("qwen");
        std::fs::create_dir_all(&target).unwrap();
        for entry in std::fs::read_dir(&source).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
        }
        target
    }

    /// One test for the process-wide switch (tests run in parallel threads).
    #[test]
    fn kept_encoder_is_reused_only_while_its_files_and_options_are_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let qwen = copy_of_qwen(dir.path());
        let load_default = || load(&qwen, None, SchemaOptions::default(), EncodeOptions::default()).unwrap();
        set_enabled(true);
        let first = load_default();
        assert!(Arc::ptr_eq(&first, &load_default()), "same tokenizer and options: the kept encoder");
        let other = EncodeOptions { max_len: Some(7), ..EncodeOptions::default() };
        let with_other_options = load(&qwen, None, SchemaOptions::default(), other).unwrap();
        assert!(!Arc::ptr_eq(&first, &with_other_options), "other options: loaded anew");
        let again = load_default();
        assert!(!Arc::ptr_eq(&first, &again) && !Arc::ptr_eq(&with_other_options, &again), "only the last one is kept");
        // The template rewritten with the same bytes: its change time moved, so loaded anew.
        let config = qwen.join("tokenizer_config.json");
        std::fs::write(&config, std::fs::read(&config).unwrap()).unwrap();
        assert!(!Arc::ptr_eq(&again, &load_default()));
        set_enabled(false);
        let off = load_default();
        assert!(!Arc::ptr_eq(&off, &load_default()), "off: every load is new");
    }
}
