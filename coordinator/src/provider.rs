//! Node providers: what makes and takes away a cluster's machines. The
//! coordinator owns everything else — the store, the queue, the autoscaler's
//! targets, preemption's requeue (`Core::preempt_node`) — and a provider only
//! follows each cluster's target, woken by `Core::kick_provider`. Nodes join
//! by registering, whatever made them. Chosen by the coordinator's config:
//! `local` with `--local-agents`, else `static`. The Azure VM Scale Set
//! provider is designed in docs/providers.md.

use async_trait::async_trait;

#[async_trait]
pub trait NodeProvider: Send {
    /// "local", "static".
    fn kind(&self) -> &'static str;
    /// Whether it can create nodes (static cannot: a target is a ceiling,
    /// and a cluster short of it says how many nodes are missing).
    fn can_create(&self) -> bool;
    /// Follows the clusters' targets until the coordinator shuts down.
    async fn run(self: Box<Self>);
}

#[async_trait]
impl NodeProvider for crate::local_provider::LocalProvider {
    fn kind(&self) -> &'static str {
        "local"
    }
    fn can_create(&self) -> bool {
        true
    }
    async fn run(self: Box<Self>) {
        (*self).run().await
    }
}

#[async_trait]
impl NodeProvider for crate::static_provider::StaticProvider {
    fn kind(&self) -> &'static str {
        "static"
    }
    fn can_create(&self) -> bool {
        false
    }
    async fn run(self: Box<Self>) {
        (*self).run().await
    }
}
