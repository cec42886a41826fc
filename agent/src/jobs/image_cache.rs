//! The node's cache of container images: which images bai's jobs used and
//! when (`<state>/images.json`), and a cap on their size, least recently
//! used first out, so pulled images cannot fill the node's disk.
//!
//! Only images a job of bai used are counted and removed: an operator's own
//! images on the node are left alone. Sizes are the runtime's per-image
//! figures, asked once per image (a job whose image is known costs no
//! runtime call), so layers two images share count twice (the cap errs
//! towards removing early). An image a container still uses is not removed
//! (the runtime refuses), nor is the one the job being prepared needs. The
//! record is written without fsync: a power loss forgets only recency.
//! Blocking file and process work, serialised by one lock.

use super::container::Runtime;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// One cached image: its last use (ns since the epoch) and size.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Entry {
    used_ns: u64,
    bytes: u64,
}

/// The record: image reference → its entry.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Record {
    images: BTreeMap<String, Entry>,
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
        bai_common::fs::write_atomic_with(
            &self.file,
            &bytes,
            bai_common::fs::WriteOptions {
                mode: 0o644,
                durable: false,
            },
        )
    }

    /// Records that a job uses `reference` now, then trims the cache to its
    /// cap, `reference` kept. `log` hears of each image removed.
    pub fn used(&self, rt: &Runtime, reference: &str, log: &dyn Fn(&str)) -> Trimmed {
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut rec = self.read();
        let known = rec.images.get(reference).map(|e| e.bytes);
        match known.or_else(|| size(rt, reference)) {
            Some(bytes) => {
                rec.images.insert(
                    reference.to_string(),
                    Entry {
                        used_ns: now_ns(),
                        bytes,
                    },
                );
            }
            None => log(&format!("cannot size image {reference}: not counted")),
        }
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
        let mut bytes: u64 = rec.images.values().map(|e| e.bytes).sum();
        let mut removed = Vec::new();
        if self.max_bytes == 0 || bytes <= self.max_bytes {
            return Trimmed { removed, bytes };
        }
        let mut by_age: Vec<(u64, String, u64)> = rec
            .images
            .iter()
            .map(|(image, e)| (e.used_ns, image.clone(), e.bytes))
            .collect();
        by_age.sort();
        for (_, image, size) in by_age {
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
                // Removed behind the agent's back: nothing to count.
                Err(_) if missing(rt, &image) => {
                    rec.images.remove(&image);
                    bytes -= size;
                }
                // In use by a container, most likely: it stays.
                Err(e) => log(&format!("cached image {image} stays: {e}")),
            }
        }
        Trimmed { removed, bytes }
    }
}

/// Whether the runtime has no image `reference` (so a failed removal means
/// it is gone already).
fn missing(rt: &Runtime, reference: &str) -> bool {
    size(rt, reference).is_none()
}
