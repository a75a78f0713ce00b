//! The network: a bridge in a namespace of its own, one namespace per peer
//! joined to it by a veth pair, and one veth from the host namespace into the
//! bridge for the harness's clients and the control-plane replicas. The
//! addresses (10.213.X.0/24) exist only on those links. Faults are nftables
//! rules (table `inet berth_chaos`) and qdiscs inside the peers' namespaces.
//! Dropping [`Network`] removes all of it.

use crate::Error;
use std::net::Ipv4Addr;
use std::process::Command;

const TABLE: &str = "berth_chaos";

/// The namespaces and links of one run.
pub struct Network {
    pub run_id: String,
    subnet: u8,
    peers: usize,
    host_link: String,
    created: Vec<String>,
    host_link_created: bool,
}

/// Runs a command, failing with its stderr.
pub(crate) fn sh(program: &str, args: &[&str]) -> Result<String, Error> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| Error::Io { context: format!("run {program}"), source })?;
    if !output.status.success() {
        return Err(Error::Harness(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Checks that this host can build the network.
pub fn preflight() -> Result<(), Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Unsupported("berth chaos must run as root (network namespaces)".into()));
    }
    for tool in ["ip", "nft", "tc"] {
        if sh(tool, &["-V"]).is_err() && sh(tool, &["--version"]).is_err() {
            return Err(Error::Unsupported(format!("`{tool}` is not installed")));
        }
    }
    Ok(())
}

impl Network {
    /// Names every namespace after `run_id` and picks a 10.213.X.0/24 no
    /// route of the host uses.
    pub fn create(run_id: &str, peers: usize) -> Result<Network, Error> {
        let routes = sh("ip", &["-4", "route", "show"])?;
        let start = u8::from_str_radix(&run_id[..2], 16).unwrap_or(1);
        let subnet = (0..=255u8)
            .map(|i| start.wrapping_add(i))
            .find(|x| !routes.contains(&format!("10.213.{x}.")))
            .ok_or_else(|| Error::Harness("every 10.213.X.0/24 is in use on this host".into()))?;
        // The owner file comes first, so a sweep never takes a starting run
        // for an abandoned one; it appears whole (renamed into place), so a
        // sweep never reads it empty either.
        let owner = owner_file(run_id);
        let partial = owner.with_extension("partial");
        std::fs::create_dir_all(OWNERS)
            .and_then(|()| std::fs::write(&partial, std::process::id().to_string()))
            .and_then(|()| std::fs::rename(&partial, &owner))
            .map_err(|source| Error::Io { context: format!("write {OWNERS}/{run_id}"), source })?;
        let mut network = Network {
            run_id: run_id.into(),
            subnet,
            peers,
            host_link: format!("bch{run_id}"),
            created: Vec::new(),
            host_link_created: false,
        };
        network.build()?;
        Ok(network)
    }

    pub fn bridge_namespace(&self) -> String {
        format!("berth-chaos-{}-br", self.run_id)
    }

    pub fn namespace(&self, peer: usize) -> String {
        format!("berth-chaos-{}-p{}", self.run_id, peer + 1)
    }

