//! The storage layout decision: durable throughput of sealed messages stored
//!
//! - (A) as ~64 KiB chunk values in one redb table (what the store does today), N messages
//!   per commit (N = 16 models group commit), and
//! - (B) as one synced file per message (write, `sync_data`, rename into place, fsync of the
//!   directory) plus a redb commit of the index entries; a batch of 16 writes its files one
//!   after another or on 16 threads at once, as concurrent sessions would.
//!
//! Every variant also commits one `MessageRecord` per message through `Writes::put_message`, so
//! both layouts pay for the same index. The payload is random bytes cut into sealed-chunk
//! sized pieces (`CHUNK_SIZE + TAG_SIZE`); encryption is measured separately (`crypto`).
//!
//! The data lives under `$BENCH_DIR`, else `$CARGO_TARGET_DIR`, else `<workspace>/target`:
//! it must be a real disk, since fsync on tmpfs costs nothing. The file system is printed.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::body;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gateway::crypto::{MessageFormat, MessageId, SealedHeader, CHUNK_SIZE, TAG_SIZE};
use gateway::mailbox::MailboxId;
use gateway::store::{MessageRecord, Store, StoreOptions};

const SIZES: [(&str, usize); 2] = [("10KB", 10 * 1000), ("1MiB", 1024 * 1024)];
const BATCH: usize = 16;

/// One message's sealed chunks, shared by every write of the benchmark.
type Chunks = Arc<Vec<Vec<u8>>>;

fn chunks_of(len: usize) -> Chunks {
    let bytes = body(len + TAG_SIZE * len.div_ceil(CHUNK_SIZE).max(1), 7);
    Arc::new(
        bytes
            .chunks(CHUNK_SIZE + TAG_SIZE)
            .map(<[u8]>::to_vec)
            .collect(),
    )
}

fn record(id: MessageId, plaintext_len: usize, chunk_count: usize) -> MessageRecord {
    MessageRecord {
        id,
        received_at: 1_700_000_000_000,
        size: plaintext_len as u64,
        chunk_count: chunk_count as u32,
        header: SealedHeader {
            format: MessageFormat::V2,
            encapped_key: vec![0x42; 32],
            sealed_envelope: body(120, 3),
        },
    }
}

/// Where the data goes, checked not to be tmpfs.
fn bench_root() -> PathBuf {
    let root = std::env::var_os("BENCH_DIR")
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR"))
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("bench-storage");
    fs::create_dir_all(&root).expect("create the benchmark directory");
    let root = root.canonicalize().expect("canonical benchmark directory");
    let (mount, fs_type, device) = filesystem_of(&root);
    eprintln!(
        "storage bench: data under {} on {fs_type} ({device} mounted at {mount})",
        root.display()
    );
    assert!(
        !matches!(fs_type.as_str(), "tmpfs" | "ramfs"),
        "{} is on {fs_type}, where fsync is free; set BENCH_DIR to a real disk",
        root.display()
    );
    root
}

/// The mount holding `path`, from /proc/self/mounts: (mount point, type, device).
fn filesystem_of(path: &Path) -> (String, String, String) {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let device = fields.next()?.to_owned();
            let mount = fields.next()?.replace("\\040", " ");
            let fs_type = fields.next()?.to_owned();
            path.starts_with(&mount).then_some((mount, fs_type, device))
        })
        .max_by_key(|(mount, _, _)| mount.len())
        .unwrap_or_else(|| ("?".into(), "unknown".into(), "?".into()))
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    mailbox: MailboxId,
    files: PathBuf,
}

impl Fixture {
    fn new(root: &Path) -> Self {
        let dir = tempfile::tempdir_in(root).expect("temporary directory");
        let store = Store::open(&dir.path().join("gateway.redb"), &StoreOptions::default())
            .expect("open store");
        let files = dir.path().join("messages");
        fs::create_dir(&files).expect("create the message directory");
        File::open(dir.path()).and_then(|d| d.sync_all()).unwrap();
        Self {
            _dir: dir,
            store,
            mailbox: MailboxId::generate(),
            files,
        }
    }

    /// Commits the index entries of `ids` (one commit, one fsync); returns their sequences.
    fn commit_index(&self, ids: Vec<MessageId>, len: usize, chunk_count: usize) -> Vec<u64> {
        let mailbox = self.mailbox.clone();
        self.store
            .write_blocking(move |t| {
                let mut seqs = Vec::with_capacity(ids.len());
                for &id in &ids {
                    let seq = t.next_seq()?;
                    t.put_message(&mailbox, seq, &record(id, len, chunk_count))?;
                    seqs.push(seq);
                }
                Ok(seqs)
            })
            .expect("commit")
            .value
    }

    /// (A): chunks and index entries of `BATCH`-or-1 messages in one commit.
    fn commit_chunks(&self, count: usize, chunks: &Chunks, len: usize) -> Vec<u64> {
        let mailbox = self.mailbox.clone();
        let chunks = chunks.clone();
        self.store
            .write_blocking(move |t| {
                let mut seqs = Vec::with_capacity(count);
                // Time-ordered ids, as the service makes them (so the store appends).
                let clock = gateway::service::system_clock();
                for _ in 0..count {
                    let id = MessageId::generate_at(clock());
                    for (index, chunk) in chunks.iter().enumerate() {
                        t.put_chunk(id, index as u32, chunk)?;
                    }
                    let seq = t.next_seq()?;
                    t.put_message(&mailbox, seq, &record(id, len, chunks.len()))?;
                    seqs.push(seq);
                }
                Ok(seqs)
            })
            .expect("commit")
            .value
    }

