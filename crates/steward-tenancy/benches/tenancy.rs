//! Tenancy hot-path benchmarks: what every request and every resource start pays.
//!
//! * `authenticate/cached`: `Tenancy::authenticate` of a token whose record is in the cache.
//! * `authenticate/store`: `Tenancy::authenticate` when the cache misses, so the token and its
//!   tenant are read from the embedded SQLite store.
//! * `admit/reserve_release`: one `QuotaLedger::admit` and the release of its reservation.
//! * `admit/contended_4_threads`: the same from 4 threads on one tenant of one shared ledger.
//! * `token/generate_and_hash`: issuing a token's material (OS randomness, hex, bearer string)
//!   and the SHA-256 the store keeps.
//!
//! Run with `cargo bench -p steward-tenancy --bench tenancy`. Every benchmark reports time and
//! throughput per operation (one `authenticate`, one admit + release, one token).
#![allow(missing_docs)]

use std::cell::Cell;
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use steward_config::{Config, TenancyConfig};
use steward_core::{Registry, ResourceKind};
use steward_tenancy::{
    Labels, NewTenant, NewToken, QuotaLedger, QuotaOverrides, Quotas, Tenancy, TenantId, token,
};
use tokio::runtime::{Builder, Runtime};

// ---- fixture ----------------------------------------------------------------------------------

/// Tenants of the store fixture.
const TENANTS: usize = 4;
/// Tokens per tenant (below the default `tenancy.max_tokens_per_tenant` of 100).
const TOKENS_PER_TENANT: usize = 64;
/// The cached benchmark re-resolves its token (untimed) before every run of this many calls.
const CHUNK: u64 = 10_000;
/// The token cache never keeps an entry shorter than this (`TokenCache::new`), even when
/// `tenancy.token_cache_ttl` is 0 s.
const CACHE_TTL_FLOOR: Duration = Duration::from_millis(1);

/// A current-thread runtime, as a front door's handler runs `authenticate` on one.
fn runtime() -> Runtime {
    Builder::new_current_thread().enable_all().build().expect("tokio runtime builds")
}

/// A tenancy over a fresh embedded SQLite store in a temporary directory, with `TENANTS`
/// tenants of `TOKENS_PER_TENANT` never-expiring tokens each.
struct Fixture {
    tenancy: Tenancy,
    /// Every issued bearer string, tenant by tenant.
    bearers: Vec<String>,
    _dir: tempfile::TempDir,
}

fn fixture(rt: &Runtime, config: &TenancyConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut store = Config::defaults().store;
    store.url = String::new();
    store.data_dir = dir.path().join("data");
    rt.block_on(async {
        let tenancy =
            Tenancy::open(&store, config, Registry::with_defaults(), Duration::from_secs(1))
                .await
                .expect("store opens");
        let mut bearers = Vec::with_capacity(TENANTS * TOKENS_PER_TENANT);
        for t in 0..TENANTS {
            let view = tenancy
                .create_tenant(NewTenant {
                    id: format!("bench-{t}"),
                    display_name: None,
                    quotas: QuotaOverrides::default(),
                    browser_endpoint: None,
                    browser_allow: Vec::new(),
                    labels: Labels::default(),
                })
                .await
                .expect("tenant created");
            for k in 0..TOKENS_PER_TENANT {
                let issued = tenancy
                    .issue_token(
                        &view.tenant.id,
                        NewToken { name: format!("bench-{k}"), expires_in: None },
                    )
                    .await
                    .expect("token issued");
                bearers.push(issued.bearer);
            }
        }
        Fixture { tenancy, bearers, _dir: dir }
    })
}

// ---- authenticate -------------------------------------------------------------------------------

/// `authenticate/cached`: `Tenancy::authenticate(bearer)` for a token already in the cache, with
/// the default config (`tenancy.token_cache_ttl` = 1 s): parse the bearer, look the id up in
/// the cache, hash the presented secret and compare it in constant time, check expiry, clone
/// the context. The token is resolved once (untimed) before every `CHUNK` calls (about 10 ms),
/// so measured calls hit the cache; the entry's 1 s lifetime counts from its insertion, so at
/// most one call per second of measurement goes to the store, a negligible share.
fn authenticate_cached(c: &mut Criterion) {
    let rt = runtime();
    let f = fixture(&rt, &Config::defaults().tenancy);
    let bearer = f.bearers[0].as_str();

    let mut group = c.benchmark_group("authenticate");
    group.throughput(Throughput::Elements(1));
    group.bench_function("cached", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut measured = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(CHUNK);
                    f.tenancy.authenticate(bearer).await.expect("token authenticates");
                    let t0 = Instant::now();
                    for _ in 0..n {
                        let ctx = f.tenancy.authenticate(black_box(bearer)).await;
                        black_box(ctx.expect("token authenticates"));
                    }
                    measured += t0.elapsed();
                    left -= n;
                }
                measured
            })
        });
    });
    group.finish();
    rt.block_on(f.tenancy.close());
}