    pub fn peer_ip(&self, peer: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 11 + peer as u8)
    }

    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 1)
    }

    /// Every namespace and host link name of this run, for leak checks.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = (0..self.peers).map(|p| self.namespace(p)).collect();
        names.push(self.bridge_namespace());
        names.push(self.host_link.clone());
        names
    }

    fn add_namespace(&mut self, name: &str) -> Result<(), Error> {
        sh("ip", &["netns", "add", name])?;
        self.created.push(name.to_string());
        sh("ip", &["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn build(&mut self) -> Result<(), Error> {
        let bridge = self.bridge_namespace();
        self.add_namespace(&bridge)?;
        sh("ip", &["-n", &bridge, "link", "add", "name", "br0", "type", "bridge"])?;
        sh("ip", &["-n", &bridge, "link", "set", "br0", "up"])?;
        for peer in 0..self.peers {
            let ns = self.namespace(peer);
            self.add_namespace(&ns)?;
            let port = format!("p{}", peer + 1);
            sh(
                "ip",
                &[
                    "-n", &bridge, "link", "add", "name", &port, "type", "veth", "peer", "name",
                    "eth0", "netns", &ns,
                ],
            )?;
            sh("ip", &["-n", &bridge, "link", "set", &port, "master", "br0", "up"])?;
            let address = format!("{}/24", self.peer_ip(peer));
            sh("ip", &["-n", &ns, "addr", "add", &address, "dev", "eth0"])?;
            sh("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            let rules = format!(
                "table inet {TABLE} {{\n chain input {{ type filter hook input priority 0; policy accept; }}\n \
                 chain output {{ type filter hook output priority 0; policy accept; }}\n}}\n"
            );
            nft(&ns, &rules)?;
        }
        let host = self.host_link.clone();
        sh(
            "ip",
            &[
                "link", "add", "name", &host, "type", "veth", "peer", "name", "host", "netns",
                &bridge,
            ],
        )?;
        self.host_link_created = true;
        sh("ip", &["-n", &bridge, "link", "set", "host", "master", "br0", "up"])?;
        sh("ip", &["addr", "add", &format!("{}/24", self.host_ip()), "dev", &host])?;
        sh("ip", &["link", "set", &host, "up"])?;
        Ok(())
    }

    /// Drops every packet between `from` and each of `to`, both ways unless
    /// `one_way` (then only what `from` sends to them).
    pub fn block(&self, from: usize, to: &[usize], one_way: bool) -> Result<(), Error> {
        let mut script = String::new();
        for &other in to {
            let ip = self.peer_ip(other);
            script.push_str(&format!("add rule inet {TABLE} output ip daddr {ip} drop\n"));
            if !one_way {
                script.push_str(&format!("add rule inet {TABLE} input ip saddr {ip} drop\n"));
            }
        }
        nft(&self.namespace(from), &script)
    }

    /// Delays `peer`'s packets and drops some: tc netem where the kernel has
    /// it, else nftables random drops only. Says which it used.
    pub fn degrade(&self, peer: usize, delay_ms: u64, loss_percent: u64) -> Result<String, Error> {
        let ns = self.namespace(peer);
        let netem = sh(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "tc",
                "qdisc",
                "add",
                "dev",
                "eth0",
                "root",
                "netem",
                "delay",
                &format!("{delay_ms}ms"),
                "loss",
                &format!("{loss_percent}%"),
            ],
        );
        match netem {
            Ok(_) => Ok(format!("tc netem delay {delay_ms}ms loss {loss_percent}%")),
            Err(_) => {
                nft(
                    &ns,
                    &format!(
                        "add rule inet {TABLE} output numgen random mod 100 < {loss_percent} drop\n\
                         add rule inet {TABLE} input numgen random mod 100 < {loss_percent} drop\n"
                    ),
                )?;
                Ok(format!("nftables random loss {loss_percent}% (no netem in this kernel)"))
            }
        }
    }

    /// Removes every rule and qdisc from every peer's namespace.
    pub fn heal(&self) -> Result<(), Error> {
        for peer in 0..self.peers {
            let ns = self.namespace(peer);
            nft(
                &ns,
                &format!("flush chain inet {TABLE} input\nflush chain inet {TABLE} output\n"),
            )?;
            let _ = sh("ip", &["netns", "exec", &ns, "tc", "qdisc", "del", "dev", "eth0", "root"]);
        }
        Ok(())
    }

    /// What is left of this run on the host: namespaces and links by name.
    pub fn leftovers(run_id: &str) -> Vec<String> {
        let mut left = Vec::new();
        let tag = format!("berth-chaos-{run_id}-");
        if let Ok(list) = sh("ip", &["netns", "list"]) {
            left.extend(
                list.lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .filter(|n| n.starts_with(&tag))
                    .map(|n| format!("namespace {n}")),
            );
        }
        let link = format!("bch{run_id}");
        if sh("ip", &["link", "show", "dev", &link]).is_ok() {
            left.push(format!("link {link}"));
        }
        left
    }
}

fn nft(namespace: &str, script: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", namespace, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| Error::Io { context: "run nft".into(), source })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|source| Error::Io { context: "write nft rules".into(), source })?;
    }
    let output = child
        .wait_with_output()
        .map_err(|source| Error::Io { context: "run nft".into(), source })?;
    if !output.status.success() {
        return Err(Error::Harness(format!(
            "nft in {namespace}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

impl Drop for Network {
    /// Deleting a namespace deletes its links, their veth peers and its
    /// rules; the host link goes with its peer in the bridge namespace, and
    /// is deleted by name in case that failed half-way.
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = sh("ip", &["netns", "del", ns]) {
                tracing::warn!(namespace = %ns, error = %e, "could not remove a chaos namespace");
            }
        }
        if self.host_link_created && sh("ip", &["link", "show", "dev", &self.host_link]).is_ok() {
            let _ = sh("ip", &["link", "del", &self.host_link]);
        }
        let _ = std::fs::remove_file(owner_file(&self.run_id));
    }
}

/// Where each run records the pid that owns its namespaces.
const OWNERS: &str = "/run/berth-chaos";

fn owner_file(run_id: &str) -> std::path::PathBuf {
    std::path::Path::new(OWNERS).join(run_id)
}

/// Removes the namespaces, host links and data directories of runs whose
/// harness died without cleaning up (SIGKILL, power loss): those whose
/// owner file names a pid that no longer runs. Returns what it removed.
pub fn sweep_abandoned() -> Vec<String> {
    let Ok(owners) = std::fs::read_dir(OWNERS) else { return Vec::new() };
    let namespaces = sh("ip", &["netns", "list"]).unwrap_or_default();
    let mut removed = Vec::new();
    for entry in owners.flatten() {
        let run_id = entry.file_name().to_string_lossy().into_owned();
        let owner = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok());
        if owner.is_some_and(crate::procs::alive) {
            continue;
        }
        let tag = format!("berth-chaos-{run_id}-");
        for name in namespaces.lines().filter_map(|l| l.split_whitespace().next()) {
            if name.starts_with(&tag) && sh("ip", &["netns", "del", name]).is_ok() {
                removed.push(format!("namespace {name}"));
            }
        }
        let link = format!("bch{run_id}");
        if sh("ip", &["link", "show", "dev", &link]).is_ok()
            && sh("ip", &["link", "del", &link]).is_ok()
        {
            removed.push(format!("link {link}"));
        }
        let data = std::env::temp_dir().join(format!("berth-chaos-{run_id}"));
        if data.exists() && std::fs::remove_dir_all(&data).is_ok() {
            removed.push(format!("data directory {}", data.display()));
        }
        let _ = std::fs::remove_file(entry.path());
    }
    removed
}
