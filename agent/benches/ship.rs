//! Output shipping throughput: the real `bai-agent` runs a job that writes
//! `BAI_BENCH_BYTES` (default 2 GB) of zeros to stdout, and an in-process fake
//! coordinator counts and acknowledges every chunk. Prints one JSON line.
//! Run with `cargo bench -p bai-agent --bench ship`.

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use bai_proto::v1 as pb;
use common::{Agent, FakeCoordinator, assign};
use pb::agent_message::Msg as AgentMsg;
use pb::coordinator_message::Msg as CoordMsg;
use std::time::Instant;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bytes: u64 = std::env::var("BAI_BENCH_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000_000);
    let mut coord = FakeCoordinator::start().await;
    let mut agent = Agent::new();
    agent.start(&coord.url(), &[]);
    let mut s = coord.session().await;
    s.register(vec![]).await;
    s.send(CoordMsg::AssignJob(assign(
        "bench",
        &format!("head -c {bytes} /dev/zero"),
    )));
    let (mut received, mut chunks, mut t0) = (0u64, 0u64, None);
    let mut lengths = [0u64; 4];
    loop {
        match s.recv().await.expect("session ended") {
            AgentMsg::JobStarted(_) => t0 = Some(Instant::now()),
            AgentMsg::Output(c) => {
                let t = &mut lengths[c.stream as usize];
                assert_eq!(c.offset, *t, "out of order");
                *t += c.data.len() as u64;
                if c.stream == common::STDOUT {
                    received += c.data.len() as u64;
                }
                chunks += 1;
                s.send(CoordMsg::OutputAck(pb::OutputAck {
                    job_id: c.job_id,
                    stream: c.stream,
                    offset: *t,
                }));
            }
            AgentMsg::JobExited(e) => {
                assert_eq!(e.exit_code, 0);
                break;
            }
            _ => {}
        }
    }
    let secs = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
    assert_eq!(received, bytes);
    let cpu = agent.child.as_ref().map_or(0.0, |c| cpu_seconds(c.id()));
    println!(
        "{{\"bench\":\"agent_output_shipping\",\"bytes\":{bytes},\"chunks\":{chunks},\"seconds\":{secs:.3},\"mb_per_s\":{:.1},\"agent_cpu_seconds\":{cpu:.3},\"agent_cpu_seconds_per_gb\":{:.3}}}",
        bytes as f64 / secs / 1e6,
        cpu / (bytes as f64 / 1e9)
    );
}

/// User + system CPU time of a process (`/proc/<pid>/stat`, USER_HZ = 100).
fn cpu_seconds(pid: u32) -> f64 {
    i32::try_from(pid)
        .ok()
        .and_then(bai_common::procfs::stat)
        .map_or(0.0, |s| (s.utime + s.stime) as f64 / 100.0)
}
