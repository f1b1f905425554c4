//! Dot-stuffing and un-stuffing throughput on the wire: a 1 MiB message body fed in 16 KiB
//! pieces, stuffed as the strict DATA encoder toward an SMTP upstream and as the POP3 RETR
//! stuffer, and un-stuffed as the SMTP server's strict DATA decoder and as the POP3 client's
//! lenient RETR reader.
//!
//! The body is deterministic text: lines of mixed lengths (empty lines, short header-like
//! lines, typical 60–78 octet text, a few long ones near the 1000 octet limit), about one in
//! sixteen starting with a dot, all ending in CRLF, so the strict encoder accepts it.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway::smtp::data::{BodyDecoder, Framing};
use gateway::wire::dot::Stuffer;
use gateway::wire::undot::Unstuffer;

const BODY_LEN: usize = 1024 * 1024;
/// A socket read's worth, as the relays feed the stuffers.
const PIECE: usize = 16 * 1024;

/// Deterministic CRLF text of `len` octets or a little less (whole lines only).
fn text_body(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut out = Vec::with_capacity(len);
    loop {
        let roll = next();
        let line_len = match roll % 32 {
            0..=2 => 0,
            3..=8 => 10 + (roll >> 8) as usize % 30,
            9..=30 => 60 + (roll >> 8) as usize % 19,
            _ => 200 + (roll >> 8) as usize % 790,
        };
        if out.len() + line_len + 2 > len {
            break;
        }
        for index in 0..line_len {
            let byte = if index == 0 && (roll >> 40) % 16 == 0 {
                b'.'
            } else {
                b' ' + (next() % 95) as u8
            };
            out.push(byte);
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn stuffing(c: &mut Criterion) {
    let body = text_body(BODY_LEN);
    let mut group = c.benchmark_group("dot_stuff");
    group.throughput(Throughput::Bytes(body.len() as u64));
    let mut out = Vec::with_capacity(body.len() + body.len() / 8);
    group.bench_function("smtp_data_strict", |b| {
        b.iter(|| {
            out.clear();
            let mut encoder = Stuffer::strict();
            for piece in body.chunks(PIECE) {
                encoder.feed(black_box(piece), &mut out).unwrap();
            }
            encoder.finish(&mut out).unwrap();
            black_box(out.len())
        })
    });
    group.bench_function("pop3_retr", |b| {
        b.iter(|| {
            out.clear();
            let mut stuffer = Stuffer::new();
            for piece in body.chunks(PIECE) {
                stuffer.feed(black_box(piece), &mut out);
            }
            stuffer.finish(&mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

fn unstuffing(c: &mut Criterion) {
    let body = text_body(BODY_LEN);
    let mut wire = Vec::with_capacity(body.len() + body.len() / 8);
    let mut encoder = Stuffer::strict();
    encoder.feed(&body, &mut wire).unwrap();
    encoder.finish(&mut wire).unwrap();
    let mut group = c.benchmark_group("dot_unstuff");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    let mut out = Vec::with_capacity(body.len());
    group.bench_function("smtp_data_strict", |b| {
        b.iter(|| {
            out.clear();
            let mut decoder = BodyDecoder::new(Framing::DotTerminated);
            let mut ended = false;
            for piece in wire.chunks(PIECE) {
                ended = decoder.feed(black_box(piece), &mut out).end_of_data;
            }
            assert!(ended && decoder.violation().is_none());
            black_box(out.len())
        })
    });
    group.bench_function("pop3_retr", |b| {
        b.iter(|| {
            out.clear();
            let mut unstuffer = Unstuffer::new();
            let mut ended = false;
            for piece in wire.chunks(PIECE) {
                ended = unstuffer.feed(black_box(piece), &mut out).end_of_data;
            }
            assert!(ended);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, stuffing, unstuffing);
criterion_main!(benches);
