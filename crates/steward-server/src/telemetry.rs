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

/// Every panic is logged with its location and the resource span it happened in. A panic inside
/// a resource (its actor runs in a `resource` span) is left to the lifeline and the supervisor's
/// policy; any other panic escaped supervision and ends the process with status 70.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        let span = tracing::Span::current();
        let supervised = span.metadata().is_some_and(|m| m.name() == "resource");
        if supervised {
            tracing::error!(panic = %message, %location, "panic in a resource; its supervisor applies the restart policy");
        } else {
            tracing::error!(panic = %message, %location, thread = std::thread::current().name().unwrap_or("-"), "panic outside supervision; exiting");
            std::process::exit(EXIT_PANIC);
        }
    }));
}
