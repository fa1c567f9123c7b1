//! Criterion: the exchange-core-like flow through Caldera's engine and through `lobster`,
//! in one group so the two are measured in the same run.
use caldera_benches::{Book, CalderaBook, LobsterBook};
use caldera_testkit::flow::{generate, FlowConfig};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn flow(c: &mut Criterion) {
    let cfg = FlowConfig::default();
    let cmds = generate(&cfg, 200_000);
    let ecfg = cfg.engine_config();
    let mut g = c.benchmark_group("exchange_core_like_flow");
    g.throughput(Throughput::Elements(cmds.len() as u64));
    g.sample_size(20);
    g.bench_function("caldera-engine", |b| {
        b.iter_batched_ref(
            || CalderaBook::new(ecfg.clone()),
            |book| cmds.iter().for_each(|c| book.apply(black_box(c))),
            BatchSize::LargeInput,
        );
    });
    g.bench_function("lobster", |b| {
        b.iter_batched_ref(
            || LobsterBook::new(ecfg.max_orders as usize),
            |book| cmds.iter().for_each(|c| book.apply(black_box(c))),
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

criterion_group!(benches, flow);
criterion_main!(benches);
