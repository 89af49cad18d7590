//! `steward job`: a small gRPC client of `steward.jobs.v1.Jobs` that creates, reports on, reads,
//! cancels and watches the jobs of the tenant whose API token is in `$STEWARD_TOKEN` — enough to
//! play the client or the worker by hand, for people without grpcurl.
//!
//! Output is meant for shell scripts: `create` prints the job id alone
//! (`JOB=$(steward job create --kind render)`), `update` and `cancel` print
//! `<id> <status> <progress>%`, `get` prints one JSON object and `watch` one line per update.

use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Subcommand, ValueEnum};
use steward_proto::jobs::v1::jobs_client::JobsClient;
use steward_proto::jobs::v1::{
    CancelJobRequest, CreateJobRequest, GetJobRequest, Job, JobStatus, UpdateJobRequest,
    WatchJobRequest,
};
use tonic::transport::Channel;

use crate::client::{self, Tenant};

/// The operations of `steward job`.
#[derive(Subcommand)]
pub(crate) enum JobCommand {
    /// Create a job (status queued, progress 0) and print its id alone.
    Create {
        /// Free text naming the kind of work (1 to 128 bytes by default).
        #[arg(long, value_name = "KIND")]
        kind: String,
        /// The initial data: a JSON object (16 KiB at most by default); `{}` when absent.
        #[arg(long, value_name = "JSON")]
        data: Option<String>,
    },
    /// Report on a job as a worker would and print `<id> <status> <progress>%`. Options left
    /// out keep their value.
    Update {
        /// The job's id (32 hex digits).
        id: String,
        /// The new status; a finished job (completed, failed, cancelled) cannot change.
        #[arg(long, value_enum)]
        status: Option<Status>,
        /// The new progress in percent.
        #[arg(long, value_name = "0-100", value_parser = clap::value_parser!(u32).range(0..=100))]
        progress: Option<u32>,
        /// The new data: a JSON object that replaces the previous one (no merge).
        #[arg(long, value_name = "JSON")]
        data: Option<String>,
    },
    /// Print a job as one JSON object: id, kind, status, progress, data, created_at,
    /// updated_at and, once it is final, finished_at (RFC 3339, UTC).
    Get {
        /// The job's id (32 hex digits).
        id: String,
    },
    /// Cancel a job and print `<id> cancelled <progress>%`.
    Cancel {
        /// The job's id (32 hex digits).
        id: String,
    },
    /// Print a job's current state, then one line per update (`<status> <progress>% <data>`),
    /// until it reaches a final status.
    Watch {
        /// The job's id (32 hex digits).
        id: String,
    },
}

/// A job status as typed on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Status {
    /// Created, waiting for a worker.
    Queued,
    /// A worker is on it.
    Running,
    /// Finished successfully (final).
    Completed,
    /// Finished with an error (final).
    Failed,
    /// Cancelled (final).
    Cancelled,
}

impl From<Status> for JobStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Queued => Self::Queued,
            Status::Running => Self::Running,
            Status::Completed => Self::Completed,
            Status::Failed => Self::Failed,
            Status::Cancelled => Self::Cancelled,
        }
    }
}

/// Runs `command` against the gRPC address `addr` with `$STEWARD_TOKEN`; exit 0 when the call
/// succeeded (for `watch`: the stream ended after a final status), 1 when the server refused it
/// (`refused: <message> (<code>)` on stdout) or a watch ended with an error
/// (`ended: <message> (<code>)`).
///
/// # Errors
///
/// As [`client::with_tenant`]: no token, no runtime, a bad address or no connection.
#[allow(clippy::print_stdout)]
pub(crate) fn run(addr: &str, command: JobCommand) -> anyhow::Result<ExitCode> {
    client::with_tenant(addr, |tenant| async move {
        let mut jobs = JobsClient::new(tenant.channel.clone());
        let answer = match command {
            JobCommand::Create { kind, data } => {
                let req = tenant.authed(CreateJobRequest { kind, data });
                jobs.create_job(req).await.map(|r| r.into_inner().id)
            }
            JobCommand::Update { id, status, progress, data } => {
                let status = status.map(|s| JobStatus::from(s).into());
                let req = tenant.authed(UpdateJobRequest { id, status, progress, data });
                jobs.update_job(req).await.map(|r| summary(&r.into_inner()))
            }
            JobCommand::Get { id } => {
                let req = tenant.authed(GetJobRequest { id });
                jobs.get_job(req).await.map(|r| to_json(&r.into_inner()))
            }
            JobCommand::Cancel { id } => {
                let req = tenant.authed(CancelJobRequest { id });
                jobs.cancel_job(req).await.map(|r| summary(&r.into_inner()))
            }
            JobCommand::Watch { id } => return Ok(watch(&tenant, &mut jobs, id).await),
        };
        Ok(match answer {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(status) => client::refused(&status),
        })
    })
}

/// `WatchJob`: prints one line per message until the stream ends; the exit status.
#[allow(clippy::print_stdout)]
async fn watch(tenant: &Tenant, jobs: &mut JobsClient<Channel>, id: String) -> ExitCode {
    let mut stream = match jobs.watch_job(tenant.authed(WatchJobRequest { id })).await {
        Ok(r) => r.into_inner(),
        Err(status) => return client::refused(&status),
    };
    loop {
        match stream.message().await {
            Ok(Some(job)) => println!("{} {}% {}", status_name(job.status), job.progress, job.data),
            Ok(None) => return ExitCode::SUCCESS,
            Err(status) => {
                println!("ended: {} ({})", status.message(), status.code());
                return ExitCode::FAILURE;
            }
        }
    }
}

/// `<id> <status> <progress>%`.
fn summary(job: &Job) -> String {
    format!("{} {} {}%", job.id, status_name(job.status), job.progress)
}

/// The lowercase name of a `JobStatus` value (as the WebSocket API spells it); `unknown(N)` for
/// a value this client does not know.
fn status_name(status: i32) -> String {
    match JobStatus::try_from(status) {
        Ok(JobStatus::Queued) => "queued".to_owned(),
        Ok(JobStatus::Running) => "running".to_owned(),
        Ok(JobStatus::Completed) => "completed".to_owned(),
        Ok(JobStatus::Failed) => "failed".to_owned(),
        Ok(JobStatus::Cancelled) => "cancelled".to_owned(),
        Ok(JobStatus::Unspecified) => "unspecified".to_owned(),
        Err(_) => format!("unknown({status})"),
    }
}

/// The job as one compact JSON object, shaped like the WebSocket API's `snapshot`: `data` is the
/// job's JSON object itself (the server only holds JSON objects), the times are RFC 3339 in UTC
/// with milliseconds and absent when unset.
fn to_json(job: &Job) -> String {
    let data = serde_json::from_str::<serde_json::Value>(&job.data)
        .unwrap_or_else(|_| serde_json::Value::Object(serde_json::Map::new()));
    let mut out = serde_json::json!({
        "id": job.id,
        "kind": job.kind,
        "status": status_name(job.status),
        "progress": job.progress,
        "data": data,
    });
    let times = [
        ("created_at", job.created_at),
        ("updated_at", job.updated_at),
        ("finished_at", job.finished_at),
    ];
    for (name, at) in times {
        if let Some(at) = at.and_then(|t| SystemTime::try_from(t).ok()) {
            out[name] = humantime::format_rfc3339_millis(at).to_string().into();
        }
    }
    out.to_string()
}
