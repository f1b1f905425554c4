//! Message sealing/opening throughput and the cost of one Argon2id unseal.

use std::hint::black_box;
use std::time::Duration;

use bench::{body, envelope, open, seal, Mailbox, READ_PIECE};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gateway::crypto::{CryptoError, MessageId, MessageSealer};

const SIZES: [(&str, usize); 2] = [("10KB", 10 * 1000), ("1MiB", 1024 * 1024)];

fn seal_throughput(c: &mut Criterion) {
    let mailbox = Mailbox::with_cheap_kdf();
    let envelope = envelope();
    let mut group = c.benchmark_group("seal");
    for (name, len) in SIZES {
        let data = body(len, 1);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                // A fresh message each time: includes the HPKE setup (one X25519 DH) and the
                // envelope, as every stored message pays them.
                let (header, mut sealer) = MessageSealer::new(
                    &mailbox.keys,
                    &mailbox.id,
                    MessageId::generate(),
                    &envelope,
                )
                .unwrap();
                black_box(&header);
                for piece in data.chunks(READ_PIECE) {
                    sealer
                        .push(piece, &mut |chunk| {
                            black_box(chunk);
                            Ok::<_, CryptoError>(())
                        })
                        .unwrap();
                }
                black_box(sealer.finish().unwrap())
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
    targets = seal_throughput, open_throughput, unseal_default_kdf
}
criterion_main!(benches);
