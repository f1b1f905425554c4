//! Where sealed chunks of a message in progress wait for their commit.
//!
//! The first few chunks stay in memory; beyond the threshold they go to an unlinked temporary
//! file in the data directory's spool folder. The file holds ciphertext only, disappears by
//! itself if the gateway dies, and is never synced: the redb commit is the durability point.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

enum Location {
    Memory(Vec<u8>),
    File { offset: u64, len: u32 },
}

pub struct Spool {
    chunks: Vec<Location>,
    memory_bytes: usize,
    memory_limit: usize,
    dir: PathBuf,
    file: Option<File>,
    file_len: u64,
}

impl Spool {
    pub fn new(dir: &Path, memory_limit: usize) -> Self {
        Self {
            chunks: Vec::new(),
            memory_bytes: 0,
            memory_limit,
            dir: dir.to_owned(),
            file: None,
            file_len: 0,
        }
    }

    pub fn push(&mut self, chunk: Vec<u8>) -> std::io::Result<()> {
        if self.memory_bytes + chunk.len() <= self.memory_limit {
            self.memory_bytes += chunk.len();
            self.chunks.push(Location::Memory(chunk));
            return Ok(());
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                std::fs::create_dir_all(&self.dir)?;
                self.file.insert(tempfile::tempfile_in(&self.dir)?)
            }
        };
        file.write_all(&chunk)?;
        let len = u32::try_from(chunk.len()).map_err(std::io::Error::other)?;
        self.chunks.push(Location::File {
            offset: self.file_len,
            len,
        });
        self.file_len += u64::from(len);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Calls `f` with each chunk in order, reading spilled ones back one at a time. Takes
    /// `&self` (reads position explicitly) so a commit that runs again replays the same bytes.
    pub fn for_each<E>(
        &self,
        mut f: impl FnMut(u32, &[u8]) -> Result<(), E>,
    ) -> Result<(), Replay<E>> {
        let mut buffer = Vec::new();
        for (index, location) in self.chunks.iter().enumerate() {
            let index = index as u32;
            match location {
                Location::Memory(bytes) => f(index, bytes).map_err(Replay::Failed)?,
                Location::File { offset, len } => {
                    self.read_at(*offset, *len, &mut buffer)
                        .map_err(Replay::Unreadable)?;
                    f(index, &buffer).map_err(Replay::Failed)?;
                }
            }
        }
        Ok(())
    }

    /// Reads every spilled chunk back, so a spool that cannot be read fails its message
    /// before the message shares a transaction with others.
    pub fn verify(&self) -> std::io::Result<()> {
        let mut buffer = Vec::new();
        for location in &self.chunks {
            if let Location::File { offset, len } = location {
                self.read_at(*offset, *len, &mut buffer)?;
            }
        }
        Ok(())
    }

    fn read_at(&self, offset: u64, len: u32, buffer: &mut Vec<u8>) -> std::io::Result<()> {
        let mut file = self
            .file
            .as_ref()
            .ok_or_else(|| std::io::Error::other("spool file missing"))?;
        file.seek(SeekFrom::Start(offset))?;
        buffer.resize(len as usize, 0);
        file.read_exact(buffer)
    }

    /// Swaps the spool file for one that cannot be read, as a failing disk would, for tests
    /// of what a spool that cannot be read back does.
    #[cfg(test)]
    pub fn break_for_tests(&mut self) {
        let path = self.dir.join("unreadable");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        self.file = Some(file);
    }
}

/// Why [`Spool::for_each`] stopped.
#[derive(Debug)]
pub enum Replay<E> {
    /// A spilled chunk could not be read back.
    Unreadable(std::io::Error),
    /// The callback failed.
    Failed(E),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_come_back_in_order_from_memory_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(dir.path(), 10);
        let chunks: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 4 + i as usize]).collect();
        for c in &chunks {
            spool.push(c.clone()).unwrap();
        }
        assert!(
            spool.file.is_some(),
            "beyond the limit chunks spill to the file"
        );
        let mut seen = Vec::new();
        spool.verify().unwrap();
        spool
            .for_each(|i, bytes| {
                seen.push((i, bytes.to_vec()));
                Ok::<_, std::io::Error>(())
            })
            .unwrap();
        let expected: Vec<(u32, Vec<u8>)> = chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| (i as u32, c))
            .collect();
        assert_eq!(seen, expected);
        // The spool file is unlinked: nothing is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_spool_cut_short_is_found_before_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(dir.path(), 0);
        spool.push(vec![7; 100]).unwrap();
        spool.break_for_tests();
        assert!(spool.verify().is_err());
        assert!(matches!(
            spool.for_each(|_, _| Ok::<_, ()>(())),
            Err(Replay::Unreadable(_))
        ));
    }
}
