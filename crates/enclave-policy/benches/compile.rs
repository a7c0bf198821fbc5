//! Criterion benchmarks: validate a 10,000-system definition, compile one system's view, and
//! compile every view with one shared index (what a control server does after an edit).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

#[path = "support/gen.rs"]
mod gen;

const SIZE: gen::Size = gen::Size {
    systems: 10_000,
    gateways: 100,
    policies: 1_000,
    tags: 200,
};

fn benches(c: &mut Criterion) {
    let text = gen::definition(&SIZE, 1);
    let network = enclave_policy::load("generated.toml", &text)
        .expect("the generated definition is valid")
        .network;
    let mut group = c.benchmark_group("policy-10k");
    group.sample_size(10);
    group.bench_function("validate whole file", |b| {
        b.iter(|| enclave_policy::load("generated.toml", black_box(&text)))
    });
    group.bench_function("compile sender view", |b| {
        b.iter(|| enclave_policy::compile(&network, black_box("host-5000")))
    });
    group.bench_function("compile gateway view", |b| {
        b.iter(|| enclave_policy::compile(&network, black_box("gw-7")))
    });
    // A control server after an edit: index once, then compile the views it pushes.
    group.bench_function("index the network (Compiler::new)", |b| {
        b.iter(|| enclave_policy::Compiler::new(black_box(&network)))
    });
    let compiler = enclave_policy::Compiler::new(&network);
    group.bench_function("compile sender view, indexed", |b| {
        b.iter(|| compiler.compile(black_box("host-5000")))
    });
    group.bench_function("compile gateway view, indexed", |b| {
        b.iter(|| compiler.compile(black_box("gw-7")))
    });
    group.finish();
}

criterion_group!(policy, benches);
criterion_main!(policy);
