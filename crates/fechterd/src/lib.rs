//! The fechter daemon: gossip membership, leader allocation and address reconciliation
