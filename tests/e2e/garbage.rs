//! Datagrams that are not gossip, or are broken gossip, change nothing.

use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use fechter_lab::{GOSSIP_PORT, Lab, Status};

use crate::common::{QUIET, scenario, spread_cluster};

/// The largest UDP payload IPv4 can carry.
pub(crate) const MAX_UDP_PAYLOAD: usize = 65_507;

#[test]
fn garbage_datagrams_change_nothing() {
    scenario("garbage_datagrams_change_nothing", "garbage", 3, |lab| {
        let (_, holdings) = spread_cluster(lab, 0, 6)?;
        let real = capture_gossip_datagram(lab, 1)?;
        let statuses = |lab: &Lab| -> Result<Vec<Status>> { (0..3).map(|i| lab.status(i)).collect() };
        let before = statuses(lab)?;

        let mut noise = Noise::seeded();
        let mut payloads: Vec<Vec<u8>> = vec![Vec::new(), vec![0], vec![0xff; 3], vec![0; MAX_UDP_PAYLOAD]];
        for _ in 0..20 {
            let len = 1 + noise.below(1400);
            payloads.push(noise.bytes(len));
        }
        payloads.push(noise.bytes(MAX_UDP_PAYLOAD));
        // Real gossip, cut short at every interesting length, corrupted, and replayed whole.
        payloads.extend([1, 4, 8, real.len() / 2, real.len() - 1].map(|len| real[..len].to_vec()));
        for position in [0, real.len() / 2, real.len() - 1] {
            let mut flipped = real.clone();
            flipped[position] ^= 0x5a;
            payloads.push(flipped);
        }
        payloads.push(real.clone());
        for i in 0..3 {
            for payload in &payloads {
                lab.send_from_client(lab.node_ip(i).into(), GOSSIP_PORT, payload)?;
            }
        }

        thread::sleep(QUIET);
        for i in 0..3 {
            ensure!(lab.daemon_running(i), "node {i}'s daemon died of garbage");
            let info = lab.info(i)?;
            ensure!(info.peers.iter().all(|peer| peer.liveness == "alive"), "node {i} lost a peer: {info:?}");
        }
        ensure!(lab.holdings()? == holdings, "the holdings changed: {:?} -> {:?}", holdings, lab.holdings()?);
        ensure!(statuses(lab)? == before, "the status changed: {before:?} -> {:?}", statuses(lab)?);
        Ok(())
    });
}

/// One gossip datagram that node `i` receives, captured with tcpdump inside its namespace.
pub(crate) fn capture_gossip_datagram(lab: &Lab, i: usize) -> Result<Vec<u8>> {
    let file = lab.dir().join(format!("capture-n{i}.pcap"));
    let file_arg = file.display().to_string();
    let filter = format!("udp dst port {GOSSIP_PORT} and dst host {}", lab.node_ip(i));
    let output = lab.exec(
        lab.node_ns(i),
        "timeout",
        &["10", "tcpdump", "-i", "eth0", "-c", "1", "-U", "-w", &file_arg, &filter],
    )?;
    ensure!(output.success(), "tcpdump failed: {}", output.stderr.trim());
    let pcap = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    udp_payload_of_first_packet(&pcap)
}

/// The UDP payload of the first packet of a pcap file of Ethernet frames carrying IPv4.
fn udp_payload_of_first_packet(pcap: &[u8]) -> Result<Vec<u8>> {
    let little_endian = match pcap.get(..4) {
        Some([0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1]) => true,
        Some([0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d]) => false,
        _ => bail!("not a pcap file"),
    };
    let read_u32 = |at: usize| -> Result<usize> {
        let bytes: [u8; 4] = pcap.get(at..at + 4).context("truncated pcap")?.try_into()?;
        let value = if little_endian { u32::from_le_bytes(bytes) } else { u32::from_be_bytes(bytes) };
        Ok(usize::try_from(value)?)
    };
    ensure!(read_u32(20)? == 1, "the capture is not of Ethernet frames");
    let captured = read_u32(24 + 8)?;
    let frame = pcap.get(40..40 + captured).context("truncated packet")?;
    ensure!(frame.get(12..14) == Some(&[0x08, 0x00]), "the frame is not IPv4");
    let ip = &frame[14..];
    let header = usize::from(ip.first().context("empty IPv4 packet")? & 0x0f) * 4;
    ensure!(ip.get(9) == Some(&17), "the packet is not UDP");
    let udp = ip.get(header..).context("truncated IPv4 header")?;
    let length = usize::from(u16::from_be_bytes([
        *udp.get(4).context("short UDP")?,
        *udp.get(5).context("short UDP")?,
    ]));
    let payload = udp.get(8..length).context("truncated UDP payload")?;
    ensure!(payload.len() >= 2, "the captured datagram is too short to truncate");
    Ok(payload.to_vec())
}

/// A small xorshift generator: the bytes only need to be arbitrary, not secure, and the seed is
/// printed on failure through the data it produced.
pub(crate) struct Noise(u64);

impl Noise {
    pub(crate) fn seeded() -> Noise {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.subsec_nanos());
        Noise(u64::from(nanos) ^ (u64::from(std::process::id()) << 32) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound).unwrap_or(u64::MAX)).unwrap_or(0)
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next().to_le_bytes()[0]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_udp_payload_from_a_pcap() {
        let mut pcap =
            vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0];
        let payload = b"gossip";
        let mut frame = vec![0u8; 12];
        frame.extend([0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 250, 198, 18, 0, 11];
        ip.extend([0x11, 0xdd, 0x11, 0xdd, 0, 8 + 6, 0, 0]);
        ip.extend(payload);
        frame.extend(ip);
        let length = u32::try_from(frame.len()).unwrap().to_le_bytes();
        pcap.extend([0; 8]);
        pcap.extend(length);
        pcap.extend(length);
        pcap.extend(frame);
        assert_eq!(udp_payload_of_first_packet(&pcap).unwrap(), payload);
        assert!(udp_payload_of_first_packet(b"nonsense").is_err());
    }
}
