//! What bai's two daemons (coordinator, agent) and its test and bench programs share. Each module
//! is small, synchronous unless it says otherwise, and knows nothing of gRPC or the store.
//!
//! - [`fs`]: atomic file replacement. [`fs::write_atomic`] writes a temporary file beside the
//!   target, fsyncs it, renames it over the target and fsyncs the directory, so a reader sees
//!   the old bytes or the new ones and, once it returns, a power loss keeps the new ones.
//!   [`fs::write_atomic_with`] takes [`fs::WriteOptions`]: a file mode, and `durable: false`
//!   for records a power loss makes moot anyway (still atomic, no fsyncs).
//! - [`procfs`]: reading `/proc`: [`procfs::pids`], [`procfs::args`] (argv),
//!   [`procfs::environ`], [`procfs::exe`], [`procfs::cwd`], [`procfs::stat`] (state, parent,
//!   process group, session, CPU ticks), [`procfs::pgid`], [`procfs::alive`] (exists and is not
//!   a zombie) and [`procfs::in_group`]. Every reader returns `None` (or `false`) for a process
//!   that is gone or unreadable: processes come and go between listing and reading.
//! - [`process`]: a process's exit as an event: [`process::ProcessHandle`] (a pidfd) resolves
//!   `exited()` when any process (not only a child of ours) has exited, with no polling, and
//!   `signal()`s it without the risk of hitting a process that reused its pid;
//!   [`process::exited`] is the one-shot form.
//! - [`telemetry`]: [`telemetry::init`], the one tracing setup both daemons call: text or JSON
//!   lines on stderr, filtered by `RUST_LOG` (default `info`), the same JSON shape in both;
//!   under journald, text lines carry no timestamp or colour (the journal stamps them).
//! - [`hash`]: FNV-1a 64 ([`hash::fnv1a64`], [`hash::fnv1a64_update`]), stable across builds,
//!   for names and ids derived from others (mount records, fake GPU UUIDs, a job's port).
//! - [`names`]: the Batch AI resource-name rule ([`names::check_name`], [`names::is_name`]):
//!   1–64 ASCII letters, digits, `-` and `_`.
//! - [`size`]: sizes as docker and podman write them ([`size::parse_size`]: `2g`, `512m`).
//! - `standins` (feature `standins`, for tests only): real servers started on loopback for a
//!   test (Samba, Azurite, sshd), each in its own temporary directory and stopped on drop, and
//!   `standins::require`, the "skip outside CI, fail in CI" gate.
//! - `trust` (feature `trust`): token shapes and hashes, node keys and CSRs, certificate
//!   fingerprints, 0600 key files, and tonic client TLS settings with a bearer token.

pub mod fs;
pub mod hash;
pub mod names;
pub mod process;
pub mod procfs;
pub mod size;
#[cfg(feature = "standins")]
pub mod standins;
pub mod telemetry;
#[cfg(feature = "trust")]
pub mod trust;
