//! Files a command writes (`export csv --out`, report files, `sample`, the demo's finance CSV).
//!
//! A regular file (or a path that does not exist yet) is written atomically: into a temporary
//! file in the same directory, renamed over the target only once every byte is written, so a
//! reader never sees half a file and a failed run leaves the old file as it was. Anything else
//! (a character device such as `/dev/null`, a FIFO, a socket, `/dev/stdout`) is written straight
//! into: renaming a temporary file over a device would turn it into a regular file for the whole
//! machine. A symlink is followed: the file it points to is replaced, the link stays.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An output being written; call [`OutFile::commit`] when every byte is written.
/// Dropped without `commit`, a temporary file is removed and the target is left untouched.
#[derive(Debug)]
pub struct OutFile {
    file: io::BufWriter<File>,
    /// `Some((temporary, target))` when the output is renamed into place on commit.
    rename: Option<(PathBuf, PathBuf)>,
}

/// How a path is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Temporary file beside the target (symlinks resolved), renamed over it on commit.
    Atomic(PathBuf),
    /// Opened and written in place: not a regular file (device, FIFO, socket) or under /dev.
    Direct,
}

/// Decide how `path` is written: atomically when it is a regular file or absent, straight into
/// it otherwise. A directory is an error.
pub fn target_of(path: &Path) -> io::Result<Target> {
    if path.starts_with("/dev") || path.starts_with("/proc") {
        return Ok(Target::Direct);
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            format!("{} is a directory: give a file name", path.display()),
        )),
        Ok(m) if m.is_file() => {
            let real = std::fs::canonicalize(path)?;
            if real.starts_with("/dev") || real.starts_with("/proc") {
                return Ok(Target::Direct);
            }
            Ok(Target::Atomic(real))
        }
        Ok(_) => Ok(Target::Direct),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A dangling symlink: write where it points, so the link keeps working.
            match std::fs::read_link(path) {
                Ok(to) => {
                    let to = path.parent().map(|d| d.join(&to)).unwrap_or(to);
                    Ok(Target::Atomic(to))
                }
                Err(_) => Ok(Target::Atomic(path.to_path_buf())),
            }
        }
        Err(e) => Err(e),
    }
}

impl OutFile {
    /// Open `path` for writing (see the module docs for how).
    pub fn create(path: &Path) -> io::Result<OutFile> {
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()));
        match target_of(path).map_err(with_path)? {
            Target::Direct => {
                let f = OpenOptions::new().write(true).open(path).map_err(with_path)?;
                Ok(OutFile { file: io::BufWriter::with_capacity(1 << 16, f), rename: None })
            }
            Target::Atomic(target) => {
                let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let tmp = target.with_file_name(format!(".{name}.{}.partial", std::process::id()));
                let f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot create {} (beside {}): {e}", tmp.display(), path.display()),
                    )
                })?;
                Ok(OutFile { file: io::BufWriter::with_capacity(1 << 20, f), rename: Some((tmp, target)) })
            }
        }
    }

    /// Flush every byte and, for a regular file, move it into place.
    pub fn commit(mut self) -> io::Result<()> {
        self.file.flush()?;
        if let Some((tmp, target)) = self.rename.take() {
            self.file.get_ref().sync_all()?;
            if let Err(e) = std::fs::rename(&tmp, &target) {
                let _ = std::fs::remove_file(&tmp);
                return Err(io::Error::new(e.kind(), format!("cannot move the output into {}: {e}", target.display())));
            }
        }
        Ok(())
    }
}

impl Write for OutFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        if let Some((tmp, _)) = self.rename.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Write `bytes` to `path` by the rules of [`OutFile`].
pub fn write_bytes(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OutFile::create(path)?;
    f.write_all(bytes)?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn mkfifo(p: &Path) {
        assert!(std::process::Command::new("mkfifo").arg(p).status().expect("ok").success());
    }

    #[test]
    fn regular_file_is_replaced_atomically_and_no_temp_is_left() {
        let d = tempfile::tempdir().expect("ok");
        let p = d.path().join("out.csv");
        std::fs::write(&p, "old").expect("ok");
        let mut f = OutFile::create(&p).expect("ok");
        f.write_all(b"new").expect("ok");
        assert_eq!(std::fs::read_to_string(&p).expect("ok"), "old", "the old file stays until commit");
        f.commit().expect("ok");
        assert_eq!(std::fs::read_to_string(&p).expect("ok"), "new");
        assert_eq!(std::fs::read_dir(d.path()).expect("ok").count(), 1);
    }

    #[test]
    fn dropped_without_commit_leaves_the_target_and_no_temp() {
        let d = tempfile::tempdir().expect("ok");
        let p = d.path().join("out.csv");
        std::fs::write(&p, "old").expect("ok");
        let mut f = OutFile::create(&p).expect("ok");
        f.write_all(b"half").expect("ok");
        drop(f);
        assert_eq!(std::fs::read_to_string(&p).expect("ok"), "old");
        assert_eq!(std::fs::read_dir(d.path()).expect("ok").count(), 1);
    }

    #[test]
    fn a_fifo_is_written_into_and_stays_a_fifo() {
        let d = tempfile::tempdir().expect("ok");
        let p = d.path().join("pipe.csv");
        mkfifo(&p);
        let reader = {
            let p = p.clone();
            std::thread::spawn(move || std::fs::read_to_string(p).expect("ok"))
        };
        write_bytes(&p, b"a,b\n1,2\n").expect("ok");
        assert_eq!(reader.join().expect("ok"), "a,b\n1,2\n");
        assert!(std::fs::metadata(&p).expect("ok").file_type().is_fifo());
        assert_eq!(std::fs::read_dir(d.path()).expect("ok").count(), 1, "no temporary file beside the FIFO");
    }

    #[test]
    fn a_symlink_to_a_device_is_written_through_and_the_device_stays() {
        let d = tempfile::tempdir().expect("ok");
        let link = d.path().join("null.csv");
        std::os::unix::fs::symlink("/dev/null", &link).expect("ok");
        write_bytes(&link, b"x").expect("ok");
        assert!(std::fs::metadata("/dev/null").expect("ok").file_type().is_char_device());
        assert!(std::fs::symlink_metadata(&link).expect("ok").file_type().is_symlink());
        assert_eq!(std::fs::read_dir(d.path()).expect("ok").count(), 1);
    }

    #[test]
    fn a_symlink_to_a_regular_file_keeps_the_link() {
        let d = tempfile::tempdir().expect("ok");
        let real = d.path().join("real.csv");
        std::fs::write(&real, "old").expect("ok");
        let link = d.path().join("link.csv");
        std::os::unix::fs::symlink(&real, &link).expect("ok");
        write_bytes(&link, b"new").expect("ok");
        assert!(std::fs::symlink_metadata(&link).expect("ok").file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&real).expect("ok"), "new");
    }

    #[test]
    fn a_directory_is_refused_with_the_path() {
        let d = tempfile::tempdir().expect("ok");
        let e = OutFile::create(d.path()).expect_err("err");
        assert!(e.to_string().contains("is a directory"), "{e}");
    }

    #[test]
    fn dev_paths_are_direct() {
        assert_eq!(target_of(Path::new("/dev/null")).expect("ok"), Target::Direct);
        assert_eq!(target_of(Path::new("/dev/stdout")).expect("ok"), Target::Direct);
    }
}
