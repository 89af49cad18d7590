//! `steward.jobs.v1.Jobs` on the real binary: tenants and tokens come from the admin HTTP API, a
//! client creates and watches a job over gRPC while a worker (another token of the same tenant)
//! reports on it; tenants never see each other's jobs.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use steward_proto::jobs::v1 as pb;
use steward_proto::jobs::v1::jobs_client::JobsClient;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::messaging::set_quotas;
use crate::support::{Steward, WITHIN};

/// Issues a token of tenant `tenant` through the admin API; returns its bearer string.
async fn issue_token(s: &Steward, tenant: &str, name: &str) -> String {
    let r = s
        .request(Method::POST, &format!("/v1/tenants/{tenant}/tokens"))
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let token: Value = r.json().await.unwrap();
    token["token"].as_str().unwrap().to_owned()
}

/// Creates tenant `id` through the admin API and returns a jobs client with a token of it.
async fn tenant(s: &Steward, id: &str) -> Jobs {
    let r = s.request(Method::POST, "/v1/tenants").json(&json!({ "id": id })).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    Jobs::connect(s, issue_token(s, id, "client").await).await
}

/// A jobs client calling with one bearer token.
struct Jobs {
    client: JobsClient<Channel>,
    bearer: String,
}

impl Jobs {
    async fn connect(s: &Steward, bearer: String) -> Self {
        Self { client: JobsClient::connect(s.grpc.clone()).await.unwrap(), bearer }
    }

    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        let value = format!("Bearer {}", self.bearer).parse().unwrap();
        req.metadata_mut().insert("authorization", value);
        req
    }

    async fn create(&mut self, kind: &str, data: Option<&str>) -> Result<pb::Job, Status> {
        let req = self.req(pb::CreateJobRequest { kind: kind.into(), data: data.map(Into::into) });
        self.client.create_job(req).await.map(tonic::Response::into_inner)
    }

    async fn report(
        &mut self,
        id: &str,
        status: pb::JobStatus,
        progress: u32,
        data: &str,
    ) -> Result<pb::Job, Status> {
        let req = self.req(pb::UpdateJobRequest {
            id: id.into(),
            status: Some(status.into()),
            progress: Some(progress),
            data: Some(data.into()),
        });
        self.client.update_job(req).await.map(tonic::Response::into_inner)
    }

    async fn get(&mut self, id: &str) -> Result<pb::Job, Status> {
        let req = self.req(pb::GetJobRequest { id: id.into() });
        self.client.get_job(req).await.map(tonic::Response::into_inner)
    }

    async fn cancel(&mut self, id: &str) -> Result<pb::Job, Status> {
        let req = self.req(pb::CancelJobRequest { id: id.into() });
        self.client.cancel_job(req).await.map(tonic::Response::into_inner)
    }

    async fn watch(&mut self, id: &str) -> Result<Streaming<pb::Job>, Status> {
        let req = self.req(pb::WatchJobRequest { id: id.into() });
        self.client.watch_job(req).await.map(tonic::Response::into_inner)
    }
}

/// The next message of a watch, `Ok(None)` once it ended `OK`; fails the test after [`WITHIN`].
async fn next(watch: &mut Streaming<pb::Job>) -> Result<Option<pb::Job>, Status> {
    tokio::time::timeout(WITHIN, watch.message()).await.expect("a message or the end in time")
}

fn status_of(job: &pb::Job) -> pb::JobStatus {
    pb::JobStatus::try_from(job.status).expect("a known status")
}

