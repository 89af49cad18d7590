//! Tests of the job hub: the table, its cap, eviction, fan-out and subscriptions.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use steward_config::Config;
use steward_core::supervisor::Supervisor;
use steward_core::{Registry, Strategy, SupervisorSpec};

use super::subscribers::Subscribers;
use super::table::JobTable;
use super::*;

fn config() -> JobsConfig {
    Config::defaults().jobs
}

fn tenant(name: &str) -> Arc<str> {
    name.into()
}

/// A watcher that records what it is offered, with a bounded capacity.
#[derive(Default)]
struct Recorder {
    frames: Mutex<Vec<String>>,
    capacity: usize,
    closed: std::sync::atomic::AtomicBool,
    offers: AtomicUsize,
}

impl Recorder {
    fn with_capacity(capacity: usize) -> Arc<Self> {
        Arc::new(Self { capacity, ..Self::default() })
    }

    fn push(&self, frame: String) -> Offer {
        self.offers.fetch_add(1, Ordering::Relaxed);
        if self.closed.load(Ordering::Relaxed) {
            return Offer::Closed;
        }
        let mut frames = self.frames.lock().unwrap();
        if frames.len() >= self.capacity {
            return Offer::Overflow;
        }
        frames.push(frame);
        Offer::Queued
    }

    fn frames(&self) -> Vec<Value> {
        self.frames.lock().unwrap().iter().map(|f| serde_json::from_str(f).unwrap()).collect()
    }
}

impl JobSink for Recorder {
    fn subscribed(&self, snapshot: &Arc<JobUpdate>, request: Option<&Value>) -> Offer {
        let v = serde_json::json!({"type": "subscribed", "status": snapshot.job.status.as_str(), "id": request});
        self.push(v.to_string())
    }

