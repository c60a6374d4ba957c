//! Streaming `.npy` writers and the atomic dataset directory (DESIGN §2).
//!
//! Everything is written into a temporary sibling directory (`.OUT.fastsft-tmp-PID`); only when
//! every array, `rejects.jsonl` and `manifest.json` are complete and synced is it renamed to
//! `OUT`. A crash, a kill or a full disk leaves at most a temporary directory, never something
//! that looks like a finished dataset.
//!
//! Each array's checksum is computed while it is written: the sha256 of its data bytes (the file
//! after the 128-byte `.npy` header, which is rewritten at the end and is checked by its dtype
//! and shape instead). sha256 because it needs no new crate, is the hash the manifest already
//! uses for inputs and tokenizers, and runs on SHA-NI in both the `sha2` crate and Python's
//! hashlib: measured 1.63-1.66 GiB/s in Rust and 1.37 GiB/s in `hashlib` on a 2-core EPYC, against
//! prep's ~8 MB/s of array bytes per encoding thread (~2.5M tokens/s x ~3 bytes), so well under 1%
//! of one core per encoding thread. crc32fast was 14-20 GiB/s but 3.9 GiB/s in Python's zlib, and
//! 32 bits is a weak identity for multi-GB files copied between machines (benches/RESULTS.md).

use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Fixed header size: numpy's v1.0 header padded to 128 bytes leaves room for any 64-bit shape,
/// so the header is rewritten in place once the length is known.
const HEADER_LEN: usize = 128;

pub struct NpyWriter {
    path: PathBuf,
    file: BufWriter<File>,
    descr: &'static str,
    item_size: usize,
    row_len: Option<usize>,
    items: u64,
    /// None for a Ray work unit's arrays, which the assembly hashes again ([`ArrayWriters::without_checksums`]).
    data_sha256: Option<Sha256>,
}

impl NpyWriter {
    /// `descr`: numpy dtype string (`<u2`, `<u4`, `|u1`, `<i8`); `row_len`: `Some(k)` for a 2-D
    /// array of shape `(rows, k)`.
    pub fn create(path: PathBuf, descr: &'static str, item_size: usize, row_len: Option<usize>) -> Result<Self> {
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut writer = NpyWriter { path, file: BufWriter::with_capacity(1 << 20, file), descr, item_size, row_len, items: 0, data_sha256: Some(Sha256::new()) };
        let header = writer.header();
        writer.file.write_all(&header).map_err(|e| Error::io(&writer.path, e))?;
        Ok(writer)
    }

    fn header(&self) -> Vec<u8> {
        let shape = match self.row_len {
            None => format!("({},)", self.items),
            Some(k) => format!("({}, {})", self.items / k as u64, k),
        };
        let dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", self.descr, shape);
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(b"\x93NUMPY\x01\x00");
        header.extend_from_slice(&((HEADER_LEN - 10) as u16).to_le_bytes());
        header.extend_from_slice(dict.as_bytes());
        header.resize(HEADER_LEN - 1, b' ');
        header.push(b'\n');
        header
    }

