//! The local cluster's PKI: a CA made on the first start under DIR/pki, and
//! a certificate for every party, issued once and kept.

use crate::config::{Auth, Credentials};
use crate::pki::{ensure, node_subject};
use anyhow::{Context, Result};
use berth_tls::{ClusterCa, Subject};
use std::path::{Path, PathBuf};

/// A certificate and its key, as files.
pub(super) struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pair {
    fn issued(ca: &ClusterCa, subject: &Subject, out: &Path) -> Result<Pair> {
        let (cert, key) = ensure(ca, subject, out)?;
        Ok(Pair { cert, key })
    }

    /// `--client-certificate C --client-key K`, as the components take it.
    pub fn client_flags(&self, ca: &Path) -> Vec<String> {
        [
            "--certificate-authority",
            &ca.to_string_lossy(),
            "--client-certificate",
            &self.cert.to_string_lossy(),
            "--client-key",
            &self.key.to_string_lossy(),
        ]
        .map(String::from)
        .to_vec()
    }
}

/// Every certificate of the local cluster.
pub(super) struct ClusterPki {
    pub ca: PathBuf,
    pub peers: Vec<Pair>,
    pub scheduler: Pair,
    pub controller_manager: Pair,
    pub nodes: Vec<Pair>,
    pub admin: Pair,
}

/// Makes (or finds) the CA in DIR/pki and the certificates of `peers`
/// peers and `nodes` nodes, all on loopback.
pub(super) fn prepare(dir: &Path, peers: usize, nodes: usize) -> Result<ClusterPki> {
    let pki = dir.join("pki");
    let ca = ClusterCa::load_or_create(&pki, "berth-up")
        .with_context(|| format!("the cluster CA in {}", pki.display()))?;
    let loopback = || vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let user = |name: &str, groups: &[&str]| Subject {
        common_name: name.into(),
        organizations: groups.iter().map(|g| g.to_string()).collect(),
        ..Default::default()
    };
    Ok(ClusterPki {
        ca: pki.join(berth_tls::CA_CERT_FILE),
        peers: (1..=peers)
            .map(|id| {
                let subject = berth_tls::peer_subject(id as u64, loopback());
                Pair::issued(&ca, &subject, &pki.join(format!("peer-{id}")))
            })
            .collect::<Result<_>>()?,
        scheduler: Pair::issued(&ca, &user("system:kube-scheduler", &[]), &pki.join("scheduler"))?,
        controller_manager: Pair::issued(
            &ca,
            &user("system:kube-controller-manager", &[]),
            &pki.join("controller-manager"),
        )?,
        nodes: (1..=nodes)
            .map(|n| {
                let subject = node_subject(&format!("node-{n}"), loopback());
                Pair::issued(&ca, &subject, &pki.join(format!("node-{n}")))
            })
            .collect::<Result<_>>()?,
        admin: Pair::issued(&ca, &user("berth-admin", &["system:masters"]), &pki.join("admin"))?,
    })
}

impl ClusterPki {
    /// The administrator's credentials, for `berth up` itself and the
    /// berth config it records.
    pub fn admin_auth(&self) -> Auth {
        Auth {
            certificate_authority: Some(self.ca.clone()),
            client_certificate: Some(self.admin.cert.clone()),
            client_key: Some(self.admin.key.clone()),
            token: None,
        }
    }

    pub fn admin_credentials(&self) -> Credentials {
        Credentials {
            client_certificate: Some(self.admin.cert.clone()),
            client_key: Some(self.admin.key.clone()),
            token: None,
        }
    }

    /// A peer's `--tls-cert-file ... --client-ca-file ...`.
    pub fn peer_flags(&self, index: usize) -> Vec<String> {
        let pair = &self.peers[index];
        [
            "--tls-cert-file",
            &pair.cert.to_string_lossy(),
            "--tls-private-key-file",
            &pair.key.to_string_lossy(),
            "--client-ca-file",
            &self.ca.to_string_lossy(),
        ]
        .map(String::from)
        .to_vec()
    }

    /// A node agent's client credentials and its stream server's
    /// certificate.
    pub fn node_flags(&self, index: usize) -> Vec<String> {
        let pair = &self.nodes[index];
        let mut flags = pair.client_flags(&self.ca);
        flags.extend(
            [
                "--tls-cert-file",
                &pair.cert.to_string_lossy(),
                "--tls-private-key-file",
                &pair.key.to_string_lossy(),
            ]
            .map(String::from),
        );
        flags
    }

    /// A kubeconfig with a context per peer (`kubectl --context peer-2`),
    /// all as the administrator.
    pub fn kubeconfig(&self, https: &[String]) -> String {
        let mut text = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
        for (i, addr) in https.iter().enumerate() {
            text += &format!(
                "- name: berth-peer-{}\n  cluster:\n    server: https://{addr}\n    \
                 certificate-authority: {}\n",
                i + 1,
                self.ca.display()
            );
        }
        text += &format!(
            "users:\n- name: berth-admin\n  user:\n    client-certificate: {}\n    \
             client-key: {}\ncontexts:\n",
            self.admin.cert.display(),
            self.admin.key.display()
        );
        for i in 1..=https.len() {
            text += &format!(
                "- name: peer-{i}\n  context:\n    cluster: berth-peer-{i}\n    user: berth-admin\n"
            );
        }
        text += "current-context: peer-1\n";
        text
    }
}
