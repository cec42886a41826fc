//! blobfuse2: a 0600 YAML config holding the account and key, and `blobfuse2 mount`, which
//! daemonizes once the container is mounted.

use super::command::{CommandLine, Runner};
use super::kernel::run;
use super::secret::Secret;
use super::{MountError, Private, Started};
use std::path::Path;

/// The config: Batch AI's blobfuse defaults (a local file cache, attributes and entries
/// cached 240 s, negative lookups 120 s) for one container with a shared key; plain HTTP
/// only for an `http://` endpoint (an emulator).
pub(crate) fn config(
    account: &str,
    key: &Secret,
    container: &str,
    endpoint: &str,
    cache_dir: &Path,
    allow_other: bool,
) -> String {
    format!(
        "# written by bai-agent; holds the storage key: keep 0600
allow-other: {allow_other}
logging:
  type: syslog
  level: log_warning
components:
  - libfuse
  - file_cache
  - attr_cache
  - azstorage
libfuse:
  attribute-expiration-sec: 240
  entry-expiration-sec: 240
  negative-entry-expiration-sec: 120
file_cache:
  path: {cache}
  timeout-sec: 120
attr_cache:
  timeout-sec: 240
azstorage:
  type: block
  account-name: {account}
  account-key: {key}
  endpoint: {endpoint}
  use-http: {use_http}
  mode: key
  container: {container}
",
        cache = yaml_quote(&cache_dir.to_string_lossy()),
        key = yaml_quote(key.expose()),
        use_http = endpoint.starts_with("http://"),
        endpoint = yaml_quote(endpoint),
    )
}

/// A YAML double-quoted scalar.
fn yaml_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `blobfuse2 mount <mp> --config-file=<f>` and the volume's own options.
pub(crate) fn command(mount_point: &Path, config_file: &Path, mount_options: &str) -> CommandLine {
    let mut cmd = CommandLine::new("blobfuse2")
        .arg("mount")
        .arg(mount_point)
        .arg(format!("--config-file={}", config_file.display()));
    for option in mount_options.split_whitespace() {
        cmd = cmd.arg(option);
    }
    cmd
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn mount(
    runner: &dyn Runner,
    private: &Private,
    account: &str,
    key: &Secret,
    container: &str,
    endpoint: &str,
    mount_options: &str,
    mount_point: &Path,
    allow_other: bool,
) -> Result<Started, MountError> {
    let cache = private.create_dir("blobfuse2-cache")?;
    let text = config(account, key, container, endpoint, &cache, allow_other);
    let file = private.write_secret("blobfuse2.yaml", text.as_bytes())?;
    run(
        runner,
        &command(mount_point, &file, mount_options),
        mount_point,
        &[key],
    )?;
    // blobfuse2 has daemonized: find the daemon serving this mount point, if it is visible.
    let pid = super::daemon_for(mount_point, "blobfuse2");
    Ok(Started {
        driver: "blobfuse2",
        pid,
        files: vec![file, cache],
    })
}