    /// Removes what an iteration stored (outside the timed part), so the store and the
    /// directory do not grow without bound over the run.
    fn clean_up(&self, seqs: Vec<u64>, files: Vec<PathBuf>) {
        for file in &files {
            fs::remove_file(file).expect("remove message file");
        }
        if !files.is_empty() {
            sync_dir(&self.files);
        }
        let mailbox = self.mailbox.clone();
        self.store
            .write_blocking(move |t| {
                for &seq in &seqs {
                    t.remove_message(&mailbox, seq)?;
                }
                Ok(())
            })
            .expect("clean-up commit");
    }
}

fn sync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync directory");
}

/// (B): writes one message to its own file: temporary name, `sync_data`, rename into place.
/// The directory fsync that makes the rename durable is left to the caller.
fn write_file(dir: &Path, id: MessageId, chunks: &[Vec<u8>]) -> PathBuf {
    let name = id.to_hex();
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut file = File::create(&tmp).expect("create message file");
    for chunk in chunks {
        file.write_all(chunk).expect("write message file");
    }
    file.sync_data().expect("sync message file");
    fs::rename(&tmp, &path).expect("rename message file");
    path
}

#[derive(Clone, Copy)]
enum Layout {
    /// (A) chunks in redb, `n` messages per commit.
    RedbChunks { n: usize },
    /// (B) one file per message, directory fsync, then one redb index commit.
    FileSingle,
    /// (B) 16 files written and synced one after another, one directory fsync, one commit.
    FilesSequential,
    /// (B) 16 files on 16 threads, each with its own directory fsync (independent sessions),
    /// then one commit.
    FilesConcurrent,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::RedbChunks { n: 1 } => "A-redb-chunks/batch1",
            Layout::RedbChunks { .. } => "A-redb-chunks/batch16",
            Layout::FileSingle => "B-files/batch1",
            Layout::FilesSequential => "B-files/batch16-sequential",
            Layout::FilesConcurrent => "B-files/batch16-concurrent",
        }
    }

    fn messages(self) -> usize {
        match self {
            Layout::RedbChunks { n } => n,
            Layout::FileSingle => 1,
            Layout::FilesSequential | Layout::FilesConcurrent => BATCH,
        }
    }

    /// Stores one batch durably; returns what to clean up afterwards.
    fn store_batch(self, fx: &Fixture, chunks: &Chunks, len: usize) -> (Vec<u64>, Vec<PathBuf>) {
        match self {
            Layout::RedbChunks { n } => (fx.commit_chunks(n, chunks, len), Vec::new()),
            Layout::FileSingle | Layout::FilesSequential => {
                let ids: Vec<MessageId> = (0..self.messages())
                    .map(|_| MessageId::generate())
                    .collect();
                let files: Vec<PathBuf> = ids
                    .iter()
                    .map(|id| write_file(&fx.files, *id, chunks))
                    .collect();
                sync_dir(&fx.files);
                (fx.commit_index(ids, len, chunks.len()), files)
            }
            Layout::FilesConcurrent => {
                let ids: Vec<MessageId> = (0..BATCH).map(|_| MessageId::generate()).collect();
                let files = std::thread::scope(|scope| {
                    let handles: Vec<_> = ids
                        .iter()
                        .map(|id| {
                            scope.spawn(|| {
                                let path = write_file(&fx.files, *id, chunks);
                                sync_dir(&fx.files);
                                path
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("writer thread"))
                        .collect::<Vec<_>>()
                });
                (fx.commit_index(ids, len, chunks.len()), files)
            }
        }
    }
}

fn storage_layouts(c: &mut Criterion) {
    let root = bench_root();
    let layouts = [
        Layout::RedbChunks { n: 1 },
        Layout::RedbChunks { n: BATCH },
        Layout::FileSingle,
        Layout::FilesSequential,
        Layout::FilesConcurrent,
    ];
    for (size_name, len) in SIZES {
        let chunks = chunks_of(len);
        let mut group = c.benchmark_group(format!("storage-{size_name}"));
        for layout in layouts {
            let fx = Fixture::new(&root);
            group.throughput(Throughput::Bytes((layout.messages() * len) as u64));
            group.bench_function(BenchmarkId::from_parameter(layout.name()), |b| {
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let (seqs, files) = layout.store_batch(&fx, &chunks, len);
                        elapsed += start.elapsed();
                        fx.clean_up(seqs, files);
                    }
                    elapsed
                })
            });
        }
        group.finish();
    }
}

/// The disk's price of durability, to read the layouts' numbers against: overwrite the same
/// 4 KiB of one file (no metadata change) and `sync_data` it. Virtual disks whose host absorbs flushes answer in
/// microseconds; an SSD without power-loss protection takes milliseconds.
fn fsync_baseline(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_root()).expect("temporary directory");
    let file = File::create(dir.path().join("baseline")).expect("create baseline file");
    let block = body(4096, 9);
    let mut group = c.benchmark_group("storage-baseline");
    group.bench_function("write4KiB+sync_data", |b| {
        b.iter(|| {
            file.write_all_at(&block, 0).expect("write");
            file.sync_data().expect("sync_data");
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = benches;
    config = config();
    targets = fsync_baseline, storage_layouts
}
criterion_main!(benches);
