//! The JetStream test harness itself (`tests/nats_common`): a 3-node
//! cluster forms, an R3 stream takes acknowledged publishes, and a killed
//! leader is replaced while publishes go on, nothing lost or doubled.

mod nats_common;

use bytes::Bytes;
use nats_common::Cluster;

#[test]
fn cluster_stores_publishes_across_a_leader_kill() {
    let mut c = Cluster::start();
    c.create_stream("H", &["h.>"]);
    let first: Vec<Bytes> = (0..500).map(|i| Bytes::from(format!("a{i}"))).collect();
    let seqs = c.publish("h.x", "a-", &first);
    assert_eq!(seqs, (1..=500).collect::<Vec<u64>>());

    let leader = c.stream_leader("H");
    c.kill(leader);
    let second: Vec<Bytes> = (0..500).map(|i| Bytes::from(format!("b{i}"))).collect();
    let seqs = c.publish("h.x", "b-", &second);
    assert_eq!(seqs, (501..=1000).collect::<Vec<u64>>());
    let new_leader = c.stream_leader("H");
    assert_ne!(new_leader, leader);
    c.restart(leader);

    let info = c.stream_info("H");
    assert_eq!(info.state.messages, 1000);
    assert_eq!(info.state.first_sequence, 1);
    assert_eq!(info.state.last_sequence, 1000);
    c.purge("H");
    let info = c.stream_info("H");
    assert_eq!((info.state.messages, info.state.first_sequence), (0, 1001));
}
