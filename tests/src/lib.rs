//! End-to-end test support: start real coordinators/agents and talk to them.
