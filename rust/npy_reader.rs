//! Reading back the `.npy` files the pipeline's writer wrote (rust/writer.rs): the fixed
//! 128-byte header checked, then the items streamed; for the assembly of a Ray run's units.
//! Not a general `.npy` reader: other headers are refused.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::writer::NpyWriter;

/// rust/writer.rs writes every `.npy` header padded to this size.
const HEADER_LEN: u64 = 128;
const COPY_BYTES: usize = 4 << 20;

/// The data of a `.npy` file the pipeline wrote (a 128-byte header, then little-endian items).
pub struct DataReader {
    pub path: PathBuf,
    pub file: BufReader<File>,
}

impl DataReader {
    pub fn open(path: &Path, item_size: usize) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut header = [0u8; HEADER_LEN as usize];
        file.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
        if &header[..8] != b"\x93NUMPY\x01\x00" || u16::from_le_bytes([header[8], header[9]]) as u64 + 10 != HEADER_LEN || (len - HEADER_LEN) % item_size as u64 != 0 {
            return Err(Error::BadFile { path: path.to_path_buf(), detail: "not an array written by fastsft prep".into() });
        }
        file.seek(SeekFrom::Start(HEADER_LEN)).map_err(|e| Error::io(path, e))?;
        Ok(DataReader { path: path.to_path_buf(), file: BufReader::with_capacity(1 << 20, file) })
    }

    /// Fills `buffer` exactly.
    pub fn read(&mut self, buffer: &mut [u8]) -> Result<()> {
        self.file.read_exact(buffer).map_err(|e| Error::io(&self.path, e))
    }
}

pub struct I64Reader {
    pub data: DataReader,
}

impl I64Reader {
    pub fn open(path: &Path) -> Result<Self> {
        Ok(I64Reader { data: DataReader::open(path, 8)? })
    }

    pub fn next(&mut self) -> Result<Option<i64>> {
        let mut bytes = [0u8; 8];
        match self.data.file.read_exact(&mut bytes) {
            Ok(()) => Ok(Some(i64::from_le_bytes(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(Error::io(&self.data.path, e)),
        }
    }
}

/// Appends all of a `.npy` file's data to `out` (same item type), in large reads.
pub fn copy_bytes(path: &Path, item_size: usize, out: &mut NpyWriter) -> Result<()> {
    let mut data = DataReader::open(path, item_size)?;
    let mut buffer = vec![0u8; COPY_BYTES];
    loop {
        let n = data.file.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        // Reads of a BufReader over a file may end mid-item; complete the item before writing.
        let mut filled = n;
        while filled % item_size != 0 {
            let more = data.file.read(&mut buffer[filled..filled + item_size - filled % item_size]).map_err(|e| Error::io(path, e))?;
            if more == 0 {
                return Err(Error::BadFile { path: path.to_path_buf(), detail: "ends mid-item".into() });
            }
            filled += more;
        }
        out.write_bytes(&buffer[..filled])?;
    }
}
