//! The key of the bytes that were parsed: a file is hashed from the very byte stream its parser
//! reads (each read is hashed as it is read, on the parser's thread), and its size and
//! modification time are checked again when the parser is done. A file that changed while it
//! was read fails the load instead of committing rows under a key that does not describe them.
//!
//! The hash runs inline rather than on a thread of its own: an import already keeps both cores
//! busy (parser, loader, database), and a fourth thread that the parser handed a copy of every
//! read to waited for a core, then stalled the parser behind it (measured on 2 cores: the
//! thread was runnable but not running 0.8 s of a 5.5 s import).

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use costledger_core::ConnectorError;
use sha2::{Digest, Sha256};

/// What identifies a file's version on disk, read from the open descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    fn of(m: &Metadata) -> Stamp {
        Stamp { len: m.len(), modified: m.modified().ok() }
    }
}

/// The running hash of the bytes read and their count.
type Running = Arc<Mutex<(Sha256, u64)>>;

/// The hashing side of a tapped file: [`Tap::finish`] gives the key once the reader is done.
pub struct Tap {
    path: String,
    file: File,
    stamp: Stamp,
    hash: Running,
}

/// A `Read` that hashes every byte it reads.
pub struct TeeRead {
    inner: File,
    hash: Running,
}

impl Read for TeeRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            let mut h = self.hash.lock().map_err(|_| std::io::Error::other("the file hash was poisoned"))?;
            h.0.update(&buf[..n]);
            h.1 += n as u64;
        }
        Ok(n)
    }
}

/// Open `path` for reading through a hashing tee.
pub fn open_tapped(path: &Path) -> Result<(TeeRead, Tap), ConnectorError> {
    let loc = path.display().to_string();
    let file = File::open(path).map_err(|e| ConnectorError::io(&loc, e))?;
    let stamp = Stamp::of(&file.metadata().map_err(|e| ConnectorError::io(&loc, e))?);
    let check = file.try_clone().map_err(|e| ConnectorError::io(&loc, e))?;
    let hash: Running = Arc::new(Mutex::new((Sha256::new(), 0)));
    Ok((TeeRead { inner: file, hash: hash.clone() }, Tap { path: loc, file: check, stamp, hash }))
}

/// Hash a whole file from an open descriptor (for formats read by random access, such as
/// Parquet, which are hashed first and checked for change when read).
pub fn hash_then_check(path: &Path) -> Result<(File, Tap), ConnectorError> {
    let (mut tee, tap) = open_tapped(path)?;
    let loc = path.display().to_string();
    // 1 MiB reads (not `io::copy`'s 8 KiB): fewer system calls.
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match tee.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ConnectorError::io(&loc, e)),
        }
    }
    let file = tee.inner.try_clone().map_err(|e| ConnectorError::io(&loc, e))?;
    drop(tee);
    Ok((file, tap))
}

impl Tap {
    /// The key of the bytes read (`sha256:<hex>`), once the reader is dropped. Fails when the
    /// file's size or modification time changed since it was opened, or when fewer bytes were
    /// read than the file holds.
    pub fn finish(self) -> Result<String, ConnectorError> {
        let (key, bytes) = {
            let h = self
                .hash
                .lock()
                .map_err(|_| ConnectorError::Transient(format!("{}: the file hash was poisoned", self.path)))?;
            (hex_key(&h.0.clone().finalize()), h.1)
        };
        let now = Stamp::of(&self.file.metadata().map_err(|e| ConnectorError::io(&self.path, e))?);
        if now != self.stamp || bytes != now.len {
            return Err(changed(&self.path, self.stamp.len, now.len, bytes));
        }
        Ok(key)
    }
}

fn changed(path: &str, before: u64, after: u64, read: u64) -> ConnectorError {
    ConnectorError::input(
        path,
        format!(
            "the file changed while it was read ({before} bytes when opened, {after} bytes now, {read} bytes read)"
        ),
        "nothing from this file was loaded; wait until whatever writes it has finished (write to a temporary \
         name, then rename), then import again",
    )
}

/// `sha256:<hex>`.
pub fn hex_key(digest: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(7 + digest.len() * 2);
    s.push_str("sha256:");
    for b in digest {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn the_key_is_the_hash_of_the_bytes_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.csv");
        std::fs::write(&p, b"x,y\n1,2\n").expect("write");
        let (mut tee, tap) = open_tapped(&p).expect("open");
        let mut s = Vec::new();
        tee.read_to_end(&mut s).expect("read");
        drop(tee);
        assert_eq!(tap.finish().expect("key"), crate::file_sha256(&p).expect("hash"));
    }

    #[test]
    fn a_file_appended_while_read_fails_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.csv");
        std::fs::write(&p, b"x,y\n1,2\n").expect("write");
        let (mut tee, tap) = open_tapped(&p).expect("open");
        let mut first = [0u8; 4];
        tee.read_exact(&mut first).expect("read");
        std::fs::OpenOptions::new().append(true).open(&p).expect("open").write_all(b"3,4\n").expect("append");
        let mut rest = Vec::new();
        tee.read_to_end(&mut rest).expect("read");
        drop(tee);
        let e = tap.finish().expect_err("changed").to_string();
        assert!(e.contains("the file changed while it was read (8 bytes when opened, 12 bytes now"), "{e}");
    }

    #[test]
    fn a_file_not_read_to_its_end_has_no_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.csv");
        std::fs::write(&p, b"x,y\n1,2\n").expect("write");
        let (mut tee, tap) = open_tapped(&p).expect("open");
        let mut first = [0u8; 4];
        tee.read_exact(&mut first).expect("read");
        drop(tee);
        assert!(tap.finish().is_err());
    }
}