/// `authenticate/store`: `Tenancy::authenticate(bearer)` when the token is not cached: the
/// cache lookup misses, the token row and then its tenant row are read from SQLite (sqlx pool),
/// quotas are resolved, the record is cached, then the secret is checked as on the cached path.
/// The cache TTL is set to 0 s (the cache keeps entries for its 1 ms floor) and the calls rotate
/// over all `TENANTS * TOKENS_PER_TENANT` tokens, so a token comes round again only after 255
/// other store lookups, far more than 1 ms later (checked before measuring).
fn authenticate_store(c: &mut Criterion) {
    let rt = runtime();
    let mut config = Config::defaults().tenancy;
    config.token_cache_ttl = Duration::ZERO;
    let f = fixture(&rt, &config);
    let next = Cell::new(0usize);
    let run = |iters: u64| {
        rt.block_on(async {
            let t0 = Instant::now();
            for _ in 0..iters {
                let i = next.get();
                next.set((i + 1) % f.bearers.len());
                let ctx = f.tenancy.authenticate(black_box(&f.bearers[i])).await;
                black_box(ctx.expect("token authenticates"));
            }
            t0.elapsed()
        })
    };

    // One whole rotation must take longer than the cache keeps an entry, or some calls would hit.
    let rotation = run(f.bearers.len() as u64);
    assert!(
        rotation > 2 * CACHE_TTL_FLOOR,
        "a rotation over {} tokens took {rotation:?}: too fast to be sure every call misses the \
         cache",
        f.bearers.len()
    );

    let mut group = c.benchmark_group("authenticate");
    group.throughput(Throughput::Elements(1));
    group.bench_function("store", |b| b.iter_custom(run));
    group.finish();
    rt.block_on(f.tenancy.close());
}

// ---- admit ----------------------------------------------------------------------------------------

const THREADS: usize = 4;

/// The default quotas, with `sessions` raised to `sessions` when given.
fn quotas(sessions: Option<u32>) -> Quotas {
    let overrides =
        QuotaOverrides { sessions: sessions.map(u64::from), ..QuotaOverrides::default() };
    Quotas::resolve(&Config::defaults().tenancy.default_quotas, &overrides)
}

/// `admit/reserve_release`: `QuotaLedger::admit` of one session for one tenant under the default
/// quotas (the ledger's tenant-map lock, the `closed` check, the compare-and-swap on the live
/// counter, the admitted counter), then dropping the `Reservation` (releasing the slot).
fn admit_reserve_release(c: &mut Criterion) {
    let ledger = QuotaLedger::new(Duration::from_secs(1));
    let tenant = TenantId::new("bench").expect("valid tenant id");
    ledger.open(&tenant);
    let quotas = quotas(None);

    let mut group = c.benchmark_group("admit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("reserve_release", |b| {
        b.iter(|| {
            let r = ledger.admit(black_box(&tenant), &quotas, ResourceKind::Session);
            drop(black_box(r.expect("admitted")));
        });
    });
    group.finish();
}

/// `admit/contended_4_threads`: admit + release as in `admit/reserve_release`, from 4 threads at
/// once against one shared ledger and one tenant (session quota 1000, so nothing is refused):
/// the tenant-map lock and the tenant's counters are contended. Each criterion iteration is one
/// admit + release; a batch is split evenly over the threads, timed from their common start
/// (a barrier) until the last one finished, so the figure is wall time / total operations.
fn admit_contended(c: &mut Criterion) {
    let ledger = QuotaLedger::new(Duration::from_secs(1));
    let tenant = TenantId::new("bench").expect("valid tenant id");
    ledger.open(&tenant);
    let quotas = quotas(Some(1000));

    let mut group = c.benchmark_group("admit");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("contended_{THREADS}_threads"), |b| {
        b.iter_custom(|iters| {
            let start = Barrier::new(THREADS + 1);
            std::thread::scope(|s| {
                let workers: Vec<_> = (0..THREADS as u64)
                    .map(|t| {
                        let n = iters / THREADS as u64 + u64::from(t < iters % THREADS as u64);
                        let (ledger, tenant, quotas, start) = (&ledger, &tenant, &quotas, &start);
                        s.spawn(move || {
                            start.wait();
                            for _ in 0..n {
                                let r =
                                    ledger.admit(black_box(tenant), quotas, ResourceKind::Session);
                                drop(black_box(r.expect("admitted")));
                            }
                        })
                    })
                    .collect();
                start.wait();
                let t0 = Instant::now();
                for w in workers {
                    w.join().expect("worker thread");
                }
                t0.elapsed()
            })
        });
    });
    group.finish();
    assert!(
        ledger.reserved(&tenant).iter().all(|(_, n)| *n == 0),
        "every reservation was released"
    );
}

// ---- token ----------------------------------------------------------------------------------------

/// `token/generate_and_hash`: `token::generate()` (64 + 256 bits from the OS via `getrandom`,
/// hex-encoded, the `stw_<id>_<secret>` bearer string formatted) and `Secret::sha256_hex`, the
/// hash the store keeps: what issuing a token costs apart from the store.
fn token_generate_and_hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("token");
    group.throughput(Throughput::Elements(1));
    group.bench_function("generate_and_hash", |b| {
        b.iter(|| {
            let generated = token::generate().expect("OS random source");
            let hash = generated.secret.sha256_hex();
            black_box((generated, hash))
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = authenticate_cached, authenticate_store, admit_reserve_release, admit_contended,
        token_generate_and_hash
}
criterion_main!(benches);
