//! Logging: the shared setup of `bai_common::telemetry` (text or JSON on stderr, filtered by
//! `RUST_LOG`, default `info`; one JSON shape for both daemons; journald-aware). Spans carry
//! `job`, `node` and `cluster`; secrets are never formatted (see `domain::Secret`).

use crate::config::LogFormat;
use bai_common::telemetry;

/// Installs the global subscriber (call once, from `main`); false if one was already set.
pub fn init(format: LogFormat) -> bool {
    let format = match format {
        LogFormat::Text => telemetry::LogFormat::Text,
        LogFormat::Json => telemetry::LogFormat::Json,
    };
    telemetry::init(format).is_ok()
}
