//! SECS-II codec benchmarks: encode into a reused buffer and decode, for an empty item, a
//! 1024-element U4, an S6F11 event report body and a 100,000-leaf nested list.
//! `scripts/bench.sh codec` runs these beside secsgem's figures for the same S6F11 body.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use secsgate::secs2::codec::DecodeLimits;
use secsgate::secs2::testdata;

fn codec(c: &mut Criterion) {
    let cases = [
        ("empty", testdata::empty_item()),
        ("u4_1024", testdata::u4_1024()),
        ("s6f11", testdata::s6f11_body()),
        ("nested_100k", testdata::nested_100k()),
    ];
    let limits = DecodeLimits::default();
    let mut group = c.benchmark_group("codec");
    for (name, item) in &cases {
        let bytes = item.encode().expect("benchmark items encode");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        let mut buf = Vec::with_capacity(bytes.len());
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| {
                buf.clear();
                black_box(item).encode_into(&mut buf).expect("encodes");
                black_box(buf.len())
            })
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| secsgate::secs2::Item::decode(black_box(&bytes), &limits).expect("decodes"))
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
