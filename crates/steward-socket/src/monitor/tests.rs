//! Tests of the socket memory monitor's alarms and remediation.

use steward_config::Config;

use super::*;

fn report(
    connections: u64,
    inactive: u64,
    rss: u64,
    baseline: Option<u64>,
    running: u64,
) -> MonitorReport {
    MonitorReport {
        connections,
        inactive,
        rss_bytes: rss,
        rss_baseline: baseline,
        running_jobs: running,
        ..MonitorReport::default()
    }
}

#[test]
fn the_seeds_four_alarms_fire_past_their_thresholds_only() {
    let config = Config::defaults().socket.monitor;
    assert_eq!(alarms(&config, &report(1000, 400, 150, Some(100), 100)), vec![]);
    assert_eq!(alarms(&config, &report(1001, 0, 100, Some(100), 0)), vec![Alarm::HighConnections]);
    assert_eq!(alarms(&config, &report(10, 0, 151, Some(100), 0)), vec![Alarm::MemoryGrowth]);
    assert_eq!(alarms(&config, &report(10, 5, 100, None, 0)), vec![Alarm::HighInactive]);
    assert_eq!(alarms(&config, &report(0, 0, 100, None, 101)), vec![Alarm::HighRunningJobs]);
}
