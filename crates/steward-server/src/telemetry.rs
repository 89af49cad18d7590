//! Logging setup and the panic policy.

use steward_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber: `RUST_LOG` if set, else `[log] level`; text or JSON
/// lines on stderr.
pub(crate) fn init(config: &LogConfig) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v)?,
        _ => EnvFilter::try_new(&config.level)?,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    }
    .map_err(|e| anyhow::anyhow!(e))
}

/// Exit status when a panic escapes supervision (EX_SOFTWARE).
const EXIT_PANIC: i32 = 70;

/// Every panic is logged with its location, inside the span it happened in. A panic with an
/// owner — in an actor or in a task started through a resource's tracker, both of which run
/// inside the kernel's panic boundary (`steward_core::lifeline`) — is caught there, and the
/// owner's supervisor applies its restart policy; any other panic escaped supervision and ends
/// the process with status 70.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        let message = steward_core::lifeline::panic_message(info.payload());
        if steward_core::lifeline::panic_has_owner() {
            tracing::error!(panic = %message, %location, "panic in a resource; its supervisor applies the restart policy");
        } else {
            tracing::error!(panic = %message, %location, thread = std::thread::current().name().unwrap_or("-"), "panic outside supervision; exiting");
            std::process::exit(EXIT_PANIC);
        }
    }));
}
