//! The node's cache of container images: which images bai's jobs used and
//! when (`<state>/images.json`), and a cap on their size, least recently
//! used first out, so pulled images cannot fill the node's disk.
//!
//! Only images a job of bai used are counted and removed: an operator's own
//! images on the node are left alone. Sizes are the runtime's per-image
//! figures, so layers two images share count twice (the cap errs towards
//! removing early). An image a container still uses is not removed (the
//! runtime refuses), nor is the one the job being prepared needs. Blocking
//! file and process work, serialised by one lock.

use super::container::Runtime;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The record: image reference → last use (ns since the epoch).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Record {
    images: BTreeMap<String, u64>,
}

/// One node's image cache.
pub struct ImageCache {
    file: PathBuf,
    /// The most the cached images may take; 0 for no cap.
    max_bytes: u64,
    lock: Mutex<()>,
}

/// What a trim did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub removed: Vec<String>,
    /// The cached images' size after the trim.
    pub bytes: u64,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The size the runtime gives `reference`, `None` if it has no such image.
fn size(rt: &Runtime, reference: &str) -> Option<u64> {
    let out = Command::new(&rt.program)
        .args(&rt.global_args)
        .args(["image", "inspect", "--format", "{{.Size}}", reference])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn remove(rt: &Runtime, reference: &str) -> Result<(), String> {
    let out = Command::new(&rt.program)
        .args(&rt.global_args)
        .args(["rmi", reference])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

impl ImageCache {
    pub fn new(state_dir: &Path, max_bytes: u64) -> Self {
        Self {
            file: state_dir.join("images.json"),
            max_bytes,
            lock: Mutex::new(()),
        }
    }

    fn read(&self) -> Record {
        std::fs::read(&self.file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn write(&self, rec: &Record) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
        bai_common::fs::write_atomic(&self.file, &bytes)
    }

    /// Records that a job uses `reference` now, then trims the cache to its
    /// cap, `reference` kept. `log` hears of each image removed.
    pub fn used(&self, rt: &Runtime, reference: &str, log: &dyn Fn(&str)) -> Trimmed {
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut rec = self.read();
        rec.images.insert(reference.to_string(), now_ns());
        let trimmed = self.trim(rt, &mut rec, reference, log);
        if let Err(e) = self.write(&rec) {
            log(&format!(
                "cannot write the image cache's record {}: {e}",
                self.file.display()
            ));
        }
        trimmed
    }

    fn trim(&self, rt: &Runtime, rec: &mut Record, keep: &str, log: &dyn Fn(&str)) -> Trimmed {
        let mut sized: Vec<(u64, String, u64)> = Vec::new();
        rec.images.retain(|image, used| match size(rt, image) {
            Some(bytes) => {
                sized.push((*used, image.clone(), bytes));
                true
            }
            // Removed by someone else: nothing to count.
            None => false,
        });
        let mut bytes: u64 = sized.iter().map(|s| s.2).sum();
        let mut removed = Vec::new();
        if self.max_bytes == 0 {
            return Trimmed { removed, bytes };
        }
        sized.sort();
        for (_, image, size) in sized {
            if bytes <= self.max_bytes {
                break;
            }
            if image == keep {
                continue;
            }
            match remove(rt, &image) {
                Ok(()) => {
                    log(&format!(
                        "removed cached image {image} ({size} bytes, least recently used) to keep the image cache under {} bytes",
                        self.max_bytes
                    ));
                    rec.images.remove(&image);
                    bytes -= size;
                    removed.push(image);
                }
                // In use by a container, most likely: it stays.
                Err(e) => log(&format!("cached image {image} stays: {e}")),
            }
        }
        Trimmed { removed, bytes }
    }
}
