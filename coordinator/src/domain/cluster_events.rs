//! A cluster's event record: every change of its size and why — the
//! autoscaler's decisions with their reasons, resizes, nodes joining, leaving,
//! removed, lost or preempted. The store writes each event in the transaction
//! of the change it records, so the record never tells of a change that did
//! not happen, and never misses one that did.

use super::Millis;

/// What happened to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterEventKind {
    /// Created, with its first target.
    Created,
    /// A user's resize or switch of scale mode.
    Resize,
    /// The autoscaler changed the target.
    Autoscale,
    /// A new node registered.
    NodeJoined,
    /// A node's removal began (its jobs follow the deallocation option).
    NodeLeaving,
    /// A node was deleted from the cluster.
    NodeRemoved,
    /// A node's agent stayed away past the grace period.
    NodeLost,
    /// A low-priority node was preempted.
    NodePreempted,
}

impl ClusterEventKind {
    pub const ALL: [Self; 8] = [
        Self::Created,
        Self::Resize,
        Self::Autoscale,
        Self::NodeJoined,
        Self::NodeLeaving,
        Self::NodeRemoved,
        Self::NodeLost,
        Self::NodePreempted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Resize => "resize",
            Self::Autoscale => "autoscale",
            Self::NodeJoined => "node-joined",
            Self::NodeLeaving => "node-leaving",
            Self::NodeRemoved => "node-removed",
            Self::NodeLost => "node-lost",
            Self::NodePreempted => "node-preempted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One entry of a cluster's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEvent {
    /// Its place in the record (increasing; assigned by the store).
    pub seq: i64,
    pub workspace: String,
    pub cluster: String,
    pub time: Millis,
    pub kind: ClusterEventKind,
    /// The node it is about, if any.
    pub node_id: Option<String>,
    /// The target node count before and after (a size change).
    pub target: Option<(u32, u32)>,
    /// What happened and why, in words.
    pub message: String,
}

impl ClusterEvent {
    /// An event of cluster `ws/cluster` at `now` (its seq is the store's).
    pub fn new(
        ws: &str,
        cluster: &str,
        now: Millis,
        kind: ClusterEventKind,
        message: String,
    ) -> Self {
        Self {
            seq: 0,
            workspace: ws.to_owned(),
            cluster: cluster.to_owned(),
            time: now,
            kind,
            node_id: None,
            target: None,
            message,
        }
    }

    /// An event about `node`, of its cluster.
    pub fn of_node(
        node: &super::Node,
        now: Millis,
        kind: ClusterEventKind,
        message: String,
    ) -> Self {
        Self::new(&node.workspace, &node.cluster, now, kind, message).node(&node.node_id)
    }

    pub fn node(mut self, node_id: &str) -> Self {
        self.node_id = Some(node_id.to_owned());
        self
    }

    pub fn target(mut self, from: u32, to: u32) -> Self {
        self.target = Some((from, to));
        self
    }
}

/// "1 job" / "2 jobs".
pub fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_by_name() {
        for k in ClusterEventKind::ALL {
            assert_eq!(ClusterEventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ClusterEventKind::parse("nope"), None);
        assert_eq!(count(1, "job"), "1 job");
        assert_eq!(count(3, "node"), "3 nodes");
    }
}
