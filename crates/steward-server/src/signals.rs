//! Steward owns the signals (actix-web's and tonic's handlers are disabled): the first SIGTERM
//! or SIGINT pulls the shutdown trigger; a second one of either exits at once, non-zero.

use steward_core::shutdown::ShutdownTrigger;
use tokio::signal::unix::{SignalKind, signal};

/// Exit status on a forced exit by a second signal: 128 + the signal number, as shells report.
const fn forced_status(sig: i32) -> i32 {
    128 + sig
}

/// Watches SIGTERM and SIGINT until the process ends.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub(crate) async fn watch(trigger: ShutdownTrigger) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        let (name, number) = tokio::select! {
            _ = term.recv() => ("SIGTERM", 15),
            _ = int.recv() => ("SIGINT", 2),
        };
        if trigger.trigger(name) {
            tracing::info!(
                signal = name,
                "graceful shutdown requested; send it again to exit at once"
            );
        } else {
            tracing::warn!(
                signal = name,
                "second signal, exiting now without finishing the shutdown"
            );
            std::process::exit(forced_status(number));
        }
    }
}
