//! Supervision kernel benchmarks.
//!
//! * `supervised_start_stop`: supervised start + stop cycles per second under a dynamic root
//!   supervisor, one at a time and pipelined (target: at least 50 000 cycles/s).
//! * `registry_memory_per_live_resource`: heap bytes per live resource, for the registry alone
//!   and for a whole supervised resource (target: at most 2 KiB per live resource in the
//!   registry). Measured once with a counting global allocator, not a timing loop.
//!
//! Run with `cargo bench -p steward-core --bench supervision`; the figures are also printed in
//! plain words on stderr.
// Measurement-only: the counting global allocator below needs `unsafe impl GlobalAlloc`. It
// forwards every call unchanged to the system allocator and only adds atomic counters.
#![allow(unsafe_code)]
#![allow(clippy::print_stderr, missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System as SystemAlloc};
use std::cell::RefCell;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use steward_config::Config;
use steward_core::registry::Registration;
use steward_core::supervisor::Supervisor;
use steward_core::{
    ChildSpec, ExitReason, Registry, Resource, ResourceCtx, ResourceKind, RestartType,
    StopResource, Strategy, SupervisorHandle, SupervisorSpec, stop_resource,
};

// ---- counting allocator ------------------------------------------------------------------------

/// Wraps the system allocator and counts live heap bytes (allocated minus freed) and live
/// allocations, across all threads.
struct CountingAlloc;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `std::alloc::System` with the caller's arguments unchanged;
// the counters have no effect on the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours, forwarded unchanged.
        let p = unsafe { SystemAlloc.alloc(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours, forwarded unchanged.
        let p = unsafe { SystemAlloc.alloc_zeroed(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, forwarded unchanged.
        unsafe { SystemAlloc.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours, forwarded unchanged.
        let p = unsafe { SystemAlloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
}

fn count_alloc(size: usize) {
    LIVE_BYTES.fetch_add(size as isize, Ordering::Relaxed);
    LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Live heap bytes and live allocations now.
fn heap() -> (isize, isize) {
    (LIVE_BYTES.load(Ordering::SeqCst), LIVE_ALLOCS.load(Ordering::SeqCst))
}

// ---- a minimal resource --------------------------------------------------------------------------

/// The smallest possible resource actor: its context and nothing else.
struct BenchResource {
    rcx: ResourceCtx,
}

impl Actor for BenchResource {
    type Context = Context<Self>;
}

impl Resource for BenchResource {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }
}

impl Handler<StopResource> for BenchResource {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        stop_resource(self, ctx, msg.reason);
    }
}

/// A temporary consumer (the default config gives consumers no idle timer).
fn child_spec() -> ChildSpec {
    ChildSpec::new("bench-consumer", ResourceKind::Consumer, |rcx| {
        Ok::<_, std::convert::Infallible>(BenchResource { rcx })
    })
    .restart(RestartType::Temporary)
}

// ---- supervised_start_stop ------------------------------------------------------------------------

const SAMPLE_SIZE: usize = 10;
const PIPELINE: usize = 64;
const TARGET_CYCLES_PER_SEC: f64 = 50_000.0;
const GONE_WITHIN: Duration = Duration::from_secs(10);

/// One supervised start + stop: start a child, terminate it, wait until it left the registry.
async fn cycle(handle: &SupervisorHandle, registry: &Registry) {
    let (id, addr) = handle.start_child::<BenchResource>(child_spec()).await.expect("child starts");
    drop(addr);
    handle.terminate_child(id, ExitReason::Normal).await.expect("child is known");
    let gone = registry.wait_gone(id, Instant::now() + GONE_WITHIN).await;
    assert!(gone, "child {id} still in the registry after {GONE_WITHIN:?}");
}

/// Every `iter_custom` call of one benchmark: cycles run and the time they took.
#[derive(Default)]
struct Samples(Vec<(u64, Duration)>);

impl Samples {
    /// Cycles per second over the last `SAMPLE_SIZE` calls (criterion's measurement samples;
    /// the calls before them are its warm-up). `None` when the benchmark did not run.
    fn cycles_per_sec(&self) -> Option<(f64, u64)> {
        let measured = &self.0[self.0.len().saturating_sub(SAMPLE_SIZE)..];
        let cycles: u64 = measured.iter().map(|(n, _)| n).sum();
        let time: Duration = measured.iter().map(|(_, t)| *t).sum();
        (cycles > 0 && !time.is_zero()).then(|| (cycles as f64 / time.as_secs_f64(), cycles))
    }
}

fn supervised_start_stop(c: &mut Criterion) {
    let system = actix_rt::System::new();
    let config = Config::defaults();
    let registry = Registry::new(config.registry.clone(), &config.idle);
    assert!(
        registry.idle_timeout(ResourceKind::Consumer).is_none(),
        "consumers have no idle timer"
    );
    let root = system
        .block_on(Supervisor::start_root(
            &registry,
            SupervisorSpec::from_config("bench", Strategy::Dynamic, &config.supervisor),
        ))
        .expect("root supervisor starts");
    let handle = root.handle.clone();

    let sequential = RefCell::new(Samples::default());
    let pipelined = RefCell::new(Samples::default());
    let mut group = c.benchmark_group("supervised_start_stop");

    group.throughput(Throughput::Elements(1));
    group.bench_function("sequential", |b| {
        b.iter_custom(|iters| {
            let elapsed = system.block_on(async {
                let t0 = Instant::now();
                for _ in 0..iters {
                    cycle(&handle, &registry).await;
                }
                t0.elapsed()
            });
            sequential.borrow_mut().0.push((iters, elapsed));
            elapsed
        });
    });

    group.throughput(Throughput::Elements(PIPELINE as u64));
    group.bench_function(format!("pipelined_{PIPELINE}"), |b| {
        b.iter_custom(|iters| {
            let elapsed = system.block_on(async {
                let t0 = Instant::now();
                for _ in 0..iters {
                    join_all((0..PIPELINE).map(|_| cycle(&handle, &registry))).await;
                }
                t0.elapsed()
            });
            pipelined.borrow_mut().0.push((iters * PIPELINE as u64, elapsed));
            elapsed
        });
    });
    group.finish();

    assert_eq!(registry.len(), 1, "only the root supervisor is left");
    system.block_on(async {
        handle.stop(ExitReason::Shutdown).await.expect("root stops");
        root.exited.await.expect("root reports its exit");
    });

    let report = |label: &str, samples: &RefCell<Samples>| {
        let Some((rate, cycles)) = samples.borrow().cycles_per_sec() else { return };
        let verdict = if rate >= TARGET_CYCLES_PER_SEC { "MET" } else { "MISSED" };
        eprintln!(
            "supervised start+stop, {label}: {rate:.0} cycles/s ({:.2} µs per cycle, {cycles} \
             cycles measured); target >= {TARGET_CYCLES_PER_SEC:.0} cycles/s: {verdict}",
            1e6 / rate
        );
    };
    eprintln!();
    report("sequential (1 in flight)", &sequential);
    report(&format!("pipelined ({PIPELINE} in flight)"), &pipelined);
    eprintln!();
}

// ---- registry_memory_per_live_resource ---------------------------------------------------------

const REGISTRY_ONLY_N: usize = 100_000;
const WHOLE_RESOURCE_N: usize = 20_000;
const TARGET_BYTES: f64 = 2048.0;

fn per(bytes: isize, n: usize) -> f64 {
    bytes as f64 / n as f64
}

/// (a) The registry alone: `Registry::register` N times, the returned ids and shared state kept
/// alive. Every registration shares one name (the name string belongs to the child spec).
fn registry_only() -> (f64, f64) {
    let registry = Registry::with_defaults();
    let name: Arc<str> = "bench-consumer".into();
    let mut keep = Vec::with_capacity(REGISTRY_ONLY_N);
    let (bytes0, allocs0) = heap();
    for _ in 0..REGISTRY_ONLY_N {
        keep.push(registry.register(Registration {
            kind: ResourceKind::Consumer,
            name: name.clone(),
            tenant: None,
            parent: None,
        }));
    }
    let (bytes1, allocs1) = heap();
    assert_eq!(registry.len(), REGISTRY_ONLY_N);
    black_box(&keep);
    (per(bytes1 - bytes0, REGISTRY_ONLY_N), per(allocs1 - allocs0, REGISTRY_ONLY_N))
}

/// What [`whole_resource`] measured.
struct WholeResource {
    /// Heap bytes per live child.
    bytes: f64,
    /// Heap allocations per live child.
    allocs: f64,
    /// Bytes still allocated after all children and the supervisor stopped, registry alive.
    left_registry_alive: isize,
    /// Bytes still allocated once the registry was dropped too.
    left_registry_dropped: isize,
}

/// (b) A whole supervised resource: N live children of a dynamic supervisor (actor and its
/// task, mailbox, resource context and tracker, registry entry, supervisor slot). The
/// addresses returned by `start_child` are dropped: the supervisor keeps each child alive.
fn whole_resource() -> WholeResource {
    let system = actix_rt::System::new();
    let config = Config::defaults();
    let registry = Registry::new(config.registry.clone(), &config.idle);
    let (bytes, allocs, baseline, left_registry_alive) = system.block_on(async {
        let root = Supervisor::start_root(
            &registry,
            SupervisorSpec::from_config("bench-memory", Strategy::Dynamic, &config.supervisor),
        )
        .await
        .expect("root supervisor starts");
        let handle = root.handle.clone();
        let spec = child_spec();
        // let everything lazily allocated on first use settle before the baseline
        let (id, _) = handle.start_child::<BenchResource>(spec.clone()).await.expect("starts");
        handle.terminate_child(id, ExitReason::Normal).await.expect("known");
        assert!(registry.wait_gone(id, Instant::now() + GONE_WITHIN).await);
        actix_rt::time::sleep(Duration::from_millis(10)).await;

        let (bytes0, allocs0) = heap();
        for _ in 0..WHOLE_RESOURCE_N {
            let (_, addr) =
                handle.start_child::<BenchResource>(spec.clone()).await.expect("child starts");
            drop(addr);
        }
        // let every child task run its first poll (`started`) and go idle
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        let (bytes1, allocs1) = heap();
        assert_eq!(registry.len(), WHOLE_RESOURCE_N + 1);

        handle.stop(ExitReason::Shutdown).await.expect("root stops");
        root.exited.await.expect("root reports its exit");
        assert!(registry.is_empty());
        drop(handle);
        drop(spec);
        let (bytes2, _) = heap();
        (
            per(bytes1 - bytes0, WHOLE_RESOURCE_N),
            per(allocs1 - allocs0, WHOLE_RESOURCE_N),
            bytes0,
            bytes2 - bytes0,
        )
    });
    drop(registry);
    let left_registry_dropped = heap().0 - baseline;
    drop(system);
    WholeResource { bytes, allocs, left_registry_alive, left_registry_dropped }
}

fn registry_memory_per_live_resource(_c: &mut Criterion) {
    let (reg_bytes, reg_allocs) = registry_only();
    let whole = whole_resource();
    let verdict = if reg_bytes <= TARGET_BYTES { "MET" } else { "MISSED" };
    eprintln!();
    eprintln!(
        "registry_memory_per_live_resource, registry only ({REGISTRY_ONLY_N} registrations): \
         {reg_bytes:.0} bytes ({reg_allocs:.1} heap allocations) per live resource; \
         target <= {TARGET_BYTES:.0} bytes: {verdict}"
    );
    eprintln!(
        "registry_memory_per_live_resource, whole supervised resource ({WHOLE_RESOURCE_N} live \
         children: actor, task, mailbox, context, registry entry, supervisor slot): \
         {:.0} bytes ({:.1} heap allocations) per live resource",
        whole.bytes, whole.allocs
    );
    eprintln!(
        "  after stopping them all: {} bytes more than before while the registry lives (its \
         live map keeps its grown capacity, its stopped list is bounded), {} bytes once the \
         registry is dropped too",
        whole.left_registry_alive, whole.left_registry_dropped
    );
    eprintln!();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(SAMPLE_SIZE)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    targets = supervised_start_stop, registry_memory_per_live_resource
}
criterion_main!(benches);
