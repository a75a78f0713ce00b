//! The test image every node of a local cluster has ready: busybox, built
//! from this host's /bin/busybox into an OCI layout and pulled into each
//! node's image store before the node's agent starts (the agent then holds
//! the store), with a line per layer saying how far the pull got.

use anyhow::{Context, Result};
use berth_kubelet::image::{
    busybox_layout, human_bytes, pull_summary, ImageSource, ImageStore, LayerPhase, ProgressFn,
    PullEvent, PullOptions, Reference, RegistryConfig,
};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What pods call the test image. Its tag is not `latest`, so the default
/// pull policy (IfNotPresent) takes the copy on the node.
pub const TEST_IMAGE: &str = "berth.local/busybox:test";
const BUSYBOX: &str = "/bin/busybox";
/// The layout's tag; `berth up --demo` runs the same layout.
const LAYOUT_TAG: &str = "busybox";

/// Makes the test image ready on nodes 1..=`nodes`, whose stores are under
/// `dir`/node-N/images. False (having said why) when this host has no
/// busybox to build it from.
pub async fn make_ready(dir: &Path, nodes: usize) -> Result<bool> {
    let busybox = Path::new(BUSYBOX);
    if nodes == 0 {
        return Ok(false);
    }
    if !busybox.exists() {
        println!("berth: no test image: {BUSYBOX} is missing (Debian package busybox-static)");
        return Ok(false);
    }
    let layout = dir.join("images").join("busybox");
    if !layout.join("index.json").exists() {
        busybox_layout(busybox, &layout, LAYOUT_TAG)
            .with_context(|| format!("build the test image from {BUSYBOX}"))?;
    }
    let name: Reference = TEST_IMAGE.parse().context("the test image's name")?;
    let source = ImageSource::OciLayout { path: layout, tag: Some(LAYOUT_TAG.into()) };
    for n in 1..=nodes {
        let node = format!("node-{n}");
        let root = dir.join(&node).join("images");
        let store = ImageStore::open(&root, RegistryConfig::default())
            .with_context(|| format!("open {node}'s image store"))?;
        let started = Instant::now();
        let image = pull(&store, &source, name.clone(), &node)
            .await
            .with_context(|| format!("make {TEST_IMAGE} ready on {node}"))?;
        let summary = pull_summary(Some(image.layers.len()), image.size, started.elapsed());
        println!("berth: {node} has {TEST_IMAGE} ({summary})");
    }
    Ok(true)
}

/// Pulls `source` into `store` as `name`, drawing its layers' progress.
async fn pull(
    store: &ImageStore,
    source: &ImageSource,
    name: Reference,
    node: &str,
) -> Result<berth_kubelet::image::Image> {
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel::<PullEvent>();
    let progress: ProgressFn = Arc::new(move |event: PullEvent| {
        let _ = tx.send(event);
    });
    let options = PullOptions { name: Some(name), progress: Some(progress) };
    // The options (and with them the sender) go when the pull ends, which
    // ends the drawing.
    let pulling = async move { store.pull(source, &options).await };
    let mut lines = LayerLines::new(node);
    let drawing = async {
        while let Some(event) = events.recv().await {
            lines.show(event);
        }
    };
    let (pulled, ()) = tokio::join!(pulling, drawing);
    Ok(pulled?)
}

/// One line per layer: redrawn in place on a terminal; elsewhere a plain
/// line when a layer changes phase, and while it downloads at most one
/// every few seconds.
struct LayerLines {
    node: String,
    tty: bool,
    /// Each layer's latest event and when its last plain line was printed.
    layers: Vec<(PullEvent, Instant)>,
    /// Lines drawn on the terminal so far.
    drawn: usize,
}

const PLAIN_EVERY: Duration = Duration::from_secs(5);

impl LayerLines {
    fn new(node: &str) -> LayerLines {
        use std::io::IsTerminal;
        LayerLines {
            node: node.to_string(),
            tty: std::io::stdout().is_terminal(),
            layers: Vec::new(),
            drawn: 0,
        }
    }

    fn show(&mut self, event: PullEvent) {
        let now = Instant::now();
        let (i, plain) = match self.layers.iter().position(|(e, _)| e.layer == event.layer) {
            Some(i) => {
                let (last, printed) = &self.layers[i];
                (i, last.phase != event.phase || now.duration_since(*printed) >= PLAIN_EVERY)
            }
            None => {
                self.layers.push((event.clone(), now));
                (self.layers.len() - 1, true)
            }
        };
        self.layers[i].0 = event;
        let mut out = std::io::stdout().lock();
        if self.tty {
            // Back to the first layer's line, then every line again.
            if self.drawn > 0 {
                let _ = write!(out, "\x1b[{}A", self.drawn);
            }
            for (e, _) in &self.layers {
                let _ = writeln!(out, "\r\x1b[2K{}", line(&self.node, e));
            }
            self.drawn = self.layers.len();
        } else if plain {
            self.layers[i].1 = now;
            let _ = writeln!(out, "{}", line(&self.node, &self.layers[i].0));
        }
        let _ = out.flush();
    }
}

/// "node-1 layer 0123456789ab: downloading 1.2 MB / 2.0 MB".
fn line(node: &str, e: &PullEvent) -> String {
    let hex = e.layer.hex();
    let short = &hex[..hex.len().min(12)];
    let state = match e.phase {
        LayerPhase::Downloading => {
            format!("downloading {} / {}", human_bytes(e.done), human_bytes(e.total))
        }
        LayerPhase::Unpacking => format!("unpacking {}", human_bytes(e.total)),
        LayerPhase::Unpacked => format!("done, {}", human_bytes(e.total)),
        LayerPhase::Present => format!("already present, {}", human_bytes(e.total)),
    };
    format!("berth: {node} layer {short}: {state}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_line_names_its_digest_and_bytes() {
        let layer = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let event =
            PullEvent { layer, phase: LayerPhase::Downloading, done: 1_200_000, total: 2e6 as u64 };
        assert_eq!(
            line("node-1", &event),
            "berth: node-1 layer abababababab: downloading 1.2 MB / 2.0 MB"
        );
    }
}