    pub fn write_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.items += (bytes.len() / self.item_size) as u64;
        if let Some(sha) = self.data_sha256.as_mut() {
            sha.update(bytes);
        }
        self.file.write_all(bytes).map_err(|e| Error::io(&self.path, e))
    }

    pub fn write_u8(&mut self, values: &[u8]) -> Result<()> {
        self.write_bytes(values)
    }

    pub fn write_i64(&mut self, values: &[i64]) -> Result<()> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write_bytes(&bytes)
    }

    /// Token ids as `<u2` or `<u4`, whichever this writer was created for.
    pub fn write_ids(&mut self, ids: &[u32]) -> Result<()> {
        let bytes: Vec<u8> = if self.item_size == 2 {
            ids.iter().flat_map(|&v| (v as u16).to_le_bytes()).collect()
        } else {
            ids.iter().flat_map(|v| v.to_le_bytes()).collect()
        };
        self.write_bytes(&bytes)
    }

    /// Writes out what was written so far and waits until it is on disk, so that `finish` has
    /// only the rest to sync (the assembly of a Ray run calls it while it waits for units).
    pub fn sync_so_far(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))?;
        self.file.get_ref().sync_data().map_err(|e| Error::io(&self.path, e))
    }

    /// Completes the file (final header, synced) and returns the sha256 hex of its data bytes
    /// (None when it was not computed).
    pub fn finish(mut self) -> Result<Option<String>> {
        let header = self.header();
        let path = self.path.clone();
        let io = |e| Error::io(&path, e);
        self.file.flush().map_err(io)?;
        let mut file = self.file.into_inner().map_err(|e| Error::io(&path, e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(self.data_sha256.map(|sha| crate::hashing::hex(&sha.finalize())))
    }
}

/// The arrays of a dataset (DESIGN §2), written together: the pipeline fills them record by
/// record, the assembly of a Ray run's units (rust/assemble.rs) unit by unit.
pub struct ArrayWriters {
    pub ids: NpyWriter,
    pub mask: NpyWriter,
    pub offsets: NpyWriter,
    pub origin: NpyWriter,
    pub turns: NpyWriter,
}

impl ArrayWriters {
    /// Ids as `<u4` when `wide` (a vocabulary over 65,536), else `<u2`; `offsets` starts with its 0.
    pub fn create(out: &OutputDir, wide: bool) -> Result<Self> {
        let (ids_descr, ids_size) = if wide { ("<u4", 4) } else { ("<u2", 2) };
        let mut arrays = ArrayWriters {
            ids: NpyWriter::create(out.file("input_ids.npy"), ids_descr, ids_size, None)?,
            mask: NpyWriter::create(out.file("loss_mask.npy"), "|u1", 1, None)?,
            offsets: NpyWriter::create(out.file("offsets.npy"), "<i8", 8, None)?,
            origin: NpyWriter::create(out.file("origin.npy"), "<i8", 8, Some(2))?,
            turns: NpyWriter::create(out.file("turns.npy"), "<i8", 8, None)?,
        };
        arrays.offsets.write_i64(&[0])?;
        Ok(arrays)
    }

    fn each_mut(&mut self) -> [&mut NpyWriter; 5] {
        [&mut self.ids, &mut self.mask, &mut self.offsets, &mut self.origin, &mut self.turns]
    }

    /// [`NpyWriter::sync_so_far`] for every file.
    pub fn sync_so_far(&mut self) -> Result<()> {
        self.each_mut().into_iter().try_for_each(NpyWriter::sync_so_far)
    }

    /// No checksums: for a Ray work unit whose arrays the assembly copies and hashes again (the
    /// unit's manifest then has null checksums). Saves the units ~2% of their CPU time.
    pub fn without_checksums(mut self) -> Self {
        for writer in self.each_mut() {
            writer.data_sha256 = None;
        }
        self
    }

    /// Completes every file; returns the manifest's `array_sha256`.
    pub fn finish(self) -> Result<serde_json::Value> {
        Ok(serde_json::json!({
            "input_ids.npy": self.ids.finish()?,
            "loss_mask.npy": self.mask.finish()?,
            "offsets.npy": self.offsets.finish()?,
            "origin.npy": self.origin.finish()?,
            "turns.npy": self.turns.finish()?,
        }))
    }
}

/// The output directory being written: a temporary name until [`OutputDir::commit`].
pub struct OutputDir {
    pub tmp: PathBuf,
    pub target: PathBuf,
    overwrite: bool,
}

impl OutputDir {
    /// Takes a new path or an empty directory (which the final rename replaces). An existing
    /// dataset (a directory with `manifest.json`) is replaced only with `overwrite`; anything else
    /// is never replaced, `overwrite` or not: `-o ~` must not delete a home directory. The refusal
    /// is checked first, so no message advises a flag that would then be refused.
    pub fn create(target: &Path, overwrite: bool) -> Result<Self> {
        if target.file_name().is_none() {
            return Err(Error::config(format!(
                "-o {}: name the output directory itself (e.g. -o out/demo), not the current or a parent directory",
                target.display()
            )));
        }
        if target.symlink_metadata().is_ok() && !is_empty_dir(target) {
            if !is_replaceable(target) {
                return Err(Error::config(format!(
                    "{} exists and is neither an empty directory nor a fastsft dataset (no manifest.json); \
                     fastsft never replaces it: choose another output path, or empty or remove it yourself",
                    target.display()
                )));
            }
            if !overwrite {
                return Err(Error::OutputExists { path: target.to_path_buf() });
            }
        }
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
        let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        remove_stale_temporaries(parent, &name);
        let tmp = parent.join(format!(".{name}.fastsft-tmp-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(OutputDir { tmp, target: target.to_path_buf(), overwrite })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    /// Moves the finished directory into place (replacing an old dataset only when allowed).
    pub fn commit(self) -> Result<()> {
        if let Ok(dir) = File::open(&self.tmp) {
            let _ = dir.sync_all();
        }
        if is_replaceable(&self.target) {
            if !self.overwrite {
                return Err(Error::OutputExists { path: self.target.clone() });
            }
            let old = self.tmp.with_extension("old");
            fs::rename(&self.target, &old).map_err(|e| Error::io(&self.target, e))?;
            fs::rename(&self.tmp, &self.target).map_err(|e| Error::io(&self.target, e))?;
            fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        } else {
            // No target, or an empty directory: rename(2) replaces an empty directory atomically,
            // and fails (nothing lost) if something was put at the path since `create`.
            fs::rename(&self.tmp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        }
        Ok(())
    }

    /// Removes the temporary directory after a failure.
    pub fn abandon(self) {
        let _ = fs::remove_dir_all(&self.tmp);
    }
}

/// Temporary directories left by killed runs (their process is gone) are removed, so kills do
/// not pile up partial datasets next to the output.
fn remove_stale_temporaries(parent: &Path, name: &str) {
    let prefix = format!(".{name}.fastsft-tmp-");
    let Ok(entries) = fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file_name.strip_prefix(&prefix).and_then(|p| p.split('.').next()).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive = Path::new("/proc").join(pid.to_string()).exists();
        if !alive && Path::new("/proc/self").exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A real directory (not a link to one) with nothing in it.
fn is_empty_dir(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|m| m.is_dir()) && fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

fn is_replaceable(path: &Path) -> bool {
    path.is_dir() && path.join("manifest.json").is_file()
}

/// Writes `contents` to `path` and syncs it.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = File::create(path).map_err(|e| Error::io(path, e))?;
    file.write_all(contents).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_numpy_v1_and_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        let mut writer = NpyWriter::create(path.clone(), "<i8", 8, Some(2)).unwrap();
        writer.write_i64(&[1, 2, 3, 4, 5, 6]).unwrap();
        let data_sha256 = writer.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(data_sha256, Some(crate::hashing::sha256_hex(&bytes[HEADER_LEN..])));
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]) as usize + 10, HEADER_LEN);
        let header = std::str::from_utf8(&bytes[10..HEADER_LEN]).unwrap();
        assert!(header.starts_with("{'descr': '<i8', 'fortran_order': False, 'shape': (3, 2), }"));
        assert!(header.ends_with('\n'));
        assert_eq!(bytes.len(), HEADER_LEN + 48);
        assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + 8], &1i64.to_le_bytes());
    }

    #[test]
    fn refuses_to_replace_a_directory_that_is_not_a_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("precious.txt"), "x").unwrap();
        for overwrite in [false, true] {
            let message = OutputDir::create(&target, overwrite).err().unwrap().to_string();
            assert!(message.contains("is neither an empty directory nor a fastsft dataset"), "{message}");
            assert!(!message.contains("--overwrite"), "advises a flag that is refused: {message}");
        }
        assert!(target.join("precious.txt").exists());
    }

    #[test]
    fn an_empty_directory_is_replaced_by_the_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        std::fs::create_dir(&target).unwrap();
        let out = OutputDir::create(&target, false).unwrap();
        write_file(&out.file("manifest.json"), b"{}").unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read(target.join("manifest.json")).unwrap(), b"{}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary left beside it");
        // Now a dataset: replaced only with overwrite.
        assert!(matches!(OutputDir::create(&target, false), Err(Error::OutputExists { .. })));
        assert!(OutputDir::create(&target, true).is_ok());
    }

    #[test]
    fn a_directory_filled_during_the_run_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        std::fs::create_dir(&target).unwrap();
        let out = OutputDir::create(&target, true).unwrap();
        std::fs::write(target.join("precious.txt"), "x").unwrap();
        assert!(out.commit().is_err());
        assert!(target.join("precious.txt").exists());
    }

    #[test]
    fn the_current_directory_is_not_an_output_name() {
        let message = OutputDir::create(Path::new("."), true).err().unwrap().to_string();
        assert!(message.contains("name the output directory itself"), "{message}");
    }
}