#[tokio::test]
async fn a_watcher_sees_a_workers_updates_in_order_until_completed() {
    let s = Steward::start(&[]).await;
    let channel = tonic::transport::Endpoint::from_shared(s.grpc.clone()).unwrap();
    let health = HealthClient::new(channel.connect().await.unwrap());
    // health follows readiness from a task of the listener: SERVING shortly after "ready"
    let serving = crate::support::eventually(WITHIN, || {
        let mut health = health.clone();
        async move {
            let req = HealthCheckRequest { service: "steward.jobs.v1.Jobs".into() };
            health
                .check(req)
                .await
                .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
        }
    })
    .await;
    assert!(serving, "steward.jobs.v1.Jobs is SERVING");

    let mut client = tenant(&s, "acme").await;
    let mut worker = Jobs::connect(&s, issue_token(&s, "acme", "worker").await).await;

    let job = client.create("render", Some(r#"{"pages":3}"#)).await.unwrap();
    assert_eq!((status_of(&job), job.progress), (pb::JobStatus::Queued, 0));
    assert_eq!(job.data, r#"{"pages":3}"#);
    let mut watch = client.watch(&job.id).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap(), Some(job.clone()), "the snapshot first");

    let reports = [
        (pb::JobStatus::Running, 0, r#"{"page":0}"#),
        (pb::JobStatus::Running, 33, r#"{"page":1}"#),
        (pb::JobStatus::Running, 67, r#"{"page":2}"#),
        (pb::JobStatus::Completed, 100, r#"{"pages":3,"url":"https://example.test/r.pdf"}"#),
    ];
    let mut sent = Vec::new();
    for (status, progress, data) in reports {
        sent.push(worker.report(&job.id, status, progress, data).await.unwrap());
    }
    let mut seen = Vec::new();
    while let Some(update) = next(&mut watch).await.expect("the watch ends OK") {
        seen.push(update);
    }
    assert_eq!(seen, sent, "every update, in order, and nothing after completed");
    let progress: Vec<(pb::JobStatus, u32)> =
        seen.iter().map(|j| (status_of(j), j.progress)).collect();
    assert_eq!(
        progress,
        [
            (pb::JobStatus::Running, 0),
            (pb::JobStatus::Running, 33),
            (pb::JobStatus::Running, 67),
            (pb::JobStatus::Completed, 100),
        ]
    );

    let done = client.get(&job.id).await.unwrap();
    assert_eq!(done, sent[3]);
    assert!(done.finished_at.is_some());
    assert_eq!(done.data, r#"{"pages":3,"url":"https://example.test/r.pdf"}"#);
    // a finished job cannot change, and watching it gives its state and the end
    let refused = worker.report(&job.id, pb::JobStatus::Running, 1, "{}").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let mut watch = client.watch(&job.id).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap(), Some(done));
    assert_eq!(next(&mut watch).await.unwrap(), None);
}

#[tokio::test]
async fn a_tenant_cannot_see_another_tenants_job() {
    let s = Steward::start(&[]).await;
    let mut acme = tenant(&s, "acme").await;
    let mut globex = tenant(&s, "globex").await;

    let job = acme.create("render", None).await.unwrap();
    let not_found = format!("not_found: job {} not found", job.id);
    let check = |result: Result<(), Status>, call: &str| {
        let status = result.expect_err(call);
        assert_eq!(
            (status.code(), status.message()),
            (Code::NotFound, not_found.as_str()),
            "{call}"
        );
    };
    check(globex.get(&job.id).await.map(drop), "get");
    check(globex.report(&job.id, pb::JobStatus::Running, 50, "{}").await.map(drop), "update");
    check(globex.cancel(&job.id).await.map(drop), "cancel");
    check(globex.watch(&job.id).await.map(drop), "watch");
    assert_eq!(acme.get(&job.id).await.unwrap(), job, "untouched by globex");

    // globex's own jobs are its own
    let theirs = globex.create("export", None).await.unwrap();
    assert_eq!(acme.get(&theirs.id).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(globex.get(&theirs.id).await.unwrap(), theirs);

    // without a token nobody sees anything
    let mut anonymous = Jobs::connect(&s, String::new()).await;
    let refused = anonymous.get(&job.id).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn steward_job_creates_updates_reads_watches_and_cancels_a_job_over_grpc() {
    use std::process::{Output, Stdio};
    use tokio::io::{AsyncBufReadExt, BufReader};

    /// `steward job ARGS --grpc <s.grpc>` with `$STEWARD_TOKEN` = `token`, as a tokio process.
    fn cli(s: &Steward, token: &str, args: &[&str]) -> tokio::process::Command {
        let args: Vec<&str> =
            ["job"].iter().chain(args).chain(&["--grpc", &s.grpc]).copied().collect();
        let mut cmd = tokio::process::Command::from(crate::support::command(
            &args,
            &[("STEWARD_TOKEN", token)],
        ));
        cmd.kill_on_drop(true);
        cmd
    }
    /// Runs `steward job ARGS` to its end; its exit code and stdout.
    async fn run(s: &Steward, token: &str, args: &[&str]) -> (Option<i32>, String) {
        let out: Output = tokio::time::timeout(WITHIN, cli(s, token, args).output())
            .await
            .expect("steward job exits in time")
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        (out.status.code(), stdout)
    }

    let s = Steward::start(&[]).await;
    let (_, token) = s.tenant_with_token("acme", None).await;

    // create prints the id alone; get prints one JSON object (a kind that needs escaping)
    let kind = "render \"fast\"\n\\";
    let (code, stdout) =
        run(&s, &token, &["create", "--kind", kind, "--data", r#"{"pages":3}"#]).await;
    assert_eq!(code, Some(0), "{stdout}");
    let id = stdout.strip_suffix('\n').expect("one line").to_owned();
    assert!(id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()), "{stdout:?}");
    let (code, stdout) = run(&s, &token, &["get", &id]).await;
    assert_eq!(code, Some(0), "{stdout}");
    let job: Value = serde_json::from_str(&stdout).expect("get prints JSON");
    assert_eq!(
        (&job["id"], &job["kind"], &job["status"], &job["progress"], &job["data"]),
        (&json!(id), &json!(kind), &json!("queued"), &json!(0), &json!({"pages": 3}))
    );
    assert!(job["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{job}");
    assert!(job.get("finished_at").is_none(), "{job}");

    // a watcher sees the current state first, then every update until the final one
    #[allow(clippy::disallowed_methods)] // the CLI under test; `kill_on_drop` ends it with the test
    let mut watch = cli(&s, &token, &["watch", &id]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut line = async || {
        tokio::time::timeout(WITHIN, lines.next_line()).await.expect("a line in time").unwrap()
    };
    assert_eq!(line().await.as_deref(), Some(r#"queued 0% {"pages":3}"#));
    let update =
        ["update", &id, "--status", "running", "--progress", "40", "--data", r#"{"page":4}"#];
    assert_eq!(run(&s, &token, &update).await, (Some(0), format!("{id} running 40%\n")));
    let complete = ["update", &id, "--status", "completed"];
    assert_eq!(run(&s, &token, &complete).await, (Some(0), format!("{id} completed 100%\n")));
    assert_eq!(line().await.as_deref(), Some(r#"running 40% {"page":4}"#));
    assert_eq!(line().await.as_deref(), Some(r#"completed 100% {"page":4}"#));
    assert_eq!(line().await, None, "the watch ends after the final status");
    let status = tokio::time::timeout(WITHIN, watch.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    let (_, stdout) = run(&s, &token, &["get", &id]).await;
    let job: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((&job["status"], &job["progress"]), (&json!("completed"), &json!(100)));
    assert!(job["finished_at"].is_string(), "{job}");

    // refusals: a finished job, a bad token; cancel of a live job
    let (code, stdout) = run(&s, &token, &["cancel", &id]).await;
    assert_eq!(code, Some(1));
    assert!(stdout.starts_with(&format!("refused: finished: job {id} is completed")), "{stdout}");
    let (code, stdout) = run(&s, "stw_0000000000000000_nope", &["get", &id]).await;
    assert_eq!(code, Some(1));
    assert!(stdout.starts_with("refused: unauthenticated"), "{stdout}");
    let (_, other) = run(&s, &token, &["create", "--kind", "export"]).await;
    let other = other.trim_end();
    assert_eq!(
        run(&s, &token, &["cancel", other]).await,
        (Some(0), format!("{other} cancelled 0%\n"))
    );
}

/// The value of one exact series on `/metrics` (0 when absent).
async fn metric(s: &Steward, series: &str) -> f64 {
    crate::sockets::metric(s, series).await
}

#[tokio::test]
async fn a_tenant_at_its_job_quota_does_not_stop_another_tenants_create_job() {
    let s = Steward::start(&[]).await;
    let mut acme = tenant(&s, "acme").await;
    let mut globex = tenant(&s, "globex").await;
    set_quotas(&s, "acme", json!({ "jobs": 3 })).await;
    let mut live = Vec::new();
    for _ in 0..3 {
        live.push(acme.create("render", None).await.expect("within the jobs quota").id);
    }
    let refused = acme.create("render", None).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("`jobs`"), "{refused:?}");
    assert!(refused.metadata().get("retry-after").is_some());
    // another tenant is not affected
    for _ in 0..5 {
        globex.create("render", None).await.expect("another tenant's job");
    }
    // a job that finishes gives its place back
    acme.cancel(&live[0]).await.unwrap();
    acme.create("render", None).await.expect("a place freed by a finished job");
    assert_eq!(metric(&s, "steward_tenant_quota_used{tenant=\"acme\",quota=\"jobs\"}").await, 3.0);
    assert_eq!(metric(&s, "steward_tenant_quota_limit{tenant=\"acme\",quota=\"jobs\"}").await, 3.0);
    assert!(
        metric(&s, "steward_tenant_admissions_refused_total{tenant=\"acme\",quota=\"jobs\"}").await
            >= 1.0
    );
}

#[tokio::test]
async fn queued_jobs_expire_and_watch_streams_are_capped_per_tenant() {
    let s = Steward::start(&[("STEWARD__JOBS__QUEUED_TTL", "1s")]).await;
    let mut acme = tenant(&s, "acme").await;
    set_quotas(&s, "acme", json!({ "jobs": 1, "watch_streams": 2 })).await;
    let job = acme.create("render", None).await.unwrap();
    // watch streams: two, then refused, then a place again when one ends
    let mut first = acme.watch(&job.id).await.expect("first watch");
    let second = acme.watch(&job.id).await.expect("second watch");
    let refused = acme.watch(&job.id).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("`watch_streams`"), "{refused:?}");
    drop(second);
    let third = crate::support::eventually(WITHIN, || {
        let mut c = Jobs { client: acme.client.clone(), bearer: acme.bearer.clone() };
        let id = job.id.clone();
        async move { c.watch(&id).await.is_ok() }
    })
    .await;
    assert!(third, "a watch stream's place never came back");
    // the queued job expires: its watchers hear `failed`, and its jobs-quota place is free
    assert_eq!(status_of(&next(&mut first).await.unwrap().unwrap()), pb::JobStatus::Queued);
    let expired = next(&mut first).await.unwrap().expect("the expiry update");
    assert_eq!(status_of(&expired), pb::JobStatus::Failed);
    assert_eq!(next(&mut first).await.unwrap(), None, "the watch ends after the final update");
    acme.create("render", None).await.expect("the expired job's place is free");
    assert!(metric(&s, "steward_jobs_expired_total").await >= 1.0);
}
