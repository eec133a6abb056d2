//! Northbound: what the gateway publishes to plant systems over MQTT. [`sparkplug`] is the
//! Sparkplug B side, sans-IO: the protobuf payload, the topic namespace and the edge node's
//! session state (bdSeq, seq, births, deaths, data and rebirth requests); the MQTT client that
//! carries its messages lives beside it.

pub mod sparkplug;
