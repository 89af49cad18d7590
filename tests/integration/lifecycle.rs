//! Signals and the ordered shutdown, on the real process.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use reqwest::{Method, StatusCode};

use crate::support::Steward;

/// The default grace; the process must be gone within it.
const GRACE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn sigterm_flips_readiness_then_exits_zero_within_the_grace_with_a_report() {
    let mut s = Steward::start(&[("STEWARD__SHUTDOWN__DEADLINES__READINESS_OFF", "2s")]).await;
    let t0 = Instant::now();
    s.signal(Signal::SIGTERM);
    let flipped = s.wait_readyz(StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(flipped, "readiness turned 503 while draining");
    // liveness stays up while draining
    let r = s.http.get(format!("{}/healthz", s.admin)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let status = s.wait_exit(GRACE).await.expect("exited within the grace");
    assert!(status.success(), "exit status {status:?}");
    assert!(t0.elapsed() < GRACE);
    let report =
        s.find_message("shutdown complete").unwrap_or_else(|| panic!("no report:\n{}", s.dump()));
    assert_eq!(report["forced"], 0, "{report}");
    assert_eq!(report["closed"], 18, "the eighteen services closed gracefully: {report}");
    for phase in [
        "readiness_off",
        "stop_accepting",
        "notify_clients",
        "drain_messaging",
        "sessions",
        "peers",
        "sockets",
        "browsers",
        "flush",
    ] {
        assert!(report["message"].as_str().unwrap().contains(phase), "{phase} in {report}");
    }
}

#[tokio::test]
async fn a_second_signal_forces_an_immediate_nonzero_exit() {
    let mut s = Steward::start(&[
        ("STEWARD__SHUTDOWN__DEADLINES__READINESS_OFF", "20s"),
        ("STEWARD__SHUTDOWN__GRACE", "60s"),
    ])
    .await;
    s.signal(Signal::SIGTERM);
    let draining = s.wait_readyz(StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(draining);
    let t0 = Instant::now();
    s.signal(Signal::SIGINT);
    let status = s.wait_exit(Duration::from_secs(5)).await.expect("exited at once");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(130), "{status:?} (signal {:?})", status.signal());
    assert!(s.find_message("shutdown complete").is_none(), "the shutdown did not finish");
}

#[tokio::test]
async fn post_shutdown_takes_the_sigterm_path() {
    let mut s = Steward::start(&[("STEWARD__SHUTDOWN__DEADLINES__READINESS_OFF", "100ms")]).await;
    let r =
        s.request(Method::POST, "/v1/shutdown").body("{\"reason\":\"test\"}").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let status = s.wait_exit(GRACE).await.expect("exited within the grace");
    assert!(status.success());
    assert!(s.find_message("shutdown complete").is_some());
}

#[tokio::test]
async fn a_taken_port_fails_the_start_with_a_nonzero_status() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = crate::support::run(&["serve"], &[("STEWARD__HTTP__LISTEN", addr.as_str())]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http-public") && stderr.contains("failed to start"), "{stderr}");
}