    fn offer(&self, update: &Arc<JobUpdate>) -> Offer {
        self.push(update.frame().to_string())
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

#[test]
fn a_job_moves_forward_only_and_nothing_leaves_a_final_state() {
    let mut table = JobTable::new(&config());
    let acme = tenant("acme");
    let job = table.create(&acme, "render", Some(r#"{"pages": 3}"#)).unwrap();
    assert_eq!(
        (job.status, job.progress, job.data.get()),
        (JobStatus::Queued, 0, r#"{"pages":3}"#)
    );
    let patch = |status, progress| JobPatch { status, progress, data: None };
    let job2 = table.update("acme", &job.id, &patch(Some(JobStatus::Running), Some(40))).unwrap();
    assert_eq!((job2.status, job2.progress), (JobStatus::Running, 40));
    assert_eq!(table.running(), 1);
    assert!(matches!(
        table.update("acme", &job.id, &patch(Some(JobStatus::Queued), None)),
        Err(Error::Transition { from: "running", to: "queued", .. })
    ));
    assert!(matches!(
        table.update("acme", &job.id, &patch(None, Some(101))),
        Err(Error::InvalidArgument { field: "progress", .. })
    ));
    let done = table.update("acme", &job.id, &patch(Some(JobStatus::Completed), None)).unwrap();
    assert_eq!((done.status, done.progress), (JobStatus::Completed, 100));
    assert!(done.finished_at.is_some());
    assert_eq!(table.running(), 0);
    for next in [JobStatus::Running, JobStatus::Failed, JobStatus::Cancelled] {
        assert!(matches!(
            table.update("acme", &job.id, &patch(Some(next), None)),
            Err(Error::Finished { status: "completed", .. })
        ));
    }
    assert!(matches!(
        table.update("acme", &job.id, &patch(None, Some(5))),
        Err(Error::Finished { .. })
    ));
}

#[test]
fn a_refused_patch_changes_nothing() {
    let mut table = JobTable::new(&config());
    let job = table.create(&tenant("acme"), "render", None).unwrap();
    let bad =
        JobPatch { status: Some(JobStatus::Running), progress: Some(10), data: Some("[1]".into()) };
    assert!(matches!(
        table.update("acme", &job.id, &bad),
        Err(Error::InvalidArgument { field: "data", .. })
    ));
    let same = table.get("acme", &job.id).unwrap();
    assert_eq!((same.status, same.progress, same.data.get()), (JobStatus::Queued, 0, "{}"));
}

#[test]
fn a_tenant_sees_only_its_own_jobs() {
    let mut table = JobTable::new(&config());
    let job = table.create(&tenant("acme"), "render", None).unwrap();
    assert!(matches!(table.get("globex", &job.id), Err(Error::NotFound(_))));
    let patch = JobPatch { progress: Some(1), ..JobPatch::default() };
    assert!(matches!(table.update("globex", &job.id, &patch), Err(Error::NotFound(_))));
}

#[test]
fn bad_kind_and_data_are_refused_with_the_field() {
    let mut table = JobTable::new(&JobsConfig { max_data: bytesize_of(16), ..config() });
    let acme = tenant("acme");
    let err = |r: Result<Job>| match r {
        Err(Error::InvalidArgument { field, .. }) => field,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    assert_eq!(err(table.create(&acme, " ", None)), "kind");
    assert_eq!(err(table.create(&acme, &"k".repeat(129), None)), "kind");
    assert_eq!(err(table.create(&acme, "k", Some("not json"))), "data");
    assert_eq!(err(table.create(&acme, "k", Some("[1, 2]"))), "data");
    assert_eq!(err(table.create(&acme, "k", Some(r#"{"much": "too long for 16 bytes"}"#))), "data");
}

fn bytesize_of(n: u64) -> bytesize::ByteSize {
    bytesize::ByteSize::b(n)
}

#[test]
fn the_table_has_a_hard_cap_and_evicts_finished_jobs_in_deadline_order() {
    let mut table = JobTable::new(&JobsConfig {
        max_jobs: 3,
        finished_ttl: Duration::from_millis(10),
        ..config()
    });
    let acme = tenant("acme");
    let a = table.create(&acme, "a", None).unwrap();
    let b = table.create(&acme, "b", None).unwrap();
    let _c = table.create(&acme, "c", None).unwrap();
    assert!(matches!(
        table.create(&acme, "d", None),
        Err(Error::LimitReached { what: "jobs", limit: 3 })
    ));
    let end = JobPatch { status: Some(JobStatus::Failed), ..JobPatch::default() };
    table.update("acme", &b.id, &end).unwrap();
    table.update("acme", &a.id, &end).unwrap();
    assert!(table.next_eviction().is_some());
    assert!(table.evict_due(Instant::now()).is_empty(), "not due yet");
    let gone = table.evict_due(Instant::now() + Duration::from_secs(1));
    assert_eq!(gone, vec![b.id.clone(), a.id.clone()]);
    assert_eq!(table.len(), 1);
    assert!(table.next_eviction().is_none());
    table.create(&acme, "d", None).expect("room again after eviction");
}

#[test]
fn removing_a_tenant_removes_its_jobs_only() {
    let mut table = JobTable::new(&config());
    let a = table.create(&tenant("acme"), "a", None).unwrap();
    let g = table.create(&tenant("globex"), "g", None).unwrap();
    table
        .update(
            "acme",
            &a.id,
            &JobPatch { status: Some(JobStatus::Running), ..JobPatch::default() },
        )
        .unwrap();
    assert_eq!(table.remove_tenant("acme"), vec![a.id]);
    assert_eq!((table.len(), table.running()), (1, 0));
    assert!(table.get("globex", &g.id).is_ok());
}

#[test]
fn a_subscription_ends_when_its_guard_drops_and_overflowing_watchers_are_dropped() {
    let subs = Arc::new(Subscribers::default());
    let mut table = JobTable::new(&config());
    let job = table.create(&tenant("acme"), "k", None).unwrap();
    let fast = Recorder::with_capacity(100);
    let slow = Recorder::with_capacity(1);
    let g1 = subs.add(&job.id, fast.clone());
    let g2 = subs.add(&job.id, slow.clone());
    assert_eq!(subs.len(), 2);
    let update = JobUpdate::new(job.clone());
    assert_eq!(subs.fan_out(&update, false), (2, 0));
    assert_eq!(subs.fan_out(&update, false), (1, 1), "the slow watcher overflows and is dropped");
    assert_eq!(subs.len(), 1);
    assert!(!g2.is_active() && g1.is_active());
    drop(g2);
    drop(g1);
    assert_eq!(subs.len(), 0, "dropping the guard is the one place a subscription ends");
    assert_eq!(fast.frames().len(), 2);
    let g3 = subs.add(&job.id, fast.clone());
    assert_eq!(subs.fan_out(&update, true), (1, 0));
    assert_eq!(subs.len(), 0, "after the final update nothing more will come");
    assert!(!g3.is_active());
}

#[test]
fn the_update_frame_is_rendered_once_and_is_the_documented_shape() {
    let mut table = JobTable::new(&config());
    let job = table.create(&tenant("acme"), "render", Some(r#"{"a": 1}"#)).unwrap();
    let update = JobUpdate::new(job.clone());
    let frame = update.frame();
    assert!(std::ptr::eq(frame, update.frame()));
    let v: Value = serde_json::from_str(frame).unwrap();
    assert_eq!(v["type"], "job");
    assert_eq!(v["job"], job.id.as_str());
    assert_eq!(v["status"], "queued");
    assert_eq!(v["progress"], 0);
    assert_eq!(v["data"], serde_json::json!({"a": 1}));
    assert!(v["at"].as_str().unwrap().ends_with('Z'));
}

async fn start_hub(
    config: JobsConfig,
) -> (Registry, JobHubHandle, steward_core::supervisor::RootSupervisor) {
    let registry = Registry::with_defaults();
    let hub = JobHubHandle::new();
    let c = Config::defaults();
    let spec = SupervisorSpec::from_config("test", Strategy::OneForOne, &c.supervisor)
        .child(hub.child_spec(config));
    let root = Supervisor::start_root(&registry, spec).await.unwrap();
    (registry, hub, root)
}

#[actix_rt::test]
async fn the_hub_fans_updates_out_in_order_after_the_subscribed_snapshot() {
    let (_registry, hub, root) = start_hub(config()).await;
    let acme = tenant("acme");
    let job = hub.create(acme.clone(), "render".into(), None).await.unwrap();
    let watcher = Recorder::with_capacity(100);
    let sub = hub
        .subscribe(acme.clone(), job.id.clone(), watcher.clone(), Some(serde_json::json!(7)))
        .await
        .unwrap()
        .expect("a live job gives a subscription");
    for p in [10, 50, 90] {
        let patch = JobPatch { status: Some(JobStatus::Running), progress: Some(p), data: None };
        hub.update(acme.clone(), job.id.clone(), patch).await.unwrap();
    }
    hub.update(
        acme.clone(),
        job.id.clone(),
        JobPatch { status: Some(JobStatus::Completed), ..JobPatch::default() },
    )
    .await
    .unwrap();
    let frames = watcher.frames();
    assert_eq!(frames[0]["type"], "subscribed");
    assert_eq!(frames[0]["id"], 7);
    let progress: Vec<i64> = frames[1..].iter().map(|f| f["progress"].as_i64().unwrap()).collect();
    assert_eq!(progress, vec![10, 50, 90, 100]);
    assert_eq!(frames[4]["status"], "completed");
    assert!(!sub.is_active(), "a finished job has no more watchers");
    assert_eq!(hub.stats().subscriptions, 0);
    // another tenant is told not found
    let other = hub.subscribe(tenant("globex"), job.id.clone(), watcher.clone(), None).await;
    assert!(matches!(other, Err(Error::NotFound(_))));
    // subscribing to a finished job gives its snapshot and no subscription
    assert!(hub.subscribe(acme, job.id, watcher.clone(), None).await.unwrap().is_none());
    assert_eq!(watcher.frames().last().unwrap()["status"], "completed");
    root.handle.stop(steward_core::ExitReason::Shutdown).await.unwrap();
}

#[actix_rt::test]
async fn the_hub_evicts_finished_jobs_on_its_timer() {
    let (registry, hub, root) =
        start_hub(JobsConfig { finished_ttl: Duration::from_millis(50), ..config() }).await;
    let acme = tenant("acme");
    let job = hub.create(acme.clone(), "render".into(), None).await.unwrap();
    hub.cancel(acme.clone(), job.id.clone()).await.unwrap();
    assert_eq!(hub.stats().jobs, 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while hub.stats().jobs != 0 && Instant::now() < deadline {
        tick.tick().await;
    }
    assert_eq!(hub.stats().jobs, 0);
    assert_eq!(hub.stats().evicted, 1);
    assert!(matches!(hub.get(acme, job.id).await, Err(Error::NotFound(_))));
    // the hub owns exactly its sweep interval once nothing is due
    let hub_entry = registry
        .list(&steward_core::ResourceFilter::default(), None, 100)
        .0
        .into_iter()
        .find(|r| &*r.name == "job-hub")
        .unwrap();
    assert_eq!(hub_entry.timers, 1, "{hub_entry:?}");
    root.handle.stop(steward_core::ExitReason::Shutdown).await.unwrap();
}

#[test]
fn a_queued_job_expires_at_its_ttl_and_one_that_left_queued_does_not() {
    let mut table =
        JobTable::new(&JobsConfig { queued_ttl: Duration::from_millis(10), ..config() });
    let acme = tenant("acme");
    let waiting = table.create(&acme, "a", None).unwrap();
    let started = table.create(&acme, "b", None).unwrap();
    let running = JobPatch { status: Some(JobStatus::Running), ..JobPatch::default() };
    table.update(&acme, &started.id, &running).unwrap();
    assert!(table.next_expiry().is_some());
    let due = table.expired(std::time::Instant::now() + Duration::from_secs(1));
    assert_eq!(due, vec![(acme.clone(), waiting.id.clone())]);
    assert_eq!(table.next_expiry(), None, "no deadline is kept for a job that cannot expire");
}
