//! The JSON that `fechter status --json` and `fechter info --json` print, read back.
//!
//! The CLI prints `StatusReport` and `InfoReport` of the control protocol serialized with serde.
//! The lab reads them field by field with `serde_json::Value` instead of sharing the CLI's types, so
//! the tests check the wire form an operator's scripts would see, not just a round trip.

use std::net::IpAddr;

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

/// `fechter status --json`: the pool and who holds what, as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The node the cluster follows, if known.
    pub leader: Option<String>,
    /// The active addresses in pool order.
    pub addresses: Vec<AddressStatus>,
}

/// One active pool address in a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressStatus {
    /// The interface it goes on.
    pub interface: String,
    /// The address.
    pub address: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The node id the leader assigned it to.
    pub assigned_to: Option<String>,
    /// The node ids that report holding it.
    pub held_by: Vec<String>,
}

/// `fechter info --json`: this node and its peers.
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    /// The node answering.
    pub local: NodeInfo,
    /// The other nodes it knows.
    pub peers: Vec<NodeInfo>,
    /// The node the cluster follows, if known.
    pub leader: Option<String>,
}

/// One node in an [`Info`].
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// The node id, `ip:port`.
    pub id: String,
    /// `alive`, `dead` or `left`.
    pub liveness: String,
    /// `up` or `down`, when published.
    pub admin: Option<String>,
    /// Whether it reaches its gateway, when published.
    pub gateway_reachable: Option<bool>,
    /// Whether it may hold addresses.
    pub eligible: bool,
    /// How many addresses it reports holding.
    pub held: u64,
}

impl Status {
    /// Reads the JSON printed by `fechter status --json`.
    pub fn parse(json: &str) -> Result<Status> {
        let value: Value = serde_json::from_str(json).context("status --json did not print JSON")?;
        let addresses = field(&value, "addresses")?
            .as_array()
            .ok_or_else(|| anyhow!("`addresses` is not an array"))?
            .iter()
            .map(AddressStatus::from_json)
            .collect::<Result<_>>()?;
        Ok(Status { leader: optional_string(&value, "leader")?, addresses })
    }

    /// The active addresses in pool order.
    pub fn pool(&self) -> Vec<IpAddr> {
        self.addresses.iter().map(|entry| entry.address).collect()
    }
}

impl AddressStatus {
    fn from_json(value: &Value) -> Result<AddressStatus> {
        let address = string(value, "address")?;
        let held_by = field(value, "held_by")?
            .as_array()
            .ok_or_else(|| anyhow!("`held_by` is not an array"))?
            .iter()
            .map(|holder| {
                holder.as_str().map(str::to_owned).ok_or_else(|| anyhow!("a holder is not a string"))
            })
            .collect::<Result<_>>()?;
        Ok(AddressStatus {
            interface: string(value, "interface")?,
            address: address.parse().with_context(|| format!("bad address {address:?}"))?,
            prefix_len: field(value, "prefix_len")?
                .as_u64()
                .and_then(|len| u8::try_from(len).ok())
                .ok_or_else(|| anyhow!("`prefix_len` is not a small number"))?,
            assigned_to: optional_string(value, "assigned_to")?,
            held_by,
        })
    }
}

impl Info {
    /// Reads the JSON printed by `fechter info --json`.
    pub fn parse(json: &str) -> Result<Info> {
        let value: Value = serde_json::from_str(json).context("info --json did not print JSON")?;
        let peers = field(&value, "peers")?
            .as_array()
            .ok_or_else(|| anyhow!("`peers` is not an array"))?
            .iter()
            .map(NodeInfo::from_json)
            .collect::<Result<_>>()?;
        Ok(Info {
            local: NodeInfo::from_json(field(&value, "local")?)?,
            peers,
            leader: optional_string(&value, "leader")?,
        })
    }

    /// The peer with node id `id`, if this node knows it.
    pub fn peer(&self, id: &str) -> Option<&NodeInfo> {
        self.peers.iter().find(|peer| peer.id == id)
    }
}

impl NodeInfo {
    fn from_json(value: &Value) -> Result<NodeInfo> {
        let gateway_reachable = match field(value, "gateway_reachable")? {
            Value::Null => None,
            other => Some(other.as_bool().ok_or_else(|| anyhow!("`gateway_reachable` is not a bool"))?),
        };
        Ok(NodeInfo {
            id: string(value, "id")?,
            liveness: string(value, "liveness")?,
            admin: optional_string(value, "admin")?,
            gateway_reachable,
            eligible: field(value, "eligible")?
                .as_bool()
                .ok_or_else(|| anyhow!("`eligible` is not a bool"))?,
            held: field(value, "held")?.as_u64().ok_or_else(|| anyhow!("`held` is not a number"))?,
        })
    }
}

fn field<'a>(value: &'a Value, name: &str) -> Result<&'a Value> {
    value.get(name).ok_or_else(|| anyhow!("missing field `{name}` in {value}"))
}

fn string(value: &Value, name: &str) -> Result<String> {
    field(value, name)?.as_str().map(str::to_owned).ok_or_else(|| anyhow!("`{name}` is not a string"))
}

fn optional_string(value: &Value, name: &str) -> Result<Option<String>> {
    match value.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(anyhow!("`{name}` is neither a string nor null: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_status_report() {
        let status = Status::parse(
            r#"{"leader":"198.18.0.11:4573","addresses":[
                {"interface":"eth0","address":"198.18.0.100","prefix_len":32,
                 "assigned_to":"198.18.0.12:4573","held_by":["198.18.0.12:4573"]},
                {"interface":"eth0","address":"198.18.0.101","prefix_len":32,
                 "assigned_to":null,"held_by":[]}]}"#,
        )
        .unwrap();
        assert_eq!(status.leader.as_deref(), Some("198.18.0.11:4573"));
        assert_eq!(
            status.pool(),
            vec!["198.18.0.100".parse::<IpAddr>().unwrap(), "198.18.0.101".parse().unwrap()]
        );
        assert_eq!(status.addresses[0].held_by, vec!["198.18.0.12:4573"]);
        assert_eq!(status.addresses[1].assigned_to, None);
    }

    #[test]
    fn reads_an_info_report() {
        let info = Info::parse(
            r#"{"local":{"id":"198.18.0.11:4573","liveness":"alive","admin":"down",
                "gateway_reachable":true,"eligible":false,"phi":null,"held":0},
               "peers":[{"id":"198.18.0.12:4573","liveness":"dead","admin":null,
                "gateway_reachable":null,"eligible":false,"phi":9.5,"held":2}],
               "leader":null}"#,
        )
        .unwrap();
        assert_eq!(info.local.admin.as_deref(), Some("down"));
        assert_eq!(info.peer("198.18.0.12:4573").map(|peer| peer.liveness.as_str()), Some("dead"));
        assert_eq!(info.peers[0].gateway_reachable, None);
    }

    #[test]
    fn rejects_malformed_reports() {
        assert!(Status::parse("not json").is_err());
        assert!(Status::parse(r#"{"leader":null}"#).is_err());
        assert!(Status::parse(r#"{"leader":null,"addresses":[{"interface":"eth0"}]}"#).is_err());
    }
}
