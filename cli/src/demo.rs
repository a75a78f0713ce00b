//! `berth up --demo`: a Deployment of three busybox web servers on the
//! local cluster, a request answered by one of them, then the Raft leader
//! killed — the cluster elects another while the Deployment stays up — and
//! brought back.

use anyhow::{bail, Context, Result};
use berth_client::{Api, Client, ListParams};
use berth_proto::apps_v1::{Deployment, DeploymentSpec};
use berth_proto::core_v1::{Container, Pod, PodSpec, PodTemplateSpec};
use berth_proto::meta_v1::{LabelSelector, ObjectMeta};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const NAME: &str = "demo";
const REPLICAS: i32 = 3;

/// The Deployment: busybox's httpd serving a page that names its pod.
fn deployment(image: &str) -> Deployment {
    let labels: BTreeMap<String, String> = [("app".to_string(), NAME.to_string())].into();
    let script = "mkdir -p /www && echo \"hello from $(hostname)\" > /www/index.html && exec httpd -f -p 8080 -h /www";
    Deployment {
        metadata: Some(ObjectMeta {
            name: NAME.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(DeploymentSpec {
            replicas: Some(REPLICAS),
            selector: Some(LabelSelector { match_labels: labels.clone(), ..Default::default() }),
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta { labels, ..Default::default() }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "web".into(),
                        image: image.into(),
                        command: vec!["sh".into(), "-c".into(), script.into()],
                        ..Default::default()
                    }],
                    termination_grace_period_seconds: Some(2),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates (or finds) the Deployment and waits until it is available.
pub async fn run(client: &Client, dir: &Path) -> Result<()> {
    let image_dir = dir.join("images").join("busybox");
    if !image_dir.join("index.json").exists() {
        berth_kubelet::image::busybox_layout(Path::new("/bin/busybox"), &image_dir, "busybox")
            .context("build the demo image from /bin/busybox (Debian package busybox-static)")?;
    }
    let image = format!("oci:{}:busybox", image_dir.display());
    let deployments = Api::<Deployment>::namespaced(client, "default");
    if deployments.get_opt(NAME).await?.is_none() {
        deployments.create(&deployment(&image)).await?;
        println!("demo: created Deployment {NAME} ({REPLICAS} busybox web servers)");
    }
    wait_available(&deployments).await?;
    let pods = running_pods(client).await?;
    for (name, node, ip) in &pods {
        println!("demo:   pod {name} on {node} at {ip}");
    }
    let (_, _, ip) = pods.first().context("no running demo pod")?;
    let answer = http_get(&format!("{ip}:8080"))?;
    println!("demo: GET http://{ip}:8080/ -> {}", answer.trim());
    Ok(())
}

async fn wait_available(deployments: &Api<Deployment>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut shown = -1;
    loop {
        let status = deployments.get(NAME).await?.status.unwrap_or_default();
        if status.available_replicas != shown {
            shown = status.available_replicas;
            println!("demo: {}/{REPLICAS} replicas available", status.available_replicas);
        }
        if status.available_replicas >= REPLICAS {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the demo Deployment was not available within 2 minutes; see the logs under logs/"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// (name, node, IP) of each running demo pod.
async fn running_pods(client: &Client) -> Result<Vec<(String, String, String)>> {
    let params = ListParams { label_selector: format!("app={NAME}"), ..Default::default() };
    let pods = Api::<Pod>::namespaced(client, "default").list(&params).await?.items;
    Ok(pods
        .into_iter()
        .filter(|p| p.status.as_ref().is_some_and(|s| s.phase == "Running" && !s.pod_ip.is_empty()))
        .map(|p| {
            let name = p.metadata.unwrap_or_default().name;
            let node = p.spec.unwrap_or_default().node_name;
            (name, node, p.status.unwrap_or_default().pod_ip)
        })
        .collect())
}

/// A plain HTTP/1.0 GET of `/`; the body.
fn http_get(addr: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The server may still be starting in a pod that just became Running.
        let attempt = (|| -> std::io::Result<String> {
            let mut stream = std::net::TcpStream::connect(addr)?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or(response))
        })();
        match attempt {
            Ok(body) => return Ok(body),
            Err(e) if Instant::now() > deadline => bail!("no answer from {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// After the leader was killed: the Deployment still answers.
pub async fn still_available(client: &Client) -> Result<()> {
    let deployments = Api::<Deployment>::namespaced(client, "default");
    wait_available(&deployments).await?;
    let pods = running_pods(client).await?;
    let (_, _, ip) = pods.last().context("no running demo pod")?;
    let answer = http_get(&format!("{ip}:8080"))?;
    println!("demo: the Deployment stayed available; GET http://{ip}:8080/ -> {}", answer.trim());
    Ok(())
}
