//! What the local provider should do for one cluster: pure.

use crate::domain::NodeState;

/// A local agent of the cluster that is not being removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node_id: String,
    /// Its process is running.
    pub alive: bool,
    /// Its node's state in the store (`None` until it registers).
    pub state: Option<NodeState>,
    pub has_jobs: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClusterPlan {
    /// Start this many new agents.
    pub spawn: usize,
    /// Start these dead agents again, with the same node ids.
    pub respawn: Vec<String>,
    /// Remove these nodes.
    pub remove: Vec<String>,
}

/// How willingly a node is removed: dead agents first, then unusable ones
/// and agents that have not registered yet (they serve nothing, and an
/// autoscaler that asked for nodes no longer needed takes those back before
/// nodes that just ran a job), then idle nodes, then nodes still preparing,
/// then busy ones.
fn removal_rank(m: &Member) -> u8 {
    if !m.alive {
        return 0;
    }
    match (m.state, m.has_jobs) {
        (_, true) => 4,
        (None | Some(NodeState::Unusable), false) => 1,
        (Some(NodeState::Idle | NodeState::Running), false) => 2,
        _ => 3,
    }
}

/// Brings `members` to `target`: removes the surplus (see [`removal_rank`]),
/// restarts dead members that stay, starts new ones for the shortfall.
pub fn plan_cluster(target: u32, members: &[Member]) -> ClusterPlan {
    let target = target as usize;
    let mut plan = ClusterPlan::default();
    if members.len() > target {
        let mut by_rank: Vec<&Member> = members.iter().collect();
        by_rank.sort_by(|a, b| {
            removal_rank(a)
                .cmp(&removal_rank(b))
                .then_with(|| b.node_id.cmp(&a.node_id))
        });
        plan.remove = by_rank[..members.len() - target]
            .iter()
            .map(|m| m.node_id.clone())
            .collect();
    } else {
        plan.spawn = target - members.len();
    }
    plan.respawn = members
        .iter()
        .filter(|m| !m.alive && !plan.remove.contains(&m.node_id))
        .map(|m| m.node_id.clone())
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, alive: bool, state: Option<NodeState>, has_jobs: bool) -> Member {
        Member {
            node_id: id.into(),
            alive,
            state,
            has_jobs,
        }
    }

    #[test]
    fn grow_and_respawn() {
        let p = plan_cluster(3, &[m("a", false, Some(NodeState::Idle), false)]);
        assert_eq!(p.spawn, 2);
        assert_eq!(p.respawn, ["a"]);
        assert!(p.remove.is_empty());
        assert_eq!(plan_cluster(0, &[]), ClusterPlan::default());
    }

    #[test]
    fn shrink_prefers_dead_then_unregistered_then_idle_nodes() {
        let members = [
            m("busy", true, Some(NodeState::Running), true),
            m("idle", true, Some(NodeState::Idle), false),
            m("prep", true, Some(NodeState::Preparing), false),
            m("new", true, None, false),
            m("dead", false, Some(NodeState::Idle), false),
        ];
        assert_eq!(plan_cluster(4, &members).remove, ["dead"]);
        assert_eq!(plan_cluster(3, &members).remove, ["dead", "new"]);
        assert_eq!(plan_cluster(2, &members).remove, ["dead", "new", "idle"]);
        let p = plan_cluster(1, &members);
        assert_eq!(p.remove, ["dead", "new", "idle", "prep"]);
        assert!(p.respawn.is_empty());
        assert_eq!(plan_cluster(0, &members).remove.len(), 5);
    }

    #[test]
    fn steady() {
        let members = [m("a", true, Some(NodeState::Idle), false)];
        assert_eq!(plan_cluster(1, &members), ClusterPlan::default());
    }
}
