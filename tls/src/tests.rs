use super::*;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn user(name: &str, groups: &[&str]) -> Subject {
    Subject {
        common_name: name.into(),
        organizations: groups.iter().map(|g| g.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn a_saved_ca_loads_and_issues_certificates_it_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::load_or_create(dir.path(), "test").unwrap();
    let again = ClusterCa::load_or_create(dir.path(), "test").unwrap();
    assert_eq!(ca.cert_pem(), again.cert_pem(), "the second call loads, not creates");
    let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE)).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);

    let alice = again.issue(&user("alice", &["dev", "ops"])).unwrap();
    let trust = Trust::from_pem(ca.cert_pem()).unwrap();
    trust.verify_client(&alice.cert_pem).unwrap();
    let other = ClusterCa::create("other").unwrap().issue(&user("mallory", &[])).unwrap();
    assert!(trust.verify_client(&other.cert_pem).is_err());
}

#[test]
fn a_ca_key_that_is_not_the_certificates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    ClusterCa::create("a").unwrap().save(dir.path()).unwrap();
    let other = tempfile::tempdir().unwrap();
    ClusterCa::create("b").unwrap().save(other.path()).unwrap();
    std::fs::copy(other.path().join(CA_KEY_FILE), dir.path().join(CA_KEY_FILE)).unwrap();
    let err = ClusterCa::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("does not belong"), "{err}");
}

#[test]
fn garbage_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("x.crt");
    std::fs::write(&cert, "not pem").unwrap();
    let err = Trust::load(&cert).unwrap_err().to_string();
    assert!(err.contains("x.crt") && err.contains("no CERTIFICATE"), "{err}");
    let missing = Credential::load(&dir.path().join("none.crt"), &cert).unwrap_err();
    assert!(missing.to_string().contains("none.crt"), "{missing}");
}

#[test]
fn subjects_read_back_as_kubernetes_reads_them() {
    let ca = ClusterCa::create("test").unwrap();
    let peer = ca.issue(&peer_subject(3, vec!["127.0.0.1".into(), "localhost".into()])).unwrap();
    let der = crate::pem::certificates(&peer.cert_pem, std::path::Path::new("x")).unwrap();
    let identity = Identity::from_der(&der[0]).unwrap();
    assert_eq!(identity.common_name, "system:peer:3");
    assert_eq!(identity.organizations, [PEERS_GROUP]);
    assert_eq!(identity.peer_id(), Some(3));
    let alice = Identity { common_name: "alice".into(), organizations: vec![] };
    assert_eq!(alice.peer_id(), None);
}

#[test]
fn endpoints_follow_the_tls_setup() {
    let ca = ClusterCa::create("test").unwrap();
    let tls = ClientTls::new(Trust::from_pem(ca.cert_pem()).unwrap(), None);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = rt.enter();
    assert_eq!(endpoint("127.0.0.1:1", None).unwrap().uri().scheme_str(), Some("http"));
    assert_eq!(endpoint("127.0.0.1:1", Some(&tls)).unwrap().uri().scheme_str(), Some("https"));
    assert!(endpoint("http://127.0.0.1:1", Some(&tls)).is_err());
    assert!(endpoint("https://127.0.0.1:1", None).is_err());
    assert!(endpoint("ftp://x", None).is_err());
}

#[test]
fn loopback_addresses() {
    for yes in ["127.0.0.1:2379", "localhost:1", "[::1]:80", "127.0.0.5"] {
        assert!(is_loopback(yes), "{yes}");
    }
    for no in ["10.0.0.1:2379", "0.0.0.0:1", "example.com:443", "[::]:1"] {
        assert!(!is_loopback(no), "{no}");
    }
}

/// A server on loopback with the peer certificate of `ca`, answering each
/// connection with the client identity it saw.
async fn echo_identity(ca: &ClusterCa) -> std::net::SocketAddr {
    let server = ca.issue(&peer_subject(1, vec!["127.0.0.1".into()])).unwrap();
    let trust = Trust::from_pem(ca.cert_pem()).unwrap();
    let tls = ServerTls::new(&server, &trust, Protocol::Http1).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut acceptor = Acceptor::new(listener, Some(tls));
    let addr = acceptor.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let mut connection = acceptor.accept().await;
            let name = connection.info().client.as_ref().map(|c| c.common_name.clone());
            let reply = name.unwrap_or_else(|| "-".into());
            let _ = connection.write_all(reply.as_bytes()).await;
            let _ = connection.shutdown().await;
        }
    });
    addr
}

async fn dial(addr: std::net::SocketAddr, tls: &ClientTls) -> std::io::Result<String> {
    let connector = tokio_rustls::TlsConnector::from(tls.rustls().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = connector.connect(name, tcp).await?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await?;
    Ok(reply)
}

#[tokio::test]
async fn the_server_sees_verified_client_identities_only() {
    let ca = ClusterCa::create("test").unwrap();
    let addr = echo_identity(&ca).await;
    let trust = Trust::from_pem(ca.cert_pem()).unwrap();

    let alice = ca.issue(&user("alice", &["dev"])).unwrap();
    assert_eq!(dial(addr, &ClientTls::new(trust.clone(), Some(alice))).await.unwrap(), "alice");
    assert_eq!(dial(addr, &ClientTls::new(trust.clone(), None)).await.unwrap(), "-");

    // A certificate from another CA: the handshake fails, nothing is read.
    let mallory = ClusterCa::create("other").unwrap().issue(&user("mallory", &[])).unwrap();
    let refused = dial(addr, &ClientTls::new(trust, Some(mallory))).await;
    assert!(!matches!(refused.as_deref(), Ok("mallory")), "{refused:?}");

    // A client that trusts another CA refuses the server.
    let stranger = Trust::from_pem(ClusterCa::create("other").unwrap().cert_pem()).unwrap();
    assert!(dial(addr, &ClientTls::new(stranger, None)).await.is_err());
}
