//! Message sealing/opening throughput and the cost of one Argon2id unseal.

use std::hint::black_box;
use std::time::Duration;

use bench::{body, envelope, open, seal, Mailbox, READ_PIECE};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gateway::crypto::{
    CryptoError, EpochLimits, MessageId, MessageSealer, SealedHeader, SealingEpochs,
};

const SIZES: [(&str, usize); 2] = [("10KB", 10 * 1000), ("1MiB", 1024 * 1024)];

fn seal_throughput(c: &mut Criterion) {
    let mailbox = Mailbox::with_cheap_kdf();
    let envelope = envelope();
    let epochs = SealingEpochs::default();
    let mut group = c.benchmark_group("seal");
    for (name, len) in SIZES {
        let data = body(len, 1);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                // A fresh message each time, sealed as the service seals: in the mailbox's
                // epoch (its HPKE setup shared; `seal_format_10KB` shows that cost).
                let id = MessageId::generate();
                let started = epochs.sealer(&mailbox.keys, &mailbox.id, id, &envelope, 0);
                seal_body(started.unwrap(), &data)
            })
        });
    }
    group.finish();
}

/// Feeds `data` to a started sealer and finishes it, as the service does.
fn seal_body((header, mut sealer): (SealedHeader, MessageSealer), data: &[u8]) {
    black_box(&header);
    for piece in data.chunks(READ_PIECE) {
        sealer
            .push(piece, &mut |chunk| {
                black_box(chunk);
                Ok::<_, CryptoError>(())
            })
            .unwrap();
    }
    black_box(sealer.finish().unwrap());
}

/// A 10 KB message in format 1 (one HPKE setup per message) against format 2 (one per
/// epoch: `v2` with the service's limits, so one setup per 1024 messages here, since the
/// clock stands still; `v2-epoch-per-message`, the worst case, a new epoch every time).
fn seal_formats(c: &mut Criterion) {
    let mailbox = Mailbox::with_cheap_kdf();
    let envelope = envelope();
    let data = body(10 * 1000, 1);
    let mut group = c.benchmark_group("seal_format_10KB");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("v1", |b| {
        b.iter(|| {
            let id = MessageId::generate();
            let started = MessageSealer::new(&mailbox.keys, &mailbox.id, id, &envelope);
            seal_body(started.unwrap(), &data)
        })
    });
    for (name, limits) in [
        ("v2", EpochLimits::default()),
        (
            "v2-epoch-per-message",
            EpochLimits {
                max_messages: 1,
                ..EpochLimits::default()
            },
        ),
    ] {
        let epochs = SealingEpochs::new(limits);
        group.bench_function(name, |b| {
            b.iter(|| {
                let id = MessageId::generate();
                let started = epochs.sealer(&mailbox.keys, &mailbox.id, id, &envelope, 0);
                seal_body(started.unwrap(), &data)
            })
        });
    }
    group.finish();
}

fn open_throughput(c: &mut Criterion) {
    let mailbox = Mailbox::with_cheap_kdf();
    let key = mailbox.unseal();
    let mut group = c.benchmark_group("open");
    for (name, len) in SIZES {
        let message = seal(&mailbox, &body(len, 2));
        assert_eq!(open(&key, &message), len as u64);
        group.throughput(Throughput::Bytes(len as u64));
        // Each chunk is copied before opening, as a read from redb hands over a fresh Vec.
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(open(&key, &message)))
        });
    }
    group.finish();
}

fn unseal_default_kdf(c: &mut Criterion) {
    let mailbox = Mailbox::with_default_kdf();
    let mut group = c.benchmark_group("unseal");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("argon2id-19MiB-t2-p1", |b| {
        b.iter(|| black_box(mailbox.unseal()))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = seal_throughput, seal_formats, open_throughput, unseal_default_kdf
}
criterion_main!(benches);
